"""The route broadcaster's decisions, message by message (no network: the exchange records)."""

from __future__ import annotations

import asyncio
import itertools
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from host.connector import PeerConfig
from host.connector.route_broadcast import MAX_RETRY, RouteBroadcaster, retry_backoff
from host.connector.routing import Route, RoutingTable
from host.ilp import ErrorCode, Fulfill, Prepare, Reject, Reply, ccp
from sdk.backoff import Backoff
from tests.polling import wait_until_async

LATER = datetime.now(UTC) + timedelta(minutes=5)


def peer(peer_id: str, relation: str = "peer", **flags: bool) -> PeerConfig:
    return PeerConfig(
        peer_id,
        f"http://{peer_id}.example/",
        None if relation == "child" else f"test.{peer_id}",
        f"token-in-{peer_id}",
        f"token-out-{peer_id}",
        relation=relation,  # type: ignore[arg-type]
        **flags,
    )


async def no_exchange(peer_id: str, prepare: Prepare, time_limit: float) -> Reply:
    raise AssertionError("nothing is sent in these tests")


def broadcaster(*peers: PeerConfig) -> tuple[RouteBroadcaster, RoutingTable]:
    by_id = {p.id: p for p in peers}
    addresses = {
        p.id: p.child_address("test.me") if p.relation == "child" else str(p.address) for p in peers
    }
    routing = RoutingTable("test.me", addresses, relations={p.id: p.relation for p in peers})
    return RouteBroadcaster(by_id, routing, no_exchange, interval=30), routing


def update(table: uuid.UUID, start: int, end: int, new=(), withdrawn=()) -> Prepare:  # type: ignore[no-untyped-def]
    message = ccp.RouteUpdate(table, end, start, end, 30000, "test.x", tuple(new), tuple(withdrawn))
    return ccp.update_prepare(message, LATER)


def test_updates_are_applied_in_epoch_order_and_loops_dropped() -> None:
    async def run() -> None:
        speaker, routing = broadcaster(peer("bob"), peer("kid", "child"))
        table = uuid.uuid4()
        routes = [
            ccp.CcpRoute("test.carol", ("test.bob", "test.carol")),
            ccp.CcpRoute("test.loop", ("test.bob", "test.me")),  # through us: a loop
            ccp.CcpRoute("test.me.sub", ("test.bob",)),  # under our own address
            ccp.CcpRoute("test", ("test.bob",)),  # a bare scheme
        ]
        assert isinstance(speaker.handle_update("bob", update(table, 0, 3, routes)), Fulfill)
        assert [r.prefix for r in routing.learned("bob")] == ["test.carol"]
        assert routing.resolve("test.carol.x") == Route("test.carol", "bob")
        # A gap (from 5 while we hold 3) is ignored; an old update too.
        gap = update(table, 5, 6, withdrawn=["test.carol"])
        assert isinstance(speaker.handle_update("bob", gap), Fulfill)
        old = update(table, 0, 2, withdrawn=["test.carol"])
        assert isinstance(speaker.handle_update("bob", old), Fulfill)
        assert [r.prefix for r in routing.learned("bob")] == ["test.carol"]
        # In order: the withdrawal takes the route out of use.
        speaker.handle_update("bob", update(table, 3, 4, withdrawn=["test.carol"]))
        assert routing.resolve("test.carol.x") is None
        # A child may only announce under its own address.
        kid = [
            ccp.CcpRoute("test.me.kid.wallet", ("test.me.kid",)),
            ccp.CcpRoute("test.dave", ("test.me.kid",)),
        ]
        speaker.handle_update("kid", update(uuid.uuid4(), 0, 1, kid))
        assert [r.prefix for r in routing.learned("kid")] == ["test.me.kid.wallet"]

    asyncio.run(run())


