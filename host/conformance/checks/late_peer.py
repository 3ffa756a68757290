"""Checks that SetupAccount survives a peer that cannot be reached yet.

At a host's start-up, the peer's host or its adaptor is often not up yet: Engine.SendData then
answers FAILED_PRECONDITION ("... is not serving (T00)") or UNAVAILABLE. Both are transient. An
adaptor must not fail for good on them: SetupAccount answers OK (and the adaptor finishes what
it needed from the peer later) or UNAVAILABLE (the host calls SetupAccount again, with backoff).
The suite plays that peer: unreachable while SetupAccount runs and for a few more of the
adaptor's attempts, then reachable. For the simulated ledger's adaptors it then checks that the
ledger-account exchange completes on its own and that a settlement reaches the peer's account.
"""

from __future__ import annotations

import asyncio
import time
from typing import Final

from host.conformance.checks.registry import LATE, Code, check
from host.conformance.report import CheckFailed
from host.conformance.session import Session
from host.conformance.world import SIMLEDGER, peer_ledger_account
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

#: The peer stays unreachable until the adaptor has been refused this often (or for the event
#: timeout): the first refusal is FAILED_PRECONDITION, the next ones UNAVAILABLE.
REFUSALS: Final = 2
#: What the suite settles to the late peer once it is reachable, in ledger units.
LATE_PAYMENT: Final = 7
#: The pause before calling SetupAccount again after UNAVAILABLE (the host's first backoff).
RETRY_PAUSE: Final = 0.2


async def _set_up_until_ok(session: Session) -> str:
    """SetupAccount(LATE) as the host calls it: again after UNAVAILABLE, until the deadline; how
    the first call went."""
    request = adaptor_pb2.SetupAccountRequest(account_id=LATE)
    deadline = time.monotonic() + session.options.event_timeout
    first = ""
    while True:
        code, details = await session.status("SetupAccount", request)
        first = first or code.name
        if code == Code.OK:
            session.set_up_account(LATE)
            return first
        if code != Code.UNAVAILABLE:
            raise CheckFailed(
                f"SetupAccount({LATE!r}) while its peer is unreachable answered {code.name}: "
                f"{details} (OK or UNAVAILABLE expected: the peer's refusal is transient)"
            )
        if time.monotonic() > deadline:
            raise CheckFailed(
                f"SetupAccount({LATE!r}) still answered UNAVAILABLE "
                f"{session.options.event_timeout:g} s after its peer became reachable: {details}"
            )
        # The host calls again later; by then the peer may be up.
        session.world.peers.unreachable.discard(LATE)
        await asyncio.sleep(RETRY_PAUSE)


@check(
    "setup_account.peer_unreachable",
    "SetupAccount survives a peer that answers Engine.SendData FAILED_PRECONDITION, then "
    "UNAVAILABLE, at first; the exchange completes once the peer is reachable",
)
async def setup_peer_unreachable(session: Session) -> str:
    peers = session.world.peers
    peers.unreachable.add(LATE)
    try:
        first = await _set_up_until_ok(session)
        sent = "data" in session.capabilities
        if sent:

            async def refused_enough() -> bool:
                return peers.refused.count(LATE) >= REFUSALS

            # Keep the peer away for a few more attempts (if the adaptor makes any).
            await session.poll(refused_enough, session.options.event_timeout / 2)
    finally:
        peers.unreachable.discard(LATE)
    refusals = peers.refused.count(LATE)
    seen = f"SetupAccount answered {first} with the peer unreachable ({refusals} SendData refused)"
    if session.info.ledger != SIMLEDGER or not sent:
        if session.exited():
            raise CheckFailed(f"{seen}; then {session.exited()}")
        return seen + "; the adaptor still runs"
    if refusals == 0:
        raise CheckFailed(f"{seen}: the adaptor never tried to reach its peer")

    async def exchanged() -> bool:
        return LATE in peers.answered

    if not await session.poll(exchanged, session.options.event_timeout):
        raise CheckFailed(
            f"{seen}; once the peer was reachable, the adaptor did not complete the "
            f"ledger-account exchange within {session.options.event_timeout:g} s (it must retry "
            "on its own: the host calls SetupAccount once it answered OK)"
        )
    seen += "; the exchange completed once the peer was reachable"
    if not session.on_suite_ledger or "send_money" not in session.capabilities:
        return seen
    before = (await session.balances(LATE)).peer
    await session.call(
        "SendMoney",
        adaptor_pb2.SendMoneyRequest(
            account_id=LATE, amount=session.amount(LATE_PAYMENT), idempotency_key=session.new_key()
        ),
    )
    after = (await session.balances(LATE)).peer
    assert before is not None and after is not None
    if after - before != LATE_PAYMENT:
        raise CheckFailed(
            f"{seen}; SendMoney({LATE_PAYMENT}) then moved {after - before} into the late peer's "
            f"ledger account {peer_ledger_account(LATE)!r}"
        )
    return seen + f"; SendMoney paid {LATE_PAYMENT} to {peer_ledger_account(LATE)!r}"
