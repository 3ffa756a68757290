"""Per-peer link state, in gRPC's connectivity vocabulary (sdk.connectivity).

ILP-over-HTTP has no connection to watch: the link is known only through the exchanges made on
it. So each peer's state (name ``peer:<id>``, kind ``peer``) follows the outcomes:

- IDLE until the first packet is sent to the peer;
- CONNECTING while a send is under way and nothing is known yet (first send, or the first one
  after a failure);
- READY after any exchange that got an ILP reply back (a Reject counts: the link works);
- TRANSIENT_FAILURE with the error after a connection error, an HTTP error status (5xx, 401,
  ...), a body that is not an ILP reply, or no reply before the Prepare expired;
- SHUTDOWN when the connector stops.

Sends run concurrently, so outcomes can arrive in any order; a success reported while the link
is in TRANSIENT_FAILURE goes through CONNECTING, the only legal way back to READY.

Watchers (:meth:`LinkStates.watch`) get every changed state; a stuck watcher loses the oldest
changes rather than growing memory without bound.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable, Iterable
from datetime import UTC, datetime

from sdk.connectivity import ConnectionState, Connectivity

#: Changes a watcher may fall behind by before the oldest are dropped.
WATCH_BACKLOG = 1000

_C = Connectivity


def link_name(peer_id: str) -> str:
    """The connection name of a peer link, as operators see it."""
    return f"peer:{peer_id}"


class _Watcher:
    def __init__(self) -> None:
        self.queue: collections.deque[ConnectionState | None] = collections.deque()
        self.ready = asyncio.Event()

    def put(self, item: ConnectionState | None) -> None:
        if len(self.queue) >= WATCH_BACKLOG:
            self.queue.popleft()
        self.queue.append(item)
        self.ready.set()


class LinkStates:
    """The state of every peer link; the connector reports outcomes, the host reads states."""

    def __init__(
        self, peer_ids: Iterable[str], now: Callable[[], datetime] = lambda: datetime.now(UTC)
    ) -> None:
        self._now = now
        self._states = {
            peer_id: ConnectionState(name=link_name(peer_id), kind="peer", since=now())
            for peer_id in peer_ids
        }
        self._watchers: set[_Watcher] = set()
        self._closed = False

    # -- views ----------------------------------------------------------------------------

    def states(self) -> list[ConnectionState]:
        """Every peer link, in configuration order."""
        return list(self._states.values())

    def state(self, peer_id: str) -> ConnectionState:
        """One peer link; KeyError for an unknown peer."""
        return self._states[peer_id]

    async def watch(self) -> AsyncIterator[ConnectionState]:
        """Each link state as it changes, until the connector stops (after the SHUTDOWNs)."""
        watcher = _Watcher()
        if self._closed:
            return
        self._watchers.add(watcher)
        try:
            while True:
                await watcher.ready.wait()
                watcher.ready.clear()
                while watcher.queue:
                    item = watcher.queue.popleft()
                    if item is None:
                        return
                    yield item
        finally:
            self._watchers.discard(watcher)

    # -- outcomes -------------------------------------------------------------------------

    def sending(self, peer_id: str) -> None:
        """A send to the peer starts."""
        if self._states[peer_id].state in (_C.IDLE, _C.TRANSIENT_FAILURE):
            self._move(peer_id, _C.CONNECTING)

    def succeeded(self, peer_id: str) -> None:
        """The peer answered with an ILP reply."""
        current = self._states[peer_id].state
        if current == _C.READY or self._closed:
            return
        if current != _C.CONNECTING:
            self._move(peer_id, _C.CONNECTING, notify=False)
        self._move(peer_id, _C.READY)

    def failed(self, peer_id: str, error: str) -> None:
        """The exchange failed at the link level; ``error`` says how."""
        if self._closed:
            return
        if self._states[peer_id].state == _C.IDLE:
            self._move(peer_id, _C.CONNECTING, notify=False)
        self._move(peer_id, _C.TRANSIENT_FAILURE, error)

    def close(self) -> None:
        """Every link SHUTDOWN; watchers end. Idempotent."""
        if self._closed:
            return
        for peer_id in self._states:
            self._move(peer_id, _C.SHUTDOWN)
        self._closed = True
        for watcher in self._watchers:
            watcher.put(None)

    def _move(self, peer_id: str, new: Connectivity, error: str = "", notify: bool = True) -> None:
        old = self._states[peer_id]
        state = old.to(new, error, now=self._now)
        self._states[peer_id] = state
        if notify and state != old:
            for watcher in self._watchers:
                watcher.put(state)
