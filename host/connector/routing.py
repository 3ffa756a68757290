"""Routing: which peer (or this host) a destination address goes to. Pure.

A route is an address prefix and a next hop. The longest matching prefix wins, and prefixes
match on segment boundaries: ``test.bob`` routes ``test.bob`` and ``test.bob.x`` but not
``test.bobby`` (a plain string prefix would, and would send Bobby's packets to Bob). Besides
the configured routes, each peer's own address is a route to that peer, and this host's
address is a route to the local receiver; a configured route always wins over an implicit one
with the same prefix, so an operator can override them.

A prefix is an ILP address, an allocation scheme alone (``g``, ``test``: everything in that
scheme), or the empty string (the default route). ``peer.`` prefixes are refused: packets to
``peer.*`` are for the direct peer only and never routed.

Routes come from three places, and for one prefix the first that has it wins (as in
ilp-connector): the configured ``[[route]]`` table; the local routes (this host's address, each
peer's and each child's address, and the default route ``""`` to the first parent); the routes
learned from peers by route broadcast (host.connector.route_broadcast), where a child's route
beats a peer's, a peer's beats a parent's, then the shorter path wins, then the lower peer id.
Each change rebuilds one merged dictionary, so lookups never see the layers.

Lookup walks the destination's prefixes from longest to shortest, one dictionary probe per
segment, so it costs O(segments), not O(routes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from host.ilp import address


class RouteError(ValueError):
    """A routing table that cannot be built; the message names the prefix."""


@dataclass(frozen=True, slots=True)
class Route:
    """A prefix and its next hop: a peer's account id, or None for this host.

    ``source`` says where the route comes from (``configured``, ``local`` or ``learned``) and
    ``path`` is the connectors a learned route goes through; neither takes part in equality.
    """

    prefix: str
    peer_id: str | None
    source: str = field(default="configured", compare=False)
    path: tuple[str, ...] = field(default=(), compare=False)

    @property
    def is_local(self) -> bool:
        """Whether packets on this route are delivered to this host's local receiver."""
        return self.peer_id is None


@dataclass(frozen=True, slots=True)
class LearnedRoute:
    """A route a peer advertised: the prefix and the path of connectors behind that peer."""

    prefix: str
    path: tuple[str, ...]


#: Preference among learned routes for one prefix, by the relation of the peer that sent it.
_RELATION_PRIORITY = {"child": 0, "peer": 1, "parent": 2}


def check_prefix(prefix: str) -> str:
    """The prefix if it can be routed on; RouteError saying why otherwise."""
    if prefix == "":
        return prefix
    if prefix in address.SCHEMES:
        if prefix == address.PEER_SCHEME:
            raise RouteError("prefix 'peer' cannot be routed: peer.* packets are never forwarded")
        return prefix
    if not address.is_valid(prefix):
        raise RouteError(
            f"prefix {prefix[:60]!r} is not an ILP address, a scheme or '' "
            f"({address.why_invalid(prefix)})"
        )
    if address.is_peer_address(prefix):
        raise RouteError(f"prefix {prefix!r} cannot be routed: peer.* packets are never forwarded")
    return prefix


class RoutingTable:
    """Longest-prefix match over configured, local and learned routes.

    ``own_address`` is this host's address (None until learned from a parent);
    ``peer_addresses`` maps each peer id to its address (local routes); ``routes`` maps
    configured prefixes to peer ids; ``default_peer`` (a parent) gets the default route ``""``
    unless one is configured; ``relations`` maps peer ids to their relation (for choosing among
    learned routes; "peer" when absent).
    """

    def __init__(
        self,
        own_address: str | None,
        peer_addresses: Mapping[str, str] | None = None,
        routes: Iterable[tuple[str, str]] = (),
        *,
        default_peer: str | None = None,
        relations: Mapping[str, str] | None = None,
    ) -> None:
        configured: dict[str, str] = {}
        for prefix, peer_id in routes:
            check_prefix(prefix)
            if prefix in configured:
                raise RouteError(f"prefix {prefix!r} has more than one route")
            configured[prefix] = peer_id
        self._configured = configured
        self._default_peer = default_peer
        self._relations = dict(relations or {})
        self._own: str | None = None
        self._peer_addresses: dict[str, str] = {}
        self._learned: dict[str, dict[str, LearnedRoute]] = {}
        self._table: dict[str, Route] = {}
        if own_address is not None:
            check_prefix(own_address)
        self._own = own_address
        self.set_peer_addresses(peer_addresses or {})

    @property
    def own_address(self) -> str | None:
        """This host's address, if known."""
        return self._own

    def set_own_address(self, own_address: str, peer_addresses: Mapping[str, str]) -> None:
        """This host's address became known (learned from a parent), and with it the children's."""
        check_prefix(own_address)
        self._own = own_address
        self.set_peer_addresses(peer_addresses)

    def set_peer_addresses(self, peer_addresses: Mapping[str, str]) -> None:
        """The local routes to the peers (id -> address); RouteError if one is ours."""
        checked: dict[str, str] = {}
        for peer_id, peer_address in peer_addresses.items():
            prefix = check_prefix(peer_address)
            if prefix == self._own:
                raise RouteError(f"peer {peer_id!r} has this host's own address {prefix!r}")
            checked[peer_id] = prefix
        self._peer_addresses = checked
        self._rebuild()

    def set_learned(self, peer_id: str, routes: Iterable[LearnedRoute]) -> None:
        """Replace the routes learned from ``peer_id`` (none: it withdrew them all)."""
        learned = {route.prefix: route for route in routes}
        if learned:
            self._learned[peer_id] = learned
        else:
            self._learned.pop(peer_id, None)
        self._rebuild()

    def _rebuild(self) -> None:
        table: dict[str, Route] = {}
        candidates: dict[str, list[tuple[tuple[int, int, str], Route]]] = {}
        for peer_id, learned in self._learned.items():
            rank = _RELATION_PRIORITY.get(self._relations.get(peer_id, "peer"), 1)
            for route in learned.values():
                key = (rank, len(route.path), peer_id)
                candidates.setdefault(route.prefix, []).append(
                    (key, Route(route.prefix, peer_id, "learned", route.path))
                )
        for prefix, options in candidates.items():
            table[prefix] = min(options, key=lambda option: option[0])[1]
        if self._default_peer is not None:
            table[""] = Route("", self._default_peer, "local")
        for peer_id, prefix in self._peer_addresses.items():
            table[prefix] = Route(prefix, peer_id, "local")
        if self._own is not None:
            table[self._own] = Route(self._own, None, "local")
        for prefix, peer_id in self._configured.items():
            table[prefix] = Route(prefix, peer_id, "configured")
        self._table = table

    def routes(self) -> list[Route]:
        """Every route in use, longest prefix first (the order a lookup prefers them)."""
        return sorted(self._table.values(), key=lambda route: (-len(route.prefix), route.prefix))

    def learned(self, peer_id: str) -> list[LearnedRoute]:
        """What ``peer_id`` advertises to us (used or not)."""
        return list(self._learned.get(peer_id, {}).values())

    def resolve(self, destination: str) -> Route | None:
        """The route for ``destination``, or None when no prefix matches (F02 unreachable)."""
        table = self._table
        candidate = destination
        while True:
            route = table.get(candidate)
            if route is not None:
                return route
            cut = candidate.rfind(".")
            if cut < 0:
                break
            candidate = candidate[:cut]
        return table.get("")
