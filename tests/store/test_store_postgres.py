"""The PostgreSQL store beyond the contract suite: several instances on one database (migrations
at once, one housekeeping leader, leases left to their holders), clear refusals."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import psycopg
import pytest

from host.engine.model import Direction, SettlementState
from host.store import SchemaTooNew, StoreError
from host.store.postgres import PostgresStore
from host.store.postgres_schema import (
    LEADER_LOCK,
    LOCK_NAMESPACE,
    MIGRATIONS,
    Migration,
    migrate,
    schema_version,
)
from host.store.rows import (
    ACCOUNT_COLUMNS,
    SETTLEMENT_COLUMNS,
    account_values,
    settlement_values,
)
from tests.postgres_server import PostgresServer
from tests.store.test_store_contract import account, outgoing


def test_instances_starting_at_once_migrate_the_database_once(postgres: PostgresServer) -> None:
    url = postgres.new_schema()

    async def main() -> None:
        stores = await asyncio.gather(*(PostgresStore.open(url) for _ in range(4)))
        for store in stores:
            await store.close()

    asyncio.run(main())
    assert postgres.psql("SELECT version FROM schema_version", url) == str(len(MIGRATIONS))
    assert postgres.psql("SELECT count(*) FROM schema_version", url) == "1"


def test_migrations_apply_in_order_once_and_atomically(postgres: PostgresServer) -> None:
    url = postgres.new_schema()
    m1: Migration = ("CREATE TABLE things (n integer)", "INSERT INTO things VALUES (1)")
    m2: Migration = ("INSERT INTO things VALUES (2)",)
    broken: Migration = ("INSERT INTO things VALUES (3)", "THIS IS NOT SQL")

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            assert await schema_version(conn) == 0
            assert await migrate(conn, [m1]) == 0
            assert await migrate(conn, [m1, m2]) == 1
            assert await migrate(conn, [m1, m2]) == 2  # nothing left to do
            with pytest.raises(psycopg.errors.SyntaxError):
                await migrate(conn, [m1, m2, broken])
            assert await schema_version(conn) == 2  # the broken one left nothing behind
            cursor = await conn.execute("SELECT n FROM things ORDER BY n")
            assert [row[0] for row in await cursor.fetchall()] == [1, 2]
            with pytest.raises(SchemaTooNew, match=r"version 2 .* only up to 1"):
                await migrate(conn, [m1])

    asyncio.run(main())


def test_an_older_database_gets_running_totals_that_every_writer_keeps(
    postgres: PostgresServer,
) -> None:
    url = postgres.new_schema()
    big = 10**70
    insert = f"INSERT INTO settlements ({SETTLEMENT_COLUMNS}) VALUES ({', '.join(['%s'] * 14)})"

    async def main() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            await migrate(conn, MIGRATIONS[:3])  # the schema before the running totals
            await conn.execute(
                f"INSERT INTO accounts ({ACCOUNT_COLUMNS}) VALUES ({', '.join(['%s'] * 15)})",
                account_values(account(), int),
            )
            for row in (
                replace(outgoing("o1"), amount=big),
                replace(outgoing("o2"), state=SettlementState.COMPLETED, amount=3),
                replace(
                    outgoing("i1"),
                    direction=Direction.INCOMING,
                    state=SettlementState.CREDITED,
                    amount=big * 2,
                ),
            ):
                await conn.execute(insert, settlement_values(row, int))
        store = await PostgresStore.open(url)
        try:
            assert await store.settled_totals("alice") == (big + 3, big * 2)
            async with store.transaction() as tx:
                await tx.insert_settlement(replace(outgoing("o3"), amount=big))
            # A writer that knows nothing of the totals (a host of the older version still
            # running during an upgrade) keeps them all the same.
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(
                    insert, settlement_values(replace(outgoing("o4"), amount=5), int)
                )
            assert await store.settled_totals("alice") == (2 * big + 8, big * 2)
        finally:
            await store.close()

    asyncio.run(main())


def test_a_database_from_a_newer_host_is_refused_untouched(postgres: PostgresServer) -> None:
    url = postgres.new_schema()

    async def open_close() -> None:
        store = await PostgresStore.open(url)
        await store.close()

    asyncio.run(open_close())
    postgres.psql("UPDATE schema_version SET version = 99", url)
    with pytest.raises(SchemaTooNew, match=r"schema version 99 .* newer host"):
        asyncio.run(open_close())
    assert postgres.psql("SELECT version FROM schema_version", url) == "99"


def test_an_unreachable_server_is_a_clear_error_without_the_password(
    postgres: PostgresServer,
) -> None:
    url = f"postgresql://postgres:s3cret@/postgres?host={postgres.root}/nowhere"

    async def main() -> None:
        await PostgresStore.open(url, connect_timeout=1.0)

    with pytest.raises(StoreError, match="cannot connect to the PostgreSQL database") as caught:
        asyncio.run(main())
    assert "s3cret" not in str(caught.value)


def test_one_instance_leads_and_another_takes_over_when_it_dies(postgres: PostgresServer) -> None:
    url = postgres.new_schema()
    other_deployment = postgres.new_schema()

    async def main() -> None:
        first, second = await PostgresStore.open(url), await PostgresStore.open(url)
        elsewhere = await PostgresStore.open(other_deployment)
        try:
            assert await first.try_lead()
            assert not await second.try_lead()
            assert await first.try_lead()  # kept
            assert await elsewhere.try_lead()  # another schema is another deployment
            # The leader's process dies: the server ends its session, and so its lead (the call
            # waits, up to 30 s, until that session is gone).
            schema = postgres.psql("SELECT current_schema()", url)
            killed = postgres.psql(
                "SELECT pg_terminate_backend(pid, 30000) FROM pg_locks "
                "WHERE locktype = 'advisory' "
                f"AND classid = {LOCK_NAMESPACE + LEADER_LOCK} "
                f"AND objid::bigint = (hashtext('{schema}')::bigint + 4294967296) % 4294967296"
            )
            assert killed == "t"
            assert await second.try_lead()
            assert not await first.try_lead()
        finally:
            for store in (first, second, elsewhere):
                await store.close()

    asyncio.run(main())


def test_opening_leaves_the_leases_of_other_instances_alone(postgres: PostgresServer) -> None:
    url = postgres.new_schema()

    async def main() -> None:
        first = await PostgresStore.open(url)
        try:
            async with first.transaction() as tx:
                await tx.insert_account(account())
                await tx.insert_settlement(outgoing("s1", 10.0))
            assert len(await first.claim_outbox(10, now=100.0, lease=30.0)) == 1
            second = await PostgresStore.open(url)
            try:
                assert await second.claim_outbox(10, now=110.0, lease=30.0) == []
                assert await second.resume_outbox(now=110.0) == 1  # due, but still leased
                assert await second.claim_outbox(10, now=110.0, lease=30.0) == []
                assert [r.id for r in await second.claim_outbox(10, 131.0, 30.0)] == ["s1"]
            finally:
                await second.close()
        finally:
            await first.close()

    asyncio.run(main())