def test_what_each_peer_is_told() -> None:
    async def run() -> None:
        speaker, routing = broadcaster(peer("bob"), peer("mum", "parent"), peer("kid", "child"))
        routing.set_learned("bob", [])
        speaker.table_changed()
        first = speaker.epoch
        speaker.handle_update(
            "bob",
            update(uuid.uuid4(), 0, 1, [ccp.CcpRoute("test.carol", ("test.bob", "test.carol"))]),
        )
        assert speaker.epoch == first + 1
        control = ccp.RouteControl(ccp.Mode.SYNC, uuid.UUID(int=0), 99)
        for name in ("bob", "mum", "kid"):
            reply = speaker.handle_control(name, ccp.control_prepare(control, LATER))
            assert isinstance(reply, Fulfill)
        told = {
            name: speaker._update_for(name, speaker._senders[name])
            for name in ("bob", "mum", "kid")
        }
        # An unknown table id: everyone is told from epoch 0.
        assert all(u.from_epoch == 0 and u.to_epoch == speaker.epoch for u in told.values())
        new = {name: {r.prefix: r.path for r in u.new_routes} for name, u in told.items()}
        # Not back to bob the route bob gave us; not to our parent a route through a peer.
        assert "test.carol" in told["bob"].withdrawn_routes
        assert "test.carol" in told["mum"].withdrawn_routes
        assert new["kid"]["test.carol"] == ("test.me", "test.bob", "test.carol")
        assert new["kid"]["test.me"] == ("test.me",)
        # Our child's address is covered by ours; the default route is never sent.
        assert all("test.me.kid" not in routes and "" not in routes for routes in new.values())

    asyncio.run(run())


def test_refusals() -> None:
    async def run() -> None:
        speaker, _ = broadcaster(peer("bob", send_routes=False, receive_routes=False))
        control = ccp.control_prepare(ccp.RouteControl(ccp.Mode.SYNC, uuid.uuid4(), 0), LATER)
        for reply in (
            speaker.handle_control("bob", control),
            speaker.handle_update("bob", update(uuid.uuid4(), 0, 1)),
        ):
            assert isinstance(reply, Reject) and reply.code == "F00"
        speaker, _ = broadcaster(peer("bob"))
        garbage = Prepare(0, LATER, control.execution_condition, ccp.UPDATE_ADDRESS, b"\x01")
        reply = speaker.handle_update("bob", garbage)
        assert isinstance(reply, Reject) and reply.code == "F01"

    asyncio.run(run())


#: Retry delays of 0.05, 0.1, 0.2, 0.4, 0.8 s, then 0.8 s: jitter drawn at the middle (factor 1).
QUICK = Backoff(initial=0.05, multiplier=2.0, cap=0.8, jitter=0.5)
MIDDLE = 0.5  # what rng() returns: the jitter factor 1 + 0.5 * (2 * MIDDLE - 1) = 1
#: Early wake-ups the event loop allows (its clock resolution), well above it.
SLACK = 0.005


#: A backoff that barely waits: what the other kind of failure must not be retried with.
HASTY = Backoff(initial=0.001, multiplier=1.0, cap=0.001, jitter=0.0)


class Unreachable:
    """An exchange with a peer that is down (or, with ``refusing``, that refuses CCP as
    ilp-connector does with F01): every message fails; it notes when each was sent, by
    address, and delivers only once ``back`` is set."""

    def __init__(self, refusing: bool = False) -> None:
        self.sent: dict[str, list[float]] = {}
        self.back = False
        self.refusing = refusing

    async def __call__(self, peer_id: str, prepare: Prepare, time_limit: float) -> Reply:
        self.sent.setdefault(prepare.destination, []).append(asyncio.get_running_loop().time())
        if self.back:
            return ccp.accepted()
        if self.refusing:
            return Reject(ErrorCode.F01_INVALID_PACKET, "test.mum", "unknown peer protocol", b"")
        raise ConnectionRefusedError(f"peer {peer_id} does not answer")

    async def until(self, address: str, count: int) -> list[float]:
        """The times of the first ``count`` messages to ``address``."""
        await wait_until_async(
            lambda: len(self.sent.get(address, ())) >= count, f"{count} messages to {address}"
        )
        return self.sent[address][:count]


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in itertools.pairwise(times)]


