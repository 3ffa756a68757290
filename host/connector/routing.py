"""Static routing: which peer (or this host) a destination address goes to. Pure.

A route is an address prefix and a next hop. The longest matching prefix wins, and prefixes
match on segment boundaries: ``test.bob`` routes ``test.bob`` and ``test.bob.x`` but not
``test.bobby`` (a plain string prefix would, and would send Bobby's packets to Bob). Besides
the configured routes, each peer's own address is a route to that peer, and this host's
address is a route to the local receiver; a configured route always wins over an implicit one
with the same prefix, so an operator can override them.

A prefix is an ILP address, an allocation scheme alone (``g``, ``test``: everything in that
scheme), or the empty string (the default route). ``peer.`` prefixes are refused: packets to
``peer.*`` are for the direct peer only and never routed.

Lookup walks the destination's prefixes from longest to shortest, one dictionary probe per
segment, so it costs O(segments), not O(routes).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from host.ilp import address


class RouteError(ValueError):
    """A routing table that cannot be built; the message names the prefix."""


@dataclass(frozen=True, slots=True)
class Route:
    """A prefix and its next hop: a peer's account id, or None for this host."""

    prefix: str
    peer_id: str | None

    @property
    def is_local(self) -> bool:
        """Whether packets on this route are delivered to this host's local receiver."""
        return self.peer_id is None


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
    """Longest-prefix match over static routes (immutable once built).

    ``own_address`` is this host's address; ``peer_addresses`` maps each peer id to its
    address (implicit routes); ``routes`` maps configured prefixes to peer ids.
    """

    def __init__(
        self,
        own_address: str,
        peer_addresses: Mapping[str, str] | None = None,
        routes: Iterable[tuple[str, str]] = (),
    ) -> None:
        table: dict[str, str | None] = {check_prefix(own_address): None}
        for peer_id, peer_address in (peer_addresses or {}).items():
            prefix = check_prefix(peer_address)
            if prefix == own_address:
                raise RouteError(f"peer {peer_id!r} has this host's own address {prefix!r}")
            table[prefix] = peer_id
        configured: set[str] = set()
        for prefix, peer_id in routes:
            check_prefix(prefix)
            if prefix in configured:
                raise RouteError(f"prefix {prefix!r} has more than one route")
            configured.add(prefix)
            table[prefix] = peer_id
        self._table = table

    def routes(self) -> list[Route]:
        """Every route, longest prefix first (the order a lookup prefers them)."""
        ordered = sorted(self._table.items(), key=lambda item: (-len(item[0]), item[0]))
        return [Route(prefix, peer_id) for prefix, peer_id in ordered]

    def resolve(self, destination: str) -> Route | None:
        """The route for ``destination``, or None when no prefix matches (F02 unreachable)."""
        table = self._table
        candidate = destination
        while True:
            if candidate in table:
                return Route(candidate, table[candidate])
            cut = candidate.rfind(".")
            if cut < 0:
                break
            candidate = candidate[:cut]
        if "" in table:
            return Route("", table[""])
        return None
