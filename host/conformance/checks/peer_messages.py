"""Checks of the messages an adaptor exchanges with its peer's adaptor through Engine.SendData.

Which messages a pair of adaptors exchange is their own protocol: the suite can check only the
ones it knows. An adaptor says which those are by the ledger it declares in GetInfo: on the
simulated ledger (``GetInfo.ledger == "simledger"``) they are the PeerRequest and PeerReply of
proto/ilphost/simledger/v1/peer_message.proto, and the suite, playing the peer, checks the
adaptor's request and its refusals. For every other adaptor it checks what the contract says of
any message: SendData only for accounts the adaptor has set up, within the size limit.
"""

from __future__ import annotations

from host.conformance.checks.registry import NEVER, PEER, Code, check, expect, fail_if
from host.conformance.report import CheckFailed, CheckSkipped
from host.conformance.session import Session
from host.conformance.world import ADAPTOR_LEDGER_ACCOUNT, SIMLEDGER, peer_ledger_account
from host.simledger import peer_messages as simledger
from sdk import contract
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.engine.v1 import engine_pb2


def _simledger_family(session: Session) -> None:
    if session.info.ledger != SIMLEDGER:
        raise CheckSkipped(
            "the suite knows the peer messages of the simulated ledger's adaptors only, and "
            f'this adaptor declares GetInfo.ledger "{session.info.ledger}", not "{SIMLEDGER}"'
        )


def _names_us(request: engine_pb2.SendDataRequest) -> bool:
    try:
        return simledger.parse_ledger_account_request(request.data) == ADAPTOR_LEDGER_ACCOUNT
    except simledger.PeerMessageError:
        return False


@check(
    "peer_message.request",
    "SetupAccount sends the peer a simledger PeerRequest naming the adaptor's ledger account",
    requires=("data",),
)
async def peer_message_request(session: Session) -> str:
    _simledger_family(session)
    await session.ensure_account(PEER)
    engine = session.world.engine

    async def sent() -> bool:
        return any(c.account_id == PEER and _names_us(c) for c in engine.calls)

    if not await session.poll(sent, session.options.event_timeout):
        seen = [c.data[:60] for c in engine.calls if c.account_id == PEER]
        raise CheckFailed(
            f"after SetupAccount({PEER!r}) no Engine.SendData for it carried a PeerRequest "
            f"(ledger_account_exchange) naming {ADAPTOR_LEDGER_ACCOUNT!r} within "
            f"{session.options.event_timeout:g} s; sent: {seen or 'nothing'}"
        )
    return f"Engine.SendData({PEER!r}) carried a PeerRequest naming {ADAPTOR_LEDGER_ACCOUNT!r}"


@check(
    "peer_message.refused",
    "ReceiveData refuses a PeerRequest of no known kind or naming the adaptor's own account "
    "(INVALID_ARGUMENT) and one for an account not set up (NOT_FOUND)",
    requires=("data",),
)
async def peer_message_refused(session: Session) -> str:
    _simledger_family(session)
    await session.ensure_account(PEER)
    problems: list[str] = []
    for what, account_id, data, expected in (
        ("a PeerRequest of no kind", PEER, b"", Code.INVALID_ARGUMENT),
        (
            "a PeerRequest of a kind from a newer release (field 2)",
            PEER,
            b"\x12\x03new",
            Code.INVALID_ARGUMENT,
        ),
        (
            "a PeerRequest naming the adaptor's own ledger account",
            PEER,
            simledger.ledger_account_request(ADAPTOR_LEDGER_ACCOUNT),
            Code.INVALID_ARGUMENT,
        ),
        (
            "a PeerRequest with a malformed ledger account",
            PEER,
            simledger.ledger_account_request("not a ledger account"),
            Code.INVALID_ARGUMENT,
        ),
        (
            "a PeerRequest for an account never set up",
            NEVER,
            simledger.ledger_account_request(peer_ledger_account(NEVER)),
            Code.NOT_FOUND,
        ),
    ):
        got = await session.status(
            "ReceiveData", adaptor_pb2.ReceiveDataRequest(account_id=account_id, data=data)
        )
        expect(got, expected, f"ReceiveData of {what}", problems)
    fail_if(problems)
    return "4 unusable PeerRequests: INVALID_ARGUMENT; for an unknown account: NOT_FOUND"


@check(
    "send_data.addressed",
    "every Engine.SendData the adaptor made is for an account it set up, within the size limit",
)
async def send_data_addressed(session: Session) -> str:
    calls = list(session.world.engine.calls)
    known = session.world.peers.accounts
    problems = [
        f"SendData for {c.account_id[:60]!r}, which the suite never set up"
        for c in calls
        if c.account_id not in known
    ]
    problems += [
        f"SendData for {c.account_id!r} carried {len(c.data)} bytes, over {contract.MAX_DATA_BYTES}"
        for c in calls
        if len(c.data) > contract.MAX_DATA_BYTES
    ]
    fail_if(problems)
    if not calls:
        return "the adaptor made no Engine.SendData call"
    return f"{len(calls)} Engine.SendData call(s), each for a set-up account, within the limit"