@pytest.mark.parametrize("refusing", [False, True], ids=["unreachable", "refusing"])
def test_route_controls_to_a_parent_that_fails_back_off(refusing: bool) -> None:
    """A child asks its parent for routes; while the parent is down (or refuses), each control
    waits longer than the one before (up to the cap), not a fixed second (or interval) as a
    host with 2000 children once did; each kind of failure with its own backoff."""

    async def run() -> None:
        exchange = Unreachable(refusing)
        mum = peer("mum", "parent")
        routing = RoutingTable("test.me", {"mum": "test.mum"}, relations={"mum": "parent"})
        speaker = RouteBroadcaster(
            {"mum": mum},
            routing,
            exchange,
            interval=30,
            backoff=HASTY if refusing else QUICK,
            refused_backoff=QUICK if refusing else HASTY,
            rng=lambda: MIDDLE,
        )
        speaker.start()
        try:
            times = await exchange.until(ccp.CONTROL_ADDRESS, 7)
            expected = [QUICK.delay(n, lambda: MIDDLE) for n in range(1, 7)]
            assert expected == [0.05, 0.1, 0.2, 0.4, 0.8, 0.8]
            for waited, delay in zip(gaps(times), expected, strict=True):
                assert waited >= delay - SLACK, (gaps(times), expected)
            failure = "refused" if refusing else "not delivered"
            assert f"route control {failure}" in speaker.status()[0].error
            # The parent is back: the next control is delivered and no more are sent.
            exchange.back = True
            await exchange.until(ccp.CONTROL_ADDRESS, 8)
            await wait_until_async(lambda: not speaker.status()[0].error, "no error")
            sent = len(exchange.sent[ccp.CONTROL_ADDRESS])
            await asyncio.sleep(3 * QUICK.cap)
            assert len(exchange.sent[ccp.CONTROL_ADDRESS]) == sent
        finally:
            await speaker.stop()

    asyncio.run(run())


def test_route_updates_to_an_unreachable_peer_back_off_until_it_asks_again() -> None:
    async def run() -> None:
        exchange = Unreachable()
        bob = peer("bob", receive_routes=False)
        routing = RoutingTable("test.me", {"bob": "test.bob"}, relations={"bob": "peer"})
        speaker = RouteBroadcaster(
            {"bob": bob},
            routing,
            exchange,
            interval=30,
            backoff=QUICK,
            refused_backoff=QUICK,
            rng=lambda: MIDDLE,
        )
        speaker.start()
        try:
            control = ccp.RouteControl(ccp.Mode.SYNC, uuid.UUID(int=0), 0)
            assert isinstance(
                speaker.handle_control("bob", ccp.control_prepare(control, LATER)), Fulfill
            )
            times = await exchange.until(ccp.UPDATE_ADDRESS, 6)
            for waited, n in zip(gaps(times), range(1, 6), strict=True):
                assert waited >= QUICK.delay(n, lambda: MIDDLE) - SLACK, gaps(times)
            assert "route update not delivered" in speaker.status()[0].error
            # Bob asks again (he is back): he is answered at once, whatever the backoff.
            exchange.back = True
            before = len(exchange.sent[ccp.UPDATE_ADDRESS])
            speaker.handle_control("bob", ccp.control_prepare(control, LATER))
            assert speaker._senders["bob"].retry_at == 0.0
            await exchange.until(ccp.UPDATE_ADDRESS, before + 1)
            await wait_until_async(lambda: not speaker.status()[0].error, "no error")
            assert speaker.status()[0].sent_epoch == speaker.epoch
        finally:
            await speaker.stop()

    asyncio.run(run())


