"""Route broadcast: CCP with every peer that exchanges routes, as ilp-connector does it.

Sending (we are the *speaker*): our routing table, as advertised, is kept as a log of epochs;
each change of a prefix's advertised route (new, changed or gone) is one epoch. A peer asks to
be kept in sync with a ``peer.route.control`` (mode SYNC, the last table id and epoch it has);
from then on it gets ``peer.route.update`` messages carrying the epochs it lacks, at once after
a change and at least every ``interval`` as a heartbeat. The hold-down time we send is
``HOLD_DOWN_FACTOR`` intervals: a receiver drops our routes if it hears nothing for that long.

What we advertise: every prefix in our table except the default route and bare schemes, with
the path of connectors prefixed by our address; not our children's own addresses (covered by
ours); to a peer, not the routes through that same peer (they come back withdrawn); to a
parent, not the routes through other peers or parents (no transit for a parent), as
ilp-connector does.

Receiving: each peer that sends us routes has its routing table id and the epoch we hold. An
update from a new table starts over; a gap (its ``from`` beyond our epoch) is ignored and we ask
again with a route control; an old one is ignored. Routes whose path holds our address (a
loop), our own prefixes, the default route and bare schemes are dropped; a child may only
announce prefixes under its own address. Learned routes go into the routing table, where the
configured and local routes take precedence (host.connector.routing).

Which peers take part: ``send_routes`` / ``receive_routes`` of each ``[[peer]]``, both true by
default for every relation. (ilp-connector defaults to false for its children; this host
sends its routes to children and accepts theirs under the child's address.)

Retries back off (sdk.backoff, with jitter), each failure twice as long as the one before,
until the exchange progresses again: a route control or update that was not delivered (the
peer is down or starting) up to the interval; one the peer refused, and a gap that follows a
gap, up to :data:`MAX_RETRY` (or the interval, if longer): such a peer will not change its mind
soon. A route control from the peer (it is back, and listens) ends the backoff on both sides.
Without it a host asks each peer that refuses routes (a child on ilp-connector's defaults)
every interval, which with thousands of children is most of its work, and a parent that was
down is met by all its children at once, every second.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from host.connector.config import PeerConfig
from host.connector.routing import LearnedRoute, Route, RouteError, RoutingTable, check_prefix
from host.ilp import ErrorCode, IlpPacketError, Prepare, Reply, ccp, make_reject
from host.ilp import address as ilp_address
from host.ilp.packet import Reject
from sdk.backoff import Backoff

log = logging.getLogger("ilp_host.connector.routes")

#: How long a route message may take, seconds.
MESSAGE_TIMEOUT = 10.0
#: The hold-down time we announce, in broadcast intervals (ilp-connector: 45 s for 30 s).
HOLD_DOWN_FACTOR = 1.5
#: Most epochs in one update (ilp-connector sends at most 50 too).
MAX_EPOCHS_PER_UPDATE = 50

#: The first retry of a route message after a failure, seconds (then doubling, with jitter:
#: see :func:`retry_backoff`).
FIRST_RETRY = 1.0
#: The longest wait between two retries, seconds, unless the broadcast interval is longer.
MAX_RETRY = 120.0

#: The table id a receiver knows before its first update (ilp-connector's all-zero UUID).
_NO_TABLE = uuid.UUID(int=0)

Exchange = Callable[[str, Prepare, float], Awaitable[Reply]]


@dataclass
class _Sender:
    """Our side towards a peer that receives our routes."""

    mode: ccp.Mode = ccp.Mode.IDLE
    epoch: int = 0  # the next epoch the peer needs
    last_sent: float = 0.0
    failures: int = 0  # updates in a row not delivered or refused
    retry_at: float = 0.0  # no update before then (backing off after a failure)
    error: str = ""


@dataclass
class _Receiver:
    """Our side towards a peer whose routes we learn."""

    table_id: uuid.UUID = field(default_factory=lambda: _NO_TABLE)
    epoch: int = 0
    routes: dict[str, LearnedRoute] = field(default_factory=dict)
    expires: float = 0.0
    control_due: float = 0.0  # when to (re)send a route control; 0: now
    control_sent: bool = False
    failures: int = 0  # controls in a row that failed (or gaps), reset by an applied update
    error: str = ""


@dataclass(frozen=True)
class PeerRouting:
    """What an operator sees of the route exchange with one peer."""

    peer_id: str
    send_mode: str  # "SYNC", "IDLE" or "off"
    sent_epoch: int
    receive_table_id: str
    received_epoch: int
    learned: int
    error: str


class RouteBroadcaster:
    """CCP sender and receiver for every peer; the routing table's learned routes."""

    def __init__(
        self,
        peers: Mapping[str, PeerConfig],
        routing: RoutingTable,
        exchange: Exchange,
        *,
        interval: float = 30.0,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        backoff: Backoff | None = None,
        refused_backoff: Backoff | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        """``backoff``: the retry delays after messages not delivered, ``refused_backoff``
        after refusals and gaps (by default :func:`retry_backoff` of ``interval``); ``rng``
        draws their jitter."""
        self._peers = peers
        self._routing = routing
        self._exchange = exchange
        self._interval = interval
        self._now = now
        self._backoff = backoff or retry_backoff(interval)
        self._refused_backoff = refused_backoff or retry_backoff(interval, refused=True)
        self._rng = rng
        self.table_id = uuid.uuid4()
        #: Epoch i changed the advertised route of log[i][0] to log[i][1] (None: withdrawn);
        #: superseded entries become None.
        self._log: list[tuple[str, Route | None] | None] = []
        self._advertised: dict[str, tuple[Route, int]] = {}
        self._senders = {pid: _Sender() for pid, p in peers.items() if p.send_routes}
        self._receivers = {pid: _Receiver() for pid, p in peers.items() if p.receive_routes}
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def epoch(self) -> int:
        """Our current epoch: how many changes our advertised table went through."""
        return len(self._log)

    @property
    def hold_down_ms(self) -> int:
        return int(self._interval * HOLD_DOWN_FACTOR * 1000)

    # -- lifecycle ------------------------------------------------------------------------

    def start(self) -> None:
        """Send route controls and updates from now on (a task until :meth:`stop`)."""
        self.table_changed()
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="connector-route-broadcast")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    # -- our table --------------------------------------------------------------------------

    def table_changed(self) -> None:
        """Recompute what we advertise; log an epoch per changed prefix and wake the senders."""
        own = self._routing.own_address
        if own is None:
            return
        wanted: dict[str, Route] = {}
        for route in self._routing.routes():
            if not _advertisable(route.prefix):
                continue
            if route.prefix.startswith(own + ".") and route.source == "local":
                continue  # a child's own address: covered by ours
            wanted[route.prefix] = route
        changed = False
        for prefix in sorted(set(self._advertised) | set(wanted)):
            old = self._advertised.get(prefix)
            new = wanted.get(prefix)
            if old is not None and new is not None and _same(old[0], new):
                continue
            if old is None and new is None:
                continue
            if old is not None:
                self._log[old[1]] = None
            self._log.append((prefix, new))
            if new is None:
                del self._advertised[prefix]
            else:
                self._advertised[prefix] = (new, len(self._log) - 1)
            changed = True
        if changed:
            self._wake.set()

    def _update_for(self, peer_id: str, sender: _Sender) -> ccp.RouteUpdate:
        own = self._routing.own_address
        assert own is not None
        start = sender.epoch
        entries = self._log[start : start + MAX_EPOCHS_PER_UPDATE]
        relation = self._peers[peer_id].relation
        new: list[ccp.CcpRoute] = []
        withdrawn: list[str] = []
        for entry in entries:
            if entry is None:
                continue
            prefix, route = entry
            if route is not None and not self._may_advertise(route, peer_id, relation):
                route = None
            if route is None:
                withdrawn.append(prefix)
            else:
                new.append(ccp.CcpRoute(prefix, (own, *route.path)))
        return ccp.RouteUpdate(
            self.table_id,
            self.epoch,
            start,
            start + len(entries),
            self.hold_down_ms,
            own,
            tuple(new),
            tuple(withdrawn),
        )

    def _may_advertise(self, route: Route, peer_id: str, relation: str) -> bool:
        """Not back to its own next hop; to a parent, only our own and our children's."""
        if route.peer_id is None:
            return True
        if route.peer_id == peer_id:
            return False
        return relation != "parent" or self._peers[route.peer_id].relation == "child"

    # -- incoming messages ------------------------------------------------------------------

    def handle_control(self, peer_id: str, prepare: Prepare) -> Reply:
        """A peer asks for (or stops) our route updates."""
        sender = self._senders.get(peer_id)
        if sender is None:
            return _refuse(f"this host does not send routes to peer {peer_id} (send_routes)")
        try:
            control = ccp.decode_control(prepare.data)
        except IlpPacketError as exc:
            return make_reject(ErrorCode.F01_INVALID_PACKET, "peer.route.control", str(exc))
        sender.mode = control.mode
        sender.epoch = (
            control.last_known_epoch if control.last_known_routing_table_id == self.table_id else 0
        )
        sender.epoch = min(sender.epoch, self.epoch)
        sender.last_sent = 0.0
        sender.failures, sender.retry_at = 0, 0.0  # it listens again: no need to back off
        receiver = self._receivers.get(peer_id)
        if receiver is not None and receiver.failures and not math.isinf(receiver.control_due):
            receiver.control_due = 0.0  # and likely answers our control now: ask at once
        log.info(
            "peer %s asks for routes: mode %s from epoch %d",
            peer_id,
            control.mode.name,
            sender.epoch,
        )
        self._wake.set()
        return ccp.accepted()

    def handle_update(self, peer_id: str, prepare: Prepare) -> Reply:
        """A peer's routes: learn them."""
        receiver = self._receivers.get(peer_id)
        if receiver is None:
            return _refuse(f"this host does not accept routes from peer {peer_id} (receive_routes)")
        try:
            update = ccp.decode_update(prepare.data)
        except IlpPacketError as exc:
            return make_reject(ErrorCode.F01_INVALID_PACKET, "peer.route.update", str(exc))
        loop = asyncio.get_running_loop()
        receiver.expires = max(receiver.expires, loop.time() + update.hold_down_time / 1000)
        if update.routing_table_id != receiver.table_id:
            receiver.table_id = update.routing_table_id
            receiver.epoch = 0
            receiver.routes = {}
        if update.from_epoch > receiver.epoch:
            # A gap: ask again from what we have (the peer resends from there): at once the
            # first time, later after each gap that follows without progress.
            receiver.failures += 1
            due = loop.time()
            if receiver.failures > 1:
                due += self._refused_backoff.delay(receiver.failures - 1, self._rng)
            receiver.control_due = min(receiver.control_due, due)
            self._wake.set()
            return ccp.accepted()
        if receiver.epoch > update.to_epoch:
            return ccp.accepted()
        receiver.failures = 0  # in step with the peer again
        for prefix in update.withdrawn_routes:
            receiver.routes.pop(prefix, None)
        for route in update.new_routes:
            if self._acceptable(peer_id, route):
                receiver.routes[route.prefix] = LearnedRoute(route.prefix, route.path)
            else:
                receiver.routes.pop(route.prefix, None)
        receiver.epoch = update.to_epoch
        receiver.error = ""
        if update.new_routes or update.withdrawn_routes:
            self._learn(peer_id, receiver)
        return ccp.accepted()

    def _acceptable(self, peer_id: str, route: ccp.CcpRoute) -> bool:
        own = self._routing.own_address
        if not _advertisable(route.prefix):
            return False
        try:
            check_prefix(route.prefix)
        except RouteError:
            return False
        if own is None or own in route.path:
            return False
        peer = self._peers[peer_id]
        if peer.relation == "child":
            # Only its own subtree (which lies under ours).
            child = peer.child_address(own)
            return route.prefix == child or route.prefix.startswith(child + ".")
        return route.prefix != own and not route.prefix.startswith(own + ".")

    def _learn(self, peer_id: str, receiver: _Receiver) -> None:
        self._routing.set_learned(peer_id, receiver.routes.values())
        self.table_changed()

    # -- the loop -----------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            self._wake.clear()
            now = loop.time()
            pending: list[Awaitable[None]] = []
            for peer_id, receiver in self._receivers.items():
                if receiver.routes and receiver.expires and now > receiver.expires:
                    log.info("routes from peer %s expired (no update within hold-down)", peer_id)
                    receiver.routes = {}
                    receiver.control_due = 0.0
                    self._learn(peer_id, receiver)
                if now >= receiver.control_due and self._routing.own_address is not None:
                    receiver.control_due = now + self._interval
                    pending.append(self._send_control(peer_id, receiver))
            for peer_id, sender in self._senders.items():
                if sender.mode != ccp.Mode.SYNC or self._routing.own_address is None:
                    continue
                if now < sender.retry_at:
                    continue
                behind = sender.epoch < self.epoch
                if behind or now - sender.last_sent >= self._interval:
                    sender.last_sent = now
                    pending.append(self._send_update(peer_id, sender))
            if pending:
                await asyncio.gather(*pending)
            try:
                async with asyncio.timeout(self._pause(loop.time())):
                    await self._wake.wait()
            except TimeoutError:
                pass

    def _pause(self, now: float) -> float:
        """How long the loop may sleep: until the next retry or control falls due, at most a
        quarter interval (and a second), so that heartbeats and expiries are on time."""
        pause = min(1.0, self._interval / 4)
        if self._routing.own_address is None:
            return pause  # nothing is sent without our address: no control falls due
        for receiver in self._receivers.values():
            pause = min(pause, receiver.control_due - now)
        for sender in self._senders.values():
            if sender.retry_at > now:
                pause = min(pause, sender.retry_at - now)
        return max(pause, 0.0)

    def _failed(
        self, peer_id: str, message: str, failures: int, exc: Exception
    ) -> tuple[float, str]:
        """When to send ``message`` again after its ``failures``-th failure in a row (``exc``),
        and the error to show for the peer."""
        refused = isinstance(exc, ccp.CcpError)
        delay = (self._refused_backoff if refused else self._backoff).delay(failures, self._rng)
        if isinstance(exc, ccp.CcpError):
            error = f"{message} refused: {exc.message} ({exc.code})"
            log.info("peer %s: %s; trying again in %.1f s", peer_id, error, delay)
        else:
            # The peer may just be starting: try again soon, then less and less often.
            error = f"{message} not delivered: {exc}"
            log.debug("peer %s: %s; trying again in %.1f s", peer_id, error, delay)
        return asyncio.get_running_loop().time() + delay, error

    async def _send_control(self, peer_id: str, receiver: _Receiver) -> None:
        control = ccp.RouteControl(ccp.Mode.SYNC, receiver.table_id, receiver.epoch)
        prepare = ccp.control_prepare(control, self._expiry())
        try:
            ccp.check_reply(await self._exchange(peer_id, prepare, MESSAGE_TIMEOUT))
        except Exception as exc:
            receiver.failures += 1
            receiver.control_due, receiver.error = self._failed(
                peer_id, "route control", receiver.failures, exc
            )
        else:
            receiver.control_sent = True
            receiver.error = ""
            # Asked: the peer keeps us in sync; ask again only on a gap or an expiry.
            receiver.control_due = float("inf")

    async def _send_update(self, peer_id: str, sender: _Sender) -> None:
        update = self._update_for(peer_id, sender)
        prepare = ccp.update_prepare(update, self._expiry())
        try:
            ccp.check_reply(await self._exchange(peer_id, prepare, MESSAGE_TIMEOUT))
        except Exception as exc:
            sender.failures += 1
            sender.retry_at, sender.error = self._failed(
                peer_id, "route update", sender.failures, exc
            )
        else:
            sender.epoch = update.to_epoch
            sender.failures = 0
            sender.retry_at = 0.0
            sender.error = ""

    def _expiry(self) -> datetime:
        return self._now() + timedelta(seconds=MESSAGE_TIMEOUT)

    # -- views ------------------------------------------------------------------------------

    def status(self) -> list[PeerRouting]:
        """The route exchange with every peer, in configuration order."""
        result = []
        for peer_id in self._peers:
            sender = self._senders.get(peer_id)
            receiver = self._receivers.get(peer_id)
            errors = [
                e for e in (sender.error if sender else "", receiver.error if receiver else "") if e
            ]
            result.append(
                PeerRouting(
                    peer_id,
                    sender.mode.name if sender else "off",
                    sender.epoch if sender else 0,
                    str(receiver.table_id) if receiver and receiver.control_sent else "",
                    receiver.epoch if receiver else 0,
                    len(receiver.routes) if receiver else 0,
                    "; ".join(errors),
                )
            )
        return result


def retry_backoff(interval: float, *, refused: bool = False) -> Backoff:
    """The retry delays of route messages with a broadcast ``interval``: from
    :data:`FIRST_RETRY` (or the interval, if shorter), doubling, at most the interval (after a
    refusal or a gap: :data:`MAX_RETRY`, or the interval if longer), each drawn within +-50 %
    so that the children of one parent do not retry in step."""
    first = min(FIRST_RETRY, interval)
    cap = max(interval, MAX_RETRY) if refused else interval
    return Backoff(initial=first, multiplier=2.0, cap=cap, jitter=0.5)


def _advertisable(prefix: str) -> bool:
    """Whether a prefix is exchanged at all: not the default route, a bare scheme or peer.*."""
    return (
        prefix != ""
        and prefix not in ilp_address.SCHEMES
        and not ilp_address.is_peer_address(prefix)
    )


def _same(a: Route, b: Route) -> bool:
    return a.peer_id == b.peer_id and a.path == b.path


def _refuse(message: str) -> Reject:
    # ilp-connector answers these with F00 Bad Request too.
    return make_reject(ErrorCode.F00_BAD_REQUEST, "peer.route", message)
