"""Building blocks for ``WatchEvents`` that get the delivery contract right.

- ``IncomingSettlements`` records what the ledger paid us, by settlement id, and keeps the
  unacknowledged ones in ledger order until ``ReceiveMoney`` acknowledges them.
- ``EventHub`` serves any number of ``WatchEvents`` streams: each new stream first gets the
  current state of every connection (as grpc.health.v1 Watch sends the current status first),
  then every unacknowledged settlement, in order, then live events (new settlements,
  connection changes). A change can therefore not fall between a host's Probe and its
  stream: the stream itself starts with the truth. At-least-once delivery: a stream opened
  again after an error re-delivers whatever was not acknowledged, and the engine dedups by
  settlement id.
- ``Connections`` holds the adaptor's connection states, moves them through the one transition
  table of ``sdk.connectivity``, publishes every change on the hub and answers ``Probe``.

All three belong to the event loop that serves the adaptor: call them from its tasks (a ledger
client that calls back on another thread hands over with ``loop.call_soon_threadsafe``). The
store keeps everything in memory; an adaptor whose ledger can be asked again after a restart,
or that has a database, can persist its own and feed the hub the same way.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import grpc
from google.protobuf import wrappers_pb2

from sdk.adaptor import Context
from sdk.connectivity import ConnectionState, Connectivity
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

#: Live events a stream may fall behind by before it is ended (UNAVAILABLE) so that the engine
#: reopens it; nothing is lost, unacknowledged settlements come again on the new stream.
QUEUE_LIMIT: Final = 10_000


class UnknownSettlement(LookupError):
    """An id the adaptor never reported (ReceiveMoney answers NOT_FOUND)."""


class ConflictingSettlement(ValueError):
    """The same settlement id reported twice with different content: a bug in the adaptor."""


@dataclass(frozen=True)
class Incoming:
    """One payment the peer made to us on the ledger."""

    settlement_id: str
    account_id: str
    value: int
    scale: int

    def __post_init__(self) -> None:
        if not self.settlement_id:
            raise ValueError("an incoming settlement needs a settlement id")
        if self.value <= 0:
            raise ValueError(f"incoming settlement {self.settlement_id!r}: amount must be > 0")

    def to_proto(self) -> adaptor_pb2.IncomingSettlement:
        """The wire form."""
        return adaptor_pb2.IncomingSettlement(
            settlement_id=self.settlement_id,
            account_id=self.account_id,
            amount=types_pb2.Amount(value=str(self.value), scale=self.scale),
        )


class IncomingSettlements:
    """Incoming settlements by id; the unacknowledged ones in the order they were recorded."""

    def __init__(self) -> None:
        # Acknowledged ids stay known so that a repeated ReceiveMoney is still OK.
        self._known: dict[str, Incoming] = {}
        self._unacknowledged: dict[str, Incoming] = {}

    def record(self, settlement: Incoming) -> bool:
        """Remember a settlement; False if it was already known (a ledger re-read)."""
        known = self._known.get(settlement.settlement_id)
        if known is not None:
            if known != settlement:
                raise ConflictingSettlement(
                    f"settlement {settlement.settlement_id!r} was reported as {known} "
                    f"and now as {settlement}"
                )
            return False
        self._known[settlement.settlement_id] = settlement
        self._unacknowledged[settlement.settlement_id] = settlement
        return True

    def acknowledge(self, settlement_id: str) -> None:
        """Mark a settlement credited by the engine; idempotent. UnknownSettlement if never seen."""
        if settlement_id not in self._known:
            raise UnknownSettlement(f"no incoming settlement with id {settlement_id!r}")
        self._unacknowledged.pop(settlement_id, None)

    def is_acknowledged(self, settlement_id: str) -> bool:
        """Whether a known settlement has been acknowledged."""
        return settlement_id in self._known and settlement_id not in self._unacknowledged

    def unacknowledged(self) -> list[Incoming]:
        """What still has to be delivered, in ledger order."""
        return list(self._unacknowledged.values())

    def __contains__(self, settlement_id: object) -> bool:
        return settlement_id in self._known

    def __len__(self) -> int:
        return len(self._known)


_Event = Incoming | ConnectionState


class _Subscriber:
    """One open WatchEvents stream: a bounded queue of live events."""

    def __init__(self, limit: int) -> None:
        self.queue: deque[_Event] = deque()
        self.limit = limit
        self.overflowed = False
        self.closed = False
        self.wakeup = asyncio.Event()

    def put(self, event: _Event) -> None:
        if len(self.queue) >= self.limit:
            self.overflowed = True
        else:
            self.queue.append(event)
        self.wakeup.set()

    def close(self) -> None:
        self.closed = True
        self.wakeup.set()


def _wrap(event: _Event) -> adaptor_pb2.WatchEventsResponse:
    if isinstance(event, Incoming):
        return adaptor_pb2.WatchEventsResponse(incoming_settlement=event.to_proto())
    return adaptor_pb2.WatchEventsResponse(connection_changed=event.to_proto())


class EventHub:
    """Fans events out to every open WatchEvents stream; see the module docstring."""

    def __init__(
        self, settlements: IncomingSettlements | None = None, queue_limit: int = QUEUE_LIMIT
    ) -> None:
        self.settlements = settlements if settlements is not None else IncomingSettlements()
        self._queue_limit = queue_limit
        self._subscribers: set[_Subscriber] = set()
        #: The latest state of each connection, by name, in the order first seen.
        self._connections: dict[str, ConnectionState] = {}
        self._closed = False

    @property
    def streams(self) -> int:
        """How many WatchEvents streams are open."""
        return len(self._subscribers)

    def report_incoming(self, settlement: Incoming) -> bool:
        """Record an incoming settlement and send it to every stream; False if already known."""
        if not self.settlements.record(settlement):
            return False
        self._publish(settlement)
        return True

    def publish_connection(self, state: ConnectionState) -> None:
        """Send a connection change to every stream, and keep it: new streams start with it."""
        self._connections[state.name] = state
        self._publish(state)

    def _publish(self, event: _Event) -> None:
        for subscriber in self._subscribers:
            subscriber.put(event)

    def close(self) -> None:
        """End every stream with OK (the adaptor is stopping); later streams end at once."""
        self._closed = True
        for subscriber in self._subscribers:
            subscriber.close()

    async def watch(self, context: Context) -> AsyncIterator[adaptor_pb2.WatchEventsResponse]:
        """The body of a WatchEvents handler: ``async for e in hub.watch(context): yield e``."""
        if self._closed:
            return
        subscriber = _Subscriber(self._queue_limit)
        # Snapshot and subscribe with no await in between: every connection change and every
        # settlement is either in the snapshot or in the queue, none is missed.
        connections = list(self._connections.values())
        backlog = self.settlements.unacknowledged()
        self._subscribers.add(subscriber)
        try:
            for connection in connections:
                yield _wrap(connection)
            for settlement in backlog:
                if not self.settlements.is_acknowledged(settlement.settlement_id):
                    yield _wrap(settlement)
            while True:
                subscriber.wakeup.clear()
                if subscriber.overflowed:
                    await context.abort(
                        grpc.StatusCode.UNAVAILABLE,
                        f"event stream fell behind by more than {self._queue_limit} events; "
                        "reopen it (unacknowledged settlements are delivered again)",
                    )
                if subscriber.queue:
                    event = subscriber.queue.popleft()
                    # Acknowledged while queued: the engine has it already.
                    if isinstance(event, Incoming) and self.settlements.is_acknowledged(
                        event.settlement_id
                    ):
                        continue
                    yield _wrap(event)
                    continue
                if subscriber.closed:
                    return
                await subscriber.wakeup.wait()
        finally:
            self._subscribers.discard(subscriber)


class Connections:
    """The adaptor's own connections by name, each moved through the transition table."""

    def __init__(self, hub: EventHub | None = None) -> None:
        self._hub = hub
        self._states: dict[str, ConnectionState] = {}

    def add(self, name: str, kind: str, state: Connectivity = Connectivity.IDLE) -> ConnectionState:
        """Start tracking a connection (ValueError if the name is taken)."""
        if name in self._states:
            raise ValueError(f"connection {name!r} already exists")
        connection = ConnectionState(name=name, kind=kind, state=state, since=datetime.now(UTC))
        self._states[name] = connection
        self._publish(connection)
        return connection

    def move(self, name: str, state: Connectivity, error: str = "") -> ConnectionState:
        """Apply a transition (IllegalTransition if the table forbids it); publish any change."""
        current = self._states[name]
        moved = current.to(state, error)
        self._states[name] = moved
        if moved != current:
            self._publish(moved)
        return moved

    def _publish(self, connection: ConnectionState) -> None:
        if self._hub is not None:
            self._hub.publish_connection(connection)

    def __getitem__(self, name: str) -> ConnectionState:
        return self._states[name]

    def all(self) -> list[ConnectionState]:
        """Every connection, in the order added."""
        return list(self._states.values())

    def ready(self) -> bool:
        """True when every connection is READY."""
        return all(c.state == Connectivity.READY for c in self._states.values())

    def probe(self, ready: bool | None = None) -> adaptor_pb2.ProbeResponse:
        """The Probe answer: ``ready`` (default: every connection READY) and the connections."""
        return adaptor_pb2.ProbeResponse(
            ready=wrappers_pb2.BoolValue(value=self.ready() if ready is None else ready),
            connections=[c.to_proto() for c in self._states.values()],
        )
