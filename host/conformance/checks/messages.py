"""Checks of ReceiveData: a message from the peer's adaptor gets a reply; garbage is refused.

The one message the suite knows is the simledger adaptors' ledger-account exchange (the
PeerRequest and PeerReply of proto/ilphost/simledger/v1/peer_message.proto); the other checks
of it are in host/conformance/checks/peer_messages.py.
"""

from __future__ import annotations

from typing import Final

from host.conformance.checks.registry import PEER, Code, check, expect, fail_if
from host.conformance.report import CheckFailed, CheckSkipped
from host.conformance.session import Session
from host.conformance.world import ADAPTOR_LEDGER_ACCOUNT, peer_ledger_account
from host.simledger import peer_messages as simledger
from sdk import contract
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

GARBAGE: Final = b"\x00\xffconformance: not a message of any adaptor\xfe"


@check(
    "receive_data.reply",
    "ReceiveData of a simledger PeerRequest gets a PeerReply naming the adaptor's ledger account",
    requires=("data",),
)
async def receive_data_reply(session: Session) -> str:
    if not session.on_suite_ledger:
        raise CheckSkipped(
            "the suite knows one message, the simledger adaptors' ledger-account exchange, and "
            f'this adaptor is not on the suite\'s ledger (GetInfo.ledger "{session.info.ledger}")'
        )
    await session.ensure_account(PEER)
    message = simledger.ledger_account_request(peer_ledger_account(PEER))
    reply: adaptor_pb2.ReceiveDataResponse = await session.call(
        "ReceiveData", adaptor_pb2.ReceiveDataRequest(account_id=PEER, data=message)
    )
    if len(reply.data) > contract.MAX_DATA_BYTES:
        raise CheckFailed(f"the reply has {len(reply.data)} bytes, over {contract.MAX_DATA_BYTES}")
    try:
        named = simledger.parse_ledger_account_reply(reply.data)
    except simledger.PeerMessageError as exc:
        raise CheckFailed(
            f"the reply {reply.data[:80]!r} is not a ledger-account PeerReply: {exc}"
        ) from exc
    if named != ADAPTOR_LEDGER_ACCOUNT:
        raise CheckFailed(
            f"the reply names ledger account {named!r}; the adaptor's is {ADAPTOR_LEDGER_ACCOUNT!r}"
        )
    return f"the reply names the adaptor's ledger account {named!r}"


@check(
    "receive_data.garbage",
    "ReceiveData of bytes no adaptor can parse: INVALID_ARGUMENT",
    requires=("data",),
)
async def receive_data_garbage(session: Session) -> str:
    await session.ensure_account(PEER)
    problems: list[str] = []
    got = await session.status(
        "ReceiveData", adaptor_pb2.ReceiveDataRequest(account_id=PEER, data=GARBAGE)
    )
    expect(got, Code.INVALID_ARGUMENT, "ReceiveData of garbage", problems)
    fail_if(problems)
    return "INVALID_ARGUMENT"
