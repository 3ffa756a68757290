"""Checks of incoming settlements: reported on WatchEvents, re-delivered on every new stream
until ReceiveMoney, not after; ReceiveMoney idempotent and strict about ids. Last, that every
new stream starts with the current state of each connection (after the others: reading a
stream may count as a delivery to an adaptor that delivers only once).

On its own ledger the suite pays the adaptor (from the peer's ledger account, which the adaptor
learned in the ledger-account exchange); elsewhere it uses the settlements a new stream
delivers at once, those the adaptor already has.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import grpc

from host.conformance.checks.registry import PEER, Code, check, expect, fail_if
from host.conformance.report import CheckFailed, CheckSkipped
from host.conformance.session import Session
from host.conformance.world import ADAPTOR_LEDGER_ACCOUNT, SIMLEDGER, peer_ledger_account
from sdk import requests
from sdk.errors import InvalidRequest
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

#: What the suite pays the adaptor on its ledger: the settlement it watches, then a later one
#: that marks the end of a re-delivery.
INCOMING_VALUES: Final = (150, 250)


def _is_payment(value: int) -> Callable[[adaptor_pb2.IncomingSettlement], bool]:
    def wanted(settlement: adaptor_pb2.IncomingSettlement) -> bool:
        return settlement.account_id == PEER and settlement.amount.value == str(value)

    return wanted


def _is_id(settlement_id: str) -> Callable[[adaptor_pb2.IncomingSettlement], bool]:
    return lambda settlement: settlement.settlement_id == settlement_id


async def _pay_adaptor(session: Session, index: int) -> str:
    """Pay the adaptor INCOMING_VALUES[index] on the suite's ledger from PEER's peer; what
    was done, in words."""
    ledger = session.world.ledger
    assert ledger is not None
    await session.ensure_account(PEER)  # the exchange tells the adaptor who the payer is
    transfer_id = f"conformance-incoming-{index + 1}"
    payer = peer_ledger_account(PEER)
    await ledger.pay(transfer_id, payer, ADAPTOR_LEDGER_ACCOUNT, INCOMING_VALUES[index])
    return (
        f"paid {INCOMING_VALUES[index]} from {payer!r} to {ADAPTOR_LEDGER_ACCOUNT!r} "
        f"(ledger transfer {transfer_id!r})"
    )


async def _incoming(session: Session) -> list[adaptor_pb2.IncomingSettlement]:
    """The incoming settlements the receive checks share, found once per run.

    On the suite's ledger the suite pays the adaptor and waits for the settlement on a new
    stream. Elsewhere it takes what a new stream delivers at once: settlements the adaptor
    already has (the memory adaptors: ILP_ADAPTOR_INCOMING). A failure is reported by the
    first check that looks; the others skip.
    """
    if session.incoming is not None:
        return session.incoming
    if session.incoming_problem:
        raise CheckSkipped(f"no incoming settlement to test with: {session.incoming_problem}")
    options = session.options
    try:
        if session.on_suite_ledger:
            paid = await _pay_adaptor(session, 0)
            async with session.events() as stream:
                found, _ = await stream.first(
                    _is_payment(INCOMING_VALUES[0]), options.event_timeout
                )
            if found is None:
                raise CheckFailed(
                    f"{paid}; WatchEvents did not report it within {options.event_timeout:g} s"
                )
            session.incoming = [found]
        else:
            async with session.events() as stream:
                collected = await stream.collect(options.incoming_wait, options.quiet_period)
            if not collected:
                raise CheckSkipped(
                    "the suite pays only on its own simulated ledger (GetInfo.ledger "
                    f'"{SIMLEDGER}"), and a new WatchEvents stream delivered no settlement within '
                    f"{options.incoming_wait:g} s; configure the adaptor to have some (the memory "
                    "adaptors: --env ILP_ADAPTOR_INCOMING=peer:500,peer:250)"
                )
            session.incoming = collected
    except (CheckFailed, CheckSkipped) as exc:
        session.incoming_problem = str(exc)
        raise
    return session.incoming


def _describe(settlement: adaptor_pb2.IncomingSettlement) -> str:
    return (
        f"{settlement.settlement_id!r}: {settlement.amount.value} at scale "
        f"{settlement.amount.scale} from {settlement.account_id!r}"
    )


@check(
    "watch_events.incoming",
    "a payment to the adaptor's ledger account is reported on WatchEvents, well-formed",
    requires=("receive_money",),
)
async def watch_incoming(session: Session) -> str:
    settlements = await _incoming(session)
    problems: list[str] = []
    for settlement in settlements:
        name = settlement.settlement_id or "a settlement"
        if not settlement.settlement_id:
            problems.append("a settlement has an empty settlement_id")
        # The rules of a SendMoney request hold for what the ledger reports too.
        try:
            requests.check_account_id(settlement.account_id)
        except InvalidRequest as exc:
            problems.append(f"{name}: {exc}")
        try:
            requests.check_payment(settlement.amount, session.info.asset_scale)
        except InvalidRequest as exc:
            problems.append(f"{name}: {exc}")
    if len({s.settlement_id for s in settlements}) != len(settlements):
        problems.append("one stream delivered a settlement id twice")
    fail_if(problems)
    more = f" and {len(settlements) - 1} more" if len(settlements) > 1 else ""
    return f"reported {_describe(settlements[0])}{more}"


@check(
    "watch_events.redelivery",
    "a new WatchEvents stream re-delivers an unacknowledged settlement, and not after ReceiveMoney",
    requires=("receive_money",),
)
async def watch_redelivery(session: Session) -> str:
    settlements = await _incoming(session)
    target = settlements[0]
    within = session.options.event_timeout
    async with session.events() as stream:
        again, _ = await stream.first(_is_id(target.settlement_id), within)
    if again is None:
        raise CheckFailed(
            f"a new WatchEvents stream did not re-deliver the unacknowledged settlement "
            f"{target.settlement_id!r} within {within:g} s"
        )
    if again != target:
        raise CheckFailed(f"re-delivered {_describe(again)}, first reported as {_describe(target)}")
    await session.call(
        "ReceiveMoney", adaptor_pb2.ReceiveMoneyRequest(settlement_id=target.settlement_id)
    )
    # Ledger order makes a later settlement mark the end of the re-delivery: the acknowledged
    # one must not come before it. Without one, watch for the quiet period.
    marker: Callable[[adaptor_pb2.IncomingSettlement], bool] | None = None
    if session.on_suite_ledger:
        await _pay_adaptor(session, 1)
        marker = _is_payment(INCOMING_VALUES[1])
    elif len(settlements) > 1:
        marker = _is_id(settlements[1].settlement_id)
    async with session.events() as stream:
        if marker is None:
            seen = await stream.collect(session.options.quiet_period, session.options.quiet_period)
            how = (
                f"(watched {session.options.quiet_period:g} s: no later settlement to mark the end)"
            )
        else:
            found, seen = await stream.first(marker, within)
            if found is None:
                raise CheckFailed(
                    f"after ReceiveMoney({target.settlement_id!r}), a new stream did not "
                    f"deliver the later unacknowledged settlement within {within:g} s"
                )
            how = "(a later settlement came first)"
    if any(s.settlement_id == target.settlement_id for s in seen):
        raise CheckFailed(
            f"{target.settlement_id!r} was re-delivered after ReceiveMoney acknowledged it"
        )
    return f"re-delivered {target.settlement_id!r} until ReceiveMoney, not after {how}"


@check(
    "receive_money.idempotent",
    "ReceiveMoney twice for one settlement: OK both times",
    requires=("receive_money",),
)
async def receive_idempotent(session: Session) -> str:
    settlement_id = (await _incoming(session))[0].settlement_id
    request = adaptor_pb2.ReceiveMoneyRequest(settlement_id=settlement_id)
    for attempt in ("first", "second"):
        code, details = await session.status("ReceiveMoney", request)
        if code != Code.OK:
            raise CheckFailed(
                f"the {attempt} ReceiveMoney({settlement_id!r}) answered {code.name}: {details}"
            )
    return f"ReceiveMoney({settlement_id!r}) twice: OK"


@check(
    "receive_money.unknown",
    "ReceiveMoney for an id never reported: NOT_FOUND",
    requires=("receive_money",),
)
async def receive_unknown(session: Session) -> str:
    settlement_id = f"{session.new_key()}-never-reported"
    problems: list[str] = []
    got = await session.status(
        "ReceiveMoney", adaptor_pb2.ReceiveMoneyRequest(settlement_id=settlement_id)
    )
    expect(got, Code.NOT_FOUND, f"ReceiveMoney({settlement_id!r})", problems)
    fail_if(problems)
    return "NOT_FOUND"


@check(
    "watch_events.connections_first",
    "WatchEvents starts with the current state of every connection, before anything else",
)
async def watch_connections_first(session: Session) -> str:
    """The contract: a new stream first sends each connection's current state (as
    grpc.health.v1 Watch sends the current status first), so that a host needs no Probe that
    a change could slip past."""
    reply: adaptor_pb2.ProbeResponse = await session.call("Probe", adaptor_pb2.ProbeRequest())
    expected = [c.name for c in reply.connections]
    if not expected:
        return "Probe reports no connections: nothing to start with"
    call = session.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
    seen: list[str] = []
    within = session.options.event_timeout
    try:
        async with asyncio.timeout(within):
            async for event in call:
                if event.WhichOneof("event") != "connection_changed":
                    missing = [name for name in expected if name not in seen]
                    raise CheckFailed(
                        f"the stream sent an {event.WhichOneof('event')} before the state of "
                        f"{', '.join(missing)}"
                    )
                seen.append(event.connection_changed.name)
                if all(name in seen for name in expected):
                    break
            else:
                raise CheckFailed(f"the stream ended after the state of only {seen or 'none'}")
    except TimeoutError:
        missing = [name for name in expected if name not in seen]
        raise CheckFailed(
            f"within {within:g} s the stream did not send the state of {', '.join(missing)}"
        ) from None
    except grpc.aio.AioRpcError as exc:
        if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
            raise CheckSkipped("the adaptor does not serve WatchEvents") from exc
        raise CheckFailed(f"WatchEvents failed: {exc.code().name}: {exc.details()}") from exc
    finally:
        call.cancel()
    return f"the stream began with {', '.join(seen)}"