def test_a_gap_is_asked_about_at_once_and_gaps_in_a_row_back_off() -> None:
    async def run() -> None:
        routing = RoutingTable("test.me", {"bob": "test.bob"}, relations={"bob": "peer"})
        speaker = RouteBroadcaster(
            {"bob": peer("bob")},
            routing,
            no_exchange,
            interval=30,
            backoff=QUICK,
            refused_backoff=QUICK,
            rng=lambda: MIDDLE,
        )
        receiver = speaker._receivers["bob"]
        receiver.control_due = float("inf")  # asked already: in sync
        table = uuid.uuid4()
        speaker.handle_update("bob", update(table, 0, 2))
        now = asyncio.get_running_loop().time

        speaker.handle_update("bob", update(table, 5, 6))  # a gap: ask at once
        assert receiver.control_due <= now()
        receiver.control_due = float("inf")  # asked
        before = now()  # what the delays count from, read first: no slack needed under load
        speaker.handle_update("bob", update(table, 7, 8))  # another, no progress meanwhile
        assert receiver.control_due >= before + QUICK.delay(1, lambda: MIDDLE)
        receiver.control_due = float("inf")
        before = now()
        speaker.handle_update("bob", update(table, 9, 10))
        assert receiver.control_due >= before + QUICK.delay(2, lambda: MIDDLE)
        # The resent epochs arrive in order: in step again, the next gap is asked about at once.
        receiver.control_due = float("inf")
        speaker.handle_update("bob", update(table, 2, 10))
        speaker.handle_update("bob", update(table, 12, 13))
        assert receiver.control_due <= now()

    asyncio.run(run())


def test_the_default_retries_double_up_to_a_cap_and_spread() -> None:
    # Not delivered (the peer is down or starting): up to the interval.
    assert [retry_backoff(30.0).delay(n, lambda: MIDDLE) for n in (1, 2, 3, 9)] == [1, 2, 4, 30]
    assert retry_backoff(0.5).delay(9, lambda: MIDDLE) == 0.5
    # Refused (the peer does not speak CCP, or keeps sending gaps): up to MAX_RETRY, also with
    # the benchmarks' short interval, where a refusal was asked again every 0.5 s.
    refused = retry_backoff(0.5, refused=True)
    assert [refused.delay(n, lambda: MIDDLE) for n in (1, 2, 3)] == [0.5, 1.0, 2.0]
    assert refused.delay(30, lambda: MIDDLE) == MAX_RETRY
    assert retry_backoff(600.0, refused=True).delay(30, lambda: MIDDLE) == 600.0
    # Jitter: within +-50 %.
    assert refused.delay(1, lambda: 0.0) == 0.25 and refused.delay(1, lambda: 0.999) > 0.74


def test_the_loop_sleeps_while_due_controls_wait_for_our_address() -> None:
    """Controls are due at start, but none is sent without our address: the loop must sleep
    its usual pause then, not spin."""
    routing = RoutingTable(None, {"mum": "test.mum"}, relations={"mum": "parent"})
    speaker = RouteBroadcaster({"mum": peer("mum", "parent")}, routing, no_exchange, interval=30)
    assert speaker._receivers["mum"].control_due == 0.0
    assert speaker._pause(1000.0) == 1.0


def test_a_control_from_a_peer_we_back_off_from_asks_it_at_once() -> None:
    async def run() -> None:
        routing = RoutingTable("test.me", {"bob": "test.bob"}, relations={"bob": "peer"})
        speaker = RouteBroadcaster({"bob": peer("bob")}, routing, no_exchange, interval=30)
        receiver = speaker._receivers["bob"]
        receiver.failures, receiver.control_due = 4, asyncio.get_running_loop().time() + 60
        control = ccp.RouteControl(ccp.Mode.SYNC, uuid.UUID(int=0), 0)
        speaker.handle_control("bob", ccp.control_prepare(control, LATER))
        assert receiver.control_due == 0.0

    asyncio.run(run())
