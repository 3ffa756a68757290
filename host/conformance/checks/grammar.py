"""Checks of the contract's grammar of keys and ids (sdk/contract.py, docs/protocol.md "Ids,
keys and amounts"): what must be taken, and what must be refused with INVALID_ARGUMENT.
"""

from __future__ import annotations

from host.conformance.checks.outgoing import _pay, _request
from host.conformance.checks.registry import PEER, Code, check, expect, fail_if
from host.conformance.session import Session
from sdk import contract
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2


@check(
    "send_money.key_grammar",
    "SendMoney takes any key of 1 to 128 printable ASCII characters, space included, and "
    "refuses longer ones and other characters (INVALID_ARGUMENT)",
    requires=("send_money",),
)
async def send_key_grammar(session: Session) -> str:
    await session.ensure_account(PEER)
    longest = f"{session.new_key()} ~ !".ljust(128, "~")
    assert contract.is_idempotency_key(longest)
    await _pay(session, _request(session, 1, key=longest))
    problems: list[str] = []
    for what, key in (
        ("a key of 129 characters", longest + "~"),
        ("a key with a newline", f"{session.new_key()}\n"),
        ("a key with DEL (0x7F)", f"{session.new_key()}\x7f"),
        ("a key with a non-ASCII letter", f"{session.new_key()}é"),
    ):
        expect(
            await session.status("SendMoney", _request(session, 1, key=key)),
            Code.INVALID_ARGUMENT,
            what,
            problems,
        )
    fail_if(problems)
    return "a 128-character key with spaces paid; 4 malformed keys refused"


@check(
    "receive_money.empty_id",
    "ReceiveMoney with an empty settlement id: INVALID_ARGUMENT (a malformed request, not an "
    "unknown id)",
    requires=("receive_money",),
)
async def receive_empty_id(session: Session) -> str:
    problems: list[str] = []
    got = await session.status("ReceiveMoney", adaptor_pb2.ReceiveMoneyRequest(settlement_id=""))
    expect(got, Code.INVALID_ARGUMENT, 'ReceiveMoney with settlement_id ""', problems)
    fail_if(problems)
    return "INVALID_ARGUMENT"
