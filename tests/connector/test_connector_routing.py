"""Static routing: longest-prefix match on segment boundaries, implicit routes, refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from host.connector.routing import Route, RouteError, RoutingTable, check_prefix

PEERS = {"bob": "test.bob", "carol": "test.carol"}


def table(*routes: tuple[str, str]) -> RoutingTable:
    return RoutingTable("test.alice", PEERS, routes)


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("test.alice", Route("test.alice", None)),
        ("test.alice.wallet.7", Route("test.alice", None)),
        ("test.bob", Route("test.bob", "bob")),
        ("test.bob.x.y", Route("test.bob", "bob")),
        ("test.carol.z", Route("test.carol", "carol")),
    ],
)
def test_own_and_peer_addresses_are_implicit_routes(destination: str, expected: Route) -> None:
    assert table().resolve(destination) == expected


def test_prefixes_match_on_segment_boundaries_only() -> None:
    routes = table()
    assert routes.resolve("test.bobby") is None
    assert routes.resolve("test.alicea") is None
    assert routes.resolve("test.bo") is None


def test_longest_prefix_wins() -> None:
    routes = table(("test.dave", "bob"), ("test.dave.eu", "carol"), ("test", "bob"))
    assert routes.resolve("test.dave.eu.x") == Route("test.dave.eu", "carol")
    assert routes.resolve("test.dave.us") == Route("test.dave", "bob")
    assert routes.resolve("test.erin") == Route("test", "bob")
    assert routes.resolve("g.erin") is None


def test_a_route_under_our_own_address_beats_the_local_route() -> None:
    routes = table(("test.alice.child", "carol"))
    assert routes.resolve("test.alice.child.1") == Route("test.alice.child", "carol")
    assert routes.resolve("test.alice.other").is_local  # type: ignore[union-attr]


def test_a_configured_route_overrides_an_implicit_one() -> None:
    assert table(("test.bob", "carol")).resolve("test.bob.x") == Route("test.bob", "carol")


def test_default_route() -> None:
    routes = table(("", "carol"))
    assert routes.resolve("g.anything.at.all") == Route("", "carol")
    assert routes.resolve("test.bob.1") == Route("test.bob", "bob")


def test_routes_lists_longest_first() -> None:
    prefixes = [route.prefix for route in table(("", "bob"), ("test", "bob")).routes()]
    assert prefixes == ["test.alice", "test.carol", "test.bob", "test", ""]


@pytest.mark.parametrize(
    ("prefix", "words"),
    [
        ("peer", "never forwarded"),
        ("peer.settle", "never forwarded"),
        ("test.", "not an ILP address"),
        ("bogus.x", "not an ILP address"),
        ("test bob", "not an ILP address"),
    ],
)
def test_bad_prefixes_are_refused(prefix: str, words: str) -> None:
    with pytest.raises(RouteError, match=words):
        check_prefix(prefix)
    with pytest.raises(RouteError):
        table((prefix, "bob"))


def test_duplicate_prefix_and_own_address_clash_are_refused() -> None:
    with pytest.raises(RouteError, match="more than one route"):
        table(("test.x", "bob"), ("test.x", "carol"))
    with pytest.raises(RouteError, match="own address"):
        RoutingTable("test.alice", {"bob": "test.alice"})


segment = st.text("abcxyz", min_size=1, max_size=3)


@given(
    prefixes=st.lists(st.lists(segment, min_size=1, max_size=3), max_size=8),
    destination=st.lists(segment, min_size=1, max_size=5),
)
def test_resolve_agrees_with_a_brute_force_search(
    prefixes: list[list[str]], destination: list[str]
) -> None:
    routes = [(".".join(["test", *segments]), f"p{i}") for i, segments in enumerate(prefixes)]
    unique = dict(routes)  # later duplicates win, as a plain dict would keep them
    built = RoutingTable("g.self", {}, list(unique.items()))
    target = ".".join(["test", *destination])
    matching = [p for p in unique if target == p or target.startswith(p + ".")]
    found = built.resolve(target)
    if not matching:
        assert found is None
    else:
        best = max(matching, key=len)
        assert found == Route(best, unique[best])
