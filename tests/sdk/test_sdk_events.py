"""The pure parts of sdk.events: the incoming-settlement store and the connection table."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdk.connectivity import ConnectionState, Connectivity, IllegalTransition
from sdk.events import (
    ConflictingSettlement,
    Connections,
    EventHub,
    Incoming,
    IncomingSettlements,
    UnknownSettlement,
)
from sdk.pb.ilphost.types.v1 import types_pb2


def test_incoming_rejects_nonsense_and_has_a_wire_form() -> None:
    with pytest.raises(ValueError, match="settlement id"):
        Incoming("", "alice", 1, 2)
    with pytest.raises(ValueError, match="> 0"):
        Incoming("s", "alice", 0, 2)
    wire = Incoming("s", "alice", 10**30, 18).to_proto()
    assert (wire.settlement_id, wire.account_id) == ("s", "alice")
    assert wire.amount == types_pb2.Amount(value="1" + "0" * 30, scale=18)


def test_store_keeps_unacknowledged_in_order_and_acknowledges_idempotently() -> None:
    store = IncomingSettlements()
    a, b, c = (Incoming(i, "alice", 5, 2) for i in ("a", "b", "c"))
    assert [store.record(s) for s in (a, b, c)] == [True, True, True]
    assert not store.record(b)  # the ledger read again: known, nothing changes
    assert store.unacknowledged() == [a, b, c]
    store.acknowledge("b")
    store.acknowledge("b")
    assert store.unacknowledged() == [a, c]
    assert store.is_acknowledged("b") and not store.is_acknowledged("a")
    assert not store.record(b)  # an acknowledged one never comes back
    assert store.unacknowledged() == [a, c]
    assert "b" in store and "z" not in store and len(store) == 3
    with pytest.raises(UnknownSettlement, match="'z'"):
        store.acknowledge("z")
    with pytest.raises(ConflictingSettlement):
        store.record(Incoming("a", "alice", 6, 2))
    assert store.unacknowledged() == [a, c]


operations = st.lists(
    st.tuples(st.sampled_from(["record", "ack"]), st.integers(min_value=0, max_value=8)),
    max_size=40,
)


@given(operations)
def test_store_matches_a_model(ops: list[tuple[str, int]]) -> None:
    store = IncomingSettlements()
    recorded: list[int] = []
    acknowledged: set[int] = set()
    for op, n in ops:
        if op == "record":
            assert store.record(Incoming(f"s{n}", "peer", n + 1, 0)) == (n not in recorded)
            if n not in recorded:
                recorded.append(n)
        elif n in recorded:
            store.acknowledge(f"s{n}")
            acknowledged.add(n)
        else:
            with pytest.raises(UnknownSettlement):
                store.acknowledge(f"s{n}")
    expected = [f"s{n}" for n in recorded if n not in acknowledged]
    assert [s.settlement_id for s in store.unacknowledged()] == expected


class RecordingHub(EventHub):
    def __init__(self) -> None:
        super().__init__()
        self.published: list[tuple[str, Connectivity, str]] = []

    def publish_connection(self, state: ConnectionState) -> None:
        self.published.append((state.name, state.state, state.last_error))
        super().publish_connection(state)


def test_connections_follow_the_table_and_publish_changes() -> None:
    hub = RecordingHub()
    connections = Connections(hub)
    connections.add("ledger", "settlement-system")
    connections.add("peer:bob", "peer", Connectivity.CONNECTING)
    with pytest.raises(ValueError, match="already exists"):
        connections.add("ledger", "settlement-system")
    assert connections["peer:bob"].since is not None

    connections.move("ledger", Connectivity.CONNECTING)
    failed = connections.move("ledger", Connectivity.TRANSIENT_FAILURE, "refused")
    assert failed.attempts == 1
    connections.move("ledger", Connectivity.TRANSIENT_FAILURE, "refused")  # no change: silent
    with pytest.raises(IllegalTransition):
        connections.move("ledger", Connectivity.READY)  # only through CONNECTING
    assert connections["ledger"].state == Connectivity.TRANSIENT_FAILURE
    assert hub.published == [
        ("ledger", Connectivity.IDLE, ""),
        ("peer:bob", Connectivity.CONNECTING, ""),
        ("ledger", Connectivity.CONNECTING, ""),
        ("ledger", Connectivity.TRANSIENT_FAILURE, "refused"),
    ]
    with pytest.raises(KeyError):
        connections.move("nope", Connectivity.CONNECTING)


def test_probe_is_ready_only_when_every_connection_is() -> None:
    connections = Connections()
    assert connections.probe().ready.value  # nothing to wait for
    connections.add("ledger", "settlement-system", Connectivity.CONNECTING)
    probe = connections.probe()
    assert probe.HasField("ready") and not probe.ready.value
    assert [c.name for c in probe.connections] == ["ledger"]
    connections.move("ledger", Connectivity.READY)
    assert connections.probe().ready.value
    assert not connections.probe(ready=False).ready.value
    assert [c.state for c in connections.all()] == [Connectivity.READY]


def test_a_new_stream_starts_with_the_current_state_of_every_connection() -> None:
    """A change made before a stream opens reaches it: the stream starts with the truth (as
    grpc.health.v1 Watch sends the current status first), then the unacknowledged
    settlements, then live events. Before, connection states were not kept for new streams,
    so a change between a host's Probe and its stream was lost."""

    async def first_events(hub: EventHub, count: int) -> list[str]:
        stream = hub.watch(context=None)  # type: ignore[arg-type]  # used only to abort
        seen = []
        async for event in stream:
            kind = event.WhichOneof("event")
            if kind == "connection_changed":
                c = event.connection_changed
                seen.append(f"{c.name}:{types_pb2.ConnectivityState.Name(c.state)}")
            else:
                seen.append(f"settlement:{event.incoming_settlement.settlement_id}")
            if len(seen) == count:
                break
        await stream.aclose()
        return seen

    hub = EventHub()
    connections = Connections(hub)
    connections.add("ledger", "settlement-system", Connectivity.CONNECTING)
    connections.add("peer:bob", "peer")
    connections.move("ledger", Connectivity.READY)  # before any stream: not lost
    hub.report_incoming(Incoming("s1", "bob", 5, 2))
    seen = asyncio.run(first_events(hub, 3))
    assert seen == [
        "ledger:CONNECTIVITY_STATE_READY",
        "peer:bob:CONNECTIVITY_STATE_IDLE",
        "settlement:s1",
    ]
