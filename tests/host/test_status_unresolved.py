"""``ilp-host peers`` / ``status``: the unresolved packets (the clearing retry queue) and the
count of packets a peer could not be asked about."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from host.pb.ilphost.admin.v1 import admin_pb2
from host.status import render_peers
from sdk.pb.ilphost.types.v1 import types_pb2

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)


def test_unresolved_packets_and_unsupported_queries_are_listed_under_the_peers() -> None:
    listing = admin_pb2.ListPeersResponse(
        address="test.alice", peers=[admin_pb2.Peer(id="bob"), admin_pb2.Peer(id="carl")]
    )
    bob = listing.peers[0]
    asking = bob.unresolved_packets.add(
        key="ab" * 32, amount=types_pb2.Amount(value="12345", scale=2), attempts=0
    )
    asking.expires_at.FromDatetime(NOW + timedelta(seconds=20))
    retried = bob.unresolved_packets.add(
        key="cd" * 32,
        amount=types_pb2.Amount(value="5", scale=0),
        fulfilled=True,
        attempts=3,
        last_error="database is locked",
    )
    retried.expires_at.FromDatetime(NOW - timedelta(seconds=90))
    listing.peers[1].outcome_unsupported = 2
    lines = render_peers(listing, NOW).splitlines()
    start = lines.index("unresolved packets (outcome not known yet)")
    assert lines[start + 1].split() == [
        *("PEER", "PACKET", "AMOUNT", "EXPIRES", "STATE", "ATTEMPTS", "LAST", "ERROR")
    ]
    assert lines[start + 2].split() == [
        *("bob", "ab" * 8, "123.45", "in", "20s", "asking", "the", "peer", "0", "-")
    ]
    assert lines[start + 3].split() == [
        *("bob", "cd" * 8, "5", "1m30s", "ago", "debit", "to", "record", "3"),
        *("database", "is", "locked"),
    ]
    assert lines[-1] == "packets released without an answer to peer.outcome: carl 2"
    # Nothing unresolved: no such lines at all.
    quiet = admin_pb2.ListPeersResponse(address="test.alice", peers=[admin_pb2.Peer(id="bob")])
    assert "unresolved" not in render_peers(quiet, NOW)
