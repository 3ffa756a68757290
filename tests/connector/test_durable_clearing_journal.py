"""The in-flight journal of the connector's own clearing books (proposal 2), on both backends (the
``books`` fixture: a real SQLite file, a real PostgreSQL server): a
packet journaled survives reopening, its resolution and its balance changes commit together
or not at all, a resolved packet stays resolved, and what a peer is told of its packets."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.connector.durable_clearing import AccountLimits, DurableClearing, KeyConflict
from host.connector.inflight import LOOK_CAP, InFlightResolver
from host.connector.middleware import BalanceMiddleware
from host.ilp.outcome import Outcome, Status

LIMITS = {
    "alice": AccountLimits(asset_scale=6, min_balance=-1000, max_balance=1000),
    "bob": AccountLimits(asset_scale=6, min_balance=-1000, max_balance=1000),
}
FULFILLMENT = bytes(range(32))
PACKET = InFlight(
    key="aa" * 32,
    source="alice",
    source_id=hashlib.sha256(b"from alice").digest(),
    target="bob",
    target_id=hashlib.sha256(b"to bob").digest(),
    amount=40,
    expires_at=1_800_000_000.0,
    condition=hashlib.sha256(FULFILLMENT).digest(),
)
BOTH = [BalanceChange("bob", -40, "ilp-out-k"), BalanceChange("alice", 40, "ilp-in-k")]


def with_clearing(path: Path | str, scenario: Callable[[DurableClearing], Awaitable[None]]) -> None:
    async def main() -> None:
        clearing = await DurableClearing.open(path, LIMITS)
        try:
            await scenario(clearing)
        finally:
            await clearing.close()

    asyncio.run(main())


def test_a_journaled_packet_survives_reopening_until_resolved(books: str) -> None:
    path = books

    async def journal(clearing: DurableClearing) -> None:
        await clearing.journal_packet(PACKET)
        await clearing.journal_packet(PACKET)  # a replay changes nothing
        assert (await clearing.packet_outcome("alice", PACKET.source_id)).status == Status.PENDING

    async def resolve(clearing: DurableClearing) -> None:
        assert await clearing.unresolved_packets() == [PACKET]
        await clearing.resolve_packet(PACKET, Resolution.FULFILLED, FULFILLMENT, BOTH)
        assert await clearing.unresolved_packets() == []
        assert (await clearing.balance("bob"), await clearing.balance("alice")) == (-40, 40)
        answer = await clearing.packet_outcome("alice", PACKET.source_id)
        assert (answer.status, answer.fulfillment) == (Status.FULFILLED, FULFILLMENT)
        # Resolved stays resolved: a second resolution applies nothing.
        await clearing.resolve_packet(PACKET, Resolution.REJECTED, b"", BOTH)
        assert (await clearing.balance("bob"), await clearing.balance("alice")) == (-40, 40)
        assert [e.idempotency_key for e in await clearing.events_after(0, 10)] == [
            "ilp-out-k",
            "ilp-in-k",
        ]
        # Another peer asking about the same id, or an unknown id: never seen.
        assert (await clearing.packet_outcome("bob", PACKET.source_id)).status == Status.UNKNOWN
        assert (await clearing.packet_outcome("alice", bytes(32))).status == Status.UNKNOWN

    with_clearing(path, journal)
    with_clearing(path, resolve)


def test_a_resolution_whose_change_fails_applies_nothing(books: str) -> None:
    async def scenario(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("alice", 1, "ilp-in-k")  # the key, for another delta
        await clearing.journal_packet(PACKET)
        with pytest.raises(KeyConflict):
            await clearing.resolve_packet(PACKET, Resolution.FULFILLED, FULFILLMENT, BOTH)
        assert await clearing.balance("bob") == 0, "bob's change rolled back with the rest"
        assert await clearing.unresolved_packets() == [PACKET]
        # Only the next hop's side (the source was refused): the packet is FORWARDED.
        await clearing.resolve_packet(PACKET, Resolution.FORWARDED, FULFILLMENT, BOTH[:1])
        assert await clearing.balance("bob") == -40
        assert (await clearing.packet_outcome("alice", PACKET.source_id)).status == Status.REJECTED

    with_clearing(books, scenario)


def test_a_packet_delivered_here_is_recorded_with_its_fulfillment(books: str) -> None:
    delivered = InFlight("bb" * 32, "alice", PACKET.source_id, None, b"", 40, 1.0, PACKET.condition)

    async def scenario(clearing: DurableClearing) -> None:
        credit = [BalanceChange("alice", 40, "ilp-in-here")]
        await clearing.resolve_packet(delivered, Resolution.FULFILLED, FULFILLMENT, credit)
        assert await clearing.unresolved_packets() == []
        answer = await clearing.packet_outcome("alice", PACKET.source_id)
        assert (answer.status, answer.fulfillment) == (Status.FULFILLED, FULFILLMENT)
        assert await clearing.forget_keys(older_than=-1.0) == 1
        assert (await clearing.packet_outcome("alice", PACKET.source_id)).status == Status.UNKNOWN

    with_clearing(books, scenario)


def test_books_of_the_first_version_is_migrated_forward(tmp_path: Path) -> None:
    path = tmp_path / "connector.db"

    async def write(clearing: DurableClearing) -> None:
        await clearing.apply_balance_change("bob", -5, "old-key")

    with_clearing(path, write)
    # Back to version 1, as a host before the journal left it.
    connection = sqlite3.connect(path)
    connection.execute("DROP TABLE packets")
    connection.execute("DROP TABLE settled")  # version 3's, which comes after the journal
    connection.execute("UPDATE schema_version SET version = 1")
    connection.commit()
    connection.close()

    async def reopen(clearing: DurableClearing) -> None:
        assert await clearing.balance("bob") == -5
        await clearing.journal_packet(PACKET)
        assert await clearing.unresolved_packets() == [PACKET]

    with_clearing(path, reopen)


@pytest.mark.parametrize("ending", [Resolution.REJECTED, Resolution.FULFILLED])
def test_a_packet_resolved_on_the_shared_books_is_released_at_the_next_look(
    books: str, ending: Resolution
) -> None:
    """A starting instance's resolver takes over every packet the journal has unresolved,
    including one another instance is still forwarding. Once that instance resolved it, the
    resolver releases it at its next look at the journal, without waiting for the expiry and
    without asking the next hop again, and applies nothing. On PostgreSQL the two are two
    instances on one schema; an SQLite file has one owner, which plays both parts."""
    clock = [PACKET.expires_at - 30]
    asked: list[str] = []

    async def next_hop_has_not_seen_it(peer: str, packet: InFlight) -> Outcome:
        asked.append(peer)
        return Outcome(Status.UNKNOWN)

    async def main() -> None:
        forwarding = await DurableClearing.open(books, LIMITS)
        starting = forwarding
        if not books.endswith(".db"):
            starting = await DurableClearing.open(books, LIMITS)
        try:
            await forwarding.journal_packet(PACKET)
            balances = BalanceMiddleware(starting)
            resolver = InFlightResolver(
                starting, balances, next_hop_has_not_seen_it, now=lambda: clock[0]
            )
            assert await resolver.load() == 1
            assert balances.reserved("bob") == (0, 40)
            (entry,) = resolver.waiting()
            await resolver.resolve(entry)  # pending here, never seen there: look again soon
            assert asked == ["bob"]
            assert clock[0] < entry.next_at < clock[0] + LOOK_CAP < PACKET.expires_at
            clock[0] = entry.next_at
            await resolver.resolve(entry)  # still pending: only the journal was looked at
            assert asked == ["bob"] and resolver.waiting() == [entry]

            if ending == Resolution.FULFILLED:
                await forwarding.resolve_packet(PACKET, ending, FULFILLMENT, BOTH)
            else:
                await forwarding.resolve_packet(PACKET, ending, b"", ())
            clock[0] = entry.next_at
            await resolver.resolve(entry)
            assert resolver.waiting() == [] and asked == ["bob"]
            assert balances.reserved("bob") == (0, 0)
            assert resolver.resolved[ending] == 1
            # Applied once, by the instance that resolved it; the credit is whole again.
            moved = 40 if ending == Resolution.FULFILLED else 0
            assert (await starting.balance("alice"), await starting.balance("bob")) == (
                moved,
                -moved,
            )
            assert await starting.check_credit("bob", -1000 + moved)
        finally:
            if starting is not forwarding:
                await starting.close()
            await forwarding.close()

    asyncio.run(main())
