"""Several connector instances on one PostgreSQL database (host.store.postgres_clearing), against
a real server: one set of books, credit limits over what every instance applied, each change
logged once under one cursor whichever instance serves the log, the in-flight journal resolved
by any instance once, crossing packets without deadlock, and the books beside the engine's
store in one schema. What every backend does is in test_durable_clearing*.py."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Awaitable, Callable

import pytest

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.connector.durable_clearing import AccountLimits, DurableClearing, KeyConflict
from host.connector.middleware import changes_of, packet_id
from host.store import SchemaTooNew, StoreError
from host.store.postgres import PostgresStore
from host.store.postgres_clearing import PostgresClearing
from tests.postgres_server import PostgresServer

LIMITS = {
    "alice": AccountLimits(asset_scale=9, min_balance=-(10**40), max_balance=10**40),
    "bob": AccountLimits(asset_scale=9, min_balance=-1000, max_balance=1000),
}
BIG = 10**35  # far beyond 64 bits


def with_instances(
    url: str, count: int, scenario: Callable[[list[DurableClearing]], Awaitable[None]]
) -> None:
    async def main() -> None:
        instances = [await DurableClearing.open(url, LIMITS) for _ in range(count)]
        try:
            await scenario(instances)
        finally:
            for instance in instances:
                await instance.close()

    asyncio.run(main())


def packet(n: int, source: str, target: str, amount: int) -> InFlight:
    prepare = f"prepare {n} {source} {target}".encode()
    return InFlight(
        key=packet_id(source, prepare).hex(),
        source=source,
        source_id=hashlib.sha256(prepare).digest(),
        target=target,
        target_id=hashlib.sha256(prepare + b"out").digest(),
        amount=amount,
        expires_at=1_800_000_000.0,
        condition=hashlib.sha256(prepare + b"fulfillment").digest(),
    )


def test_instances_share_balances_and_the_credit_limit(postgres: PostgresServer) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        assert await a.apply_balance_change("bob", 990, "k1") == 990
        # b checks against what a committed: 10 more fit under max_balance 1000, 11 do not.
        assert await b.check_credit("bob", 10)
        assert not await b.check_credit("bob", 11)
        assert await b.apply_balance_change("bob", -1990, "k2") == -1000
        assert not await a.check_credit("bob", -1)
        assert await a.check_credit("bob", 2000)
        assert await a.balance("bob") == await b.balance("bob") == -1000

    with_instances(postgres.new_schema(), 2, scenario)


def test_concurrent_changes_on_two_instances_count_once_and_are_logged_once(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        keys = [f"change-{n}" for n in range(150)]
        # Every key goes to both instances at once: one applies it, the other replays it.
        results = await asyncio.gather(
            *(
                instance.apply_balance_change("alice", BIG, key)
                for key in keys
                for instance in (a, b)
            )
        )
        assert await a.balance("alice") == await b.balance("alice") == BIG * len(keys)
        assert sorted(set(results)) == [BIG * n for n in range(1, len(keys) + 1)]
        # Both instances serve one log: the same cursors, each change once, gap-free.
        from_a = await a.events_after(0, 1000)
        from_b = await b.events_after(0, 1000)
        assert from_a == from_b
        assert [e.cursor for e in from_a] == list(range(1, len(keys) + 1))
        assert sorted(e.idempotency_key for e in from_a) == sorted(keys)
        # Per account, the log is in the order the balances moved.
        assert [e.balance for e in from_a] == [BIG * n for n in range(1, len(keys) + 1)]
        # An acknowledgement through one instance is seen by the other.
        await a.acknowledge(100)
        await b.refresh_log()
        assert (b.acknowledged, b.last_cursor) == (100, 150)
        assert [e.cursor for e in await b.events_after(0, 1000)] == list(range(101, 151))
        with pytest.raises(KeyConflict):
            await b.apply_balance_change("bob", 1, "change-1")  # a's key, another account

    with_instances(postgres.new_schema(), 2, scenario)


def test_a_change_committed_on_another_instance_wakes_a_waiting_engine_stream(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        waiting = asyncio.create_task(a.wait_beyond(0))
        await asyncio.sleep(0.3)
        assert not waiting.done()
        await b.apply_balance_change("bob", 5, "from-b")
        await asyncio.wait_for(waiting, 10)
        assert [e.idempotency_key for e in await a.events_after(0, 10)] == ["from-b"]

    with_instances(postgres.new_schema(), 2, scenario)


def test_a_packet_journaled_by_one_instance_is_resolved_once_by_another(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        sent = packet(1, "alice", "bob", 40)
        await a.journal_packet(sent)
        # a dies with the packet in flight; b's resolver finds it and resolves it.
        assert await b.unresolved_packets() == [sent]
        fulfillment = b"f" * 32
        changes = changes_of(sent)
        assert (
            await b.resolve_packet(sent, Resolution.FULFILLED, fulfillment, changes)
            == Resolution.FULFILLED
        )
        # a, late, resolves it otherwise: the first resolution stands, nothing applied again.
        assert await a.resolve_packet(sent, Resolution.REJECTED, b"", ()) == Resolution.FULFILLED
        assert await a.resolve_packet(sent, Resolution.FULFILLED, fulfillment, changes) == (
            Resolution.FULFILLED
        )
        assert (await a.balance("alice"), await a.balance("bob")) == (40, -40)
        assert await a.unresolved_packets() == []
        outcome = await a.packet_outcome("alice", sent.source_id)
        assert outcome.fulfillment == fulfillment

    with_instances(postgres.new_schema(), 2, scenario)


def test_crossing_packets_on_two_instances_neither_deadlock_nor_drift(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        # alice -> bob through a, bob -> alice through b, at once: each locks both accounts.
        there = [packet(n, "alice", "bob", 3) for n in range(60)]
        back = [packet(n, "bob", "alice", 2) for n in range(60)]

        async def fulfill(instance: DurableClearing, sent: InFlight) -> Resolution:
            await instance.journal_packet(sent)
            return await instance.resolve_packet(
                sent, Resolution.FULFILLED, b"f" * 32, changes_of(sent)
            )

        done = await asyncio.wait_for(
            asyncio.gather(*(fulfill(a, p) for p in there), *(fulfill(b, p) for p in back)),
            60,
        )
        assert set(done) == {Resolution.FULFILLED}
        # bob: -3 per packet to him, +2 per packet from him; alice the opposite.
        assert await a.balance("bob") == 60 * (-3 + 2)
        assert await b.balance("alice") == 60 * (3 - 2)
        assert len(await a.events_after(0, 1000)) == 4 * 60

    with_instances(postgres.new_schema(), 2, scenario)


def test_the_books_live_beside_the_engine_store_in_one_schema(postgres: PostgresServer) -> None:
    url = postgres.new_schema()

    async def main() -> None:
        store = await PostgresStore.open(url)
        books = await DurableClearing.open(url, LIMITS)
        try:
            await books.apply_balance_change("bob", -7, "k")
            assert await store.list_accounts() == []  # the engine's own accounts table
            assert await books.balance("bob") == -7
        finally:
            await books.close()
            await store.close()

    asyncio.run(main())
    tables = (
        postgres.psql("SELECT version FROM schema_version", url),
        postgres.psql("SELECT version FROM clearing_schema_version", url),
    )
    assert all(version.isdigit() and int(version) >= 1 for version in tables)


def test_books_of_a_newer_host_are_refused_untouched(postgres: PostgresServer) -> None:
    url = postgres.new_schema()
    with_instances(url, 1, lambda instances: asyncio.sleep(0))
    postgres.psql("UPDATE clearing_schema_version SET version = 99", url)
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        with_instances(url, 1, lambda instances: asyncio.sleep(0))
    assert postgres.psql("SELECT version FROM clearing_schema_version", url) == "99"


def test_an_unreachable_server_is_one_line_without_the_password(postgres: PostgresServer) -> None:
    url = f"postgresql://postgres:s3cret@/postgres?host={postgres.root}/nowhere"

    async def main() -> None:
        await PostgresClearing.open(url, LIMITS, connect_timeout=1.0)

    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL database") as caught:
        asyncio.run(main())
    assert "s3cret" not in str(caught.value) and "\n" not in str(caught.value)


def test_a_balance_change_is_checked_before_it_reaches_the_database(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        (a,) = instances
        with pytest.raises(KeyConflict):
            await a.resolve_packet(
                packet(9, "alice", "bob", 1),
                Resolution.FULFILLED,
                b"",
                [BalanceChange("bob", -1, "same"), BalanceChange("alice", 1, "same")],
            )
        assert (await a.balance("alice"), await a.balance("bob")) == (0, 0)
        assert await a.events_after(0, 10) == []

    with_instances(postgres.new_schema(), 1, scenario)


def test_packets_in_flight_through_another_instance_count_against_the_limit(
    postgres: PostgresServer,
) -> None:
    async def scenario(instances: list[DurableClearing]) -> None:
        a, b = instances
        to_bob = packet(1, "alice", "bob", 600)
        await a.journal_packet(to_bob)  # out to bob through a, not answered yet
        # a's own packets are its middleware's reservations (the delta it asks about)...
        assert await a.check_credit("bob", -600)
        # ...and b counts them: bob may be owed at most 1000, 600 of which are in flight.
        assert not await b.check_credit("bob", -401)
        assert await b.check_credit("bob", -400)
        from_bob = packet(2, "bob", "alice", 700)
        await a.journal_packet(from_bob)  # in from bob through a
        assert not await b.check_credit("bob", 301)
        assert await b.check_credit("bob", 300)
        # Resolved, they are in flight no more.
        await a.resolve_packet(to_bob, Resolution.REJECTED, b"", ())
        await a.resolve_packet(from_bob, Resolution.REJECTED, b"", ())
        assert await b.check_credit("bob", -1000) and await b.check_credit("bob", 1000)
        # A packet a journaled and died with counts for everyone until it is resolved: here b's
        # resolver takes it over at b's start and holds it as its own.
        left = packet(3, "alice", "bob", 900)
        await a.journal_packet(left)
        assert not await b.check_credit("bob", -101)
        assert await b.unresolved_packets() == [left]
        assert await b.check_credit("bob", -1000)  # b's resolver reserves it now (its delta)

    with_instances(postgres.new_schema(), 2, scenario)
