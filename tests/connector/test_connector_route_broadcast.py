"""The route broadcaster's decisions, message by message (no network: the exchange records)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

from host.connector import PeerConfig
from host.connector.route_broadcast import RouteBroadcaster
from host.connector.routing import Route, RoutingTable
from host.ilp import Fulfill, Prepare, Reject, Reply, ccp

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
