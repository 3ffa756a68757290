"""The engine's link to a connector process (proposal 2), in one process but over a real Connector
API on a unix socket, with real SQLite files on both sides: the engine applies the connector's
changes once, skips its own echoes, pushes its settlement effects, and a restarted link replays
nothing twice."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from connector_harness import ServedApi, with_served_api

from host.connector.durable_clearing import AccountLimits, DurableClearing
from host.connector.ports import MessageRefused
from host.engine import Engine, Policy, SendResult
from host.remote_connector import RemoteConnector, channel_to
from host.store.sqlite import SqliteStore
from tests.polling import wait_until_async

POLICY = Policy(settle_threshold=-300, settle_to=0, min_balance=-1000, max_balance=1000)


class Ledger:
    """A SettlementPort that pays at once (its own idempotency by key)."""

    def __init__(self) -> None:
        self.paid: dict[str, int] = {}

    async def send_money(self, account_id: str, ledger_amount: int, key: str) -> SendResult:
        self.paid.setdefault(key, ledger_amount)
        return SendResult(f"L-{key}", completed=True)

    async def acknowledge_incoming(self, settlement_id: str) -> None:
        return None


class NoMessages:
    async def receive(self, account_id: str, data: bytes) -> bytes:
        raise MessageRefused("not in this test")


class NoPeers:
    async def send_settlement_message(self, account_id: str, data: bytes) -> bytes:
        raise AssertionError("not in this test")


@dataclass
class World:
    directory: Path
    clearing: DurableClearing
    address: str
    payments: Ledger

    @contextlib.asynccontextmanager
    async def engine(
        self, *, follow: bool = True
    ) -> AsyncIterator[tuple[Engine, SqliteStore, RemoteConnector]]:
        """An engine process's parts over engine.db, linked to the connector as host.assembly
        links them, running (the link only once the caller runs it, unless ``follow``)."""
        store = await SqliteStore.open(self.directory / "engine.db")
        effects = asyncio.Event()
        in_step = asyncio.Event()
        engine = Engine(
            store,
            {"sim": self.payments},
            rng=random.Random(1),
            journal_clearing=True,
            on_clearing_effect=effects.set,
            connector_in_step=in_step,
        )
        await engine.create_account(
            "bob", adaptor="sim", asset_code="USD", asset_scale=2, ledger_scale=2, policy=POLICY
        )
        channel = channel_to(self.address)
        link = RemoteConnector(
            engine,
            store,
            channel,
            NoMessages(),
            effects=effects,
            address=self.address,
            in_step=in_step,
        )
        tasks = [asyncio.create_task(engine.run_outbox())]
        if follow:
            tasks.append(asyncio.create_task(link.run()))
        try:
            yield engine, store, link
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await channel.close()
            await store.close()


def run(scenario: Callable[[World], Awaitable[None]]) -> None:
    async def in_world(api: ServedApi) -> None:
        await scenario(World(api.directory, api.clearing, api.address, Ledger()))

    with_served_api(in_world, NoPeers(), {"bob": AccountLimits(2, -1000, 1000)})


def test_changes_apply_once_and_settlements_flow_back() -> None:
    async def scenario(world: World) -> None:
        clearing = world.clearing
        async with world.engine() as (engine, store, link):

            async def engine_balance() -> int:
                return (await engine.get_account("bob")).account.balance

            async def in_step() -> bool:
                caught_up = clearing.acknowledged == clearing.last_cursor
                return caught_up and await clearing.balance("bob") == await engine_balance()

            # Packets the connector cleared: -100 each; the third reaches the threshold.
            for n in range(3):
                await clearing.apply_balance_change("bob", -100, f"packet-{n}")
            await wait_until_async(in_step, "engine and connector in step")
            assert await engine_balance() == 0  # settled 300 back up to settle_to
            assert list(world.payments.paid.values()) == [300]
            assert await store.clearing_effects(10) == []  # pushed and forgotten
            assert link.status.pushed == 1
            # The push came back as a logged change (cursor 4) that the engine skipped: had it
            # applied it, its balance would be 300, not the connector's 0.
            assert clearing.last_cursor == 4  # three packets and the pushed debit

    run(scenario)


def test_a_restarted_engine_replays_unacknowledged_changes_once() -> None:
    async def scenario(world: World) -> None:
        clearing = world.clearing
        async with world.engine() as (engine, _, link):
            await clearing.apply_balance_change("bob", -100, "packet-0")
            await wait_until_async(
                lambda: clearing.acknowledged == clearing.last_cursor == 1, "first change acked"
            )
        # The engine is gone; the connector clears on, then forgets nothing.
        await clearing.apply_balance_change("bob", -50, "packet-1")
        # A change the engine applied but never acknowledged (it died in between): replayed.
        async with world.engine() as (engine, _, link):
            await engine.apply_balance_change("bob", -50, "packet-1")
            await wait_until_async(
                lambda: clearing.acknowledged == clearing.last_cursor == 2, "replay acked"
            )
            assert (await engine.get_account("bob")).account.balance == -150
            assert link.status.processed == 2

    run(scenario)


def test_an_idle_engine_counts_itself_connected_once_attached() -> None:
    """Before, the flag was set on the first event: an engine attached to a quiet connector
    showed "NOT connected" (ilp-host status) until a packet came."""

    async def scenario(world: World) -> None:
        async with world.engine() as (_, _, link):
            await wait_until_async(lambda: link.status.connected, "the link to count as connected")
            assert world.clearing.last_cursor == 0  # not one event was sent
            assert link.in_step.is_set(), "nothing logged: nothing to catch up on"

    run(scenario)


def test_an_incoming_settlement_is_credited_after_the_changes_it_paid_for() -> None:
    """The peer settled for packets the connector cleared while the engine was away. Credited
    before the engine applied them, the settlement left the engine owing the peer 500 (past
    the threshold, -300) and it paid the peer back; the credit now waits for the log."""

    async def scenario(world: World) -> None:
        clearing = world.clearing
        for n in range(5):  # the peer's packets: it owes us 500
            await clearing.apply_balance_change("bob", 100, f"packet-{n}")
        async with world.engine(follow=False) as (engine, _, link):
            credit = asyncio.create_task(engine.receive_settlement("L-1", "bob", 500))
            await asyncio.wait({credit}, timeout=0.5)
            assert not credit.done(), "credited before the engine applied its connector's log"
            following = asyncio.create_task(link.run())
            try:
                await credit
                # The five packets were applied first; the credit's own change, pushed to the
                # connector and logged there, may already be the sixth under load.
                assert link.status.processed >= 5
                assert (await engine.get_account("bob")).account.balance == 0
                await wait_until_async(
                    lambda: link.status.pushed == 1, "the credit pushed to the connector"
                )
                assert await clearing.balance("bob") == 0
                assert world.payments.paid == {}, "nothing is owed to the peer: nothing paid"
            finally:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)

    run(scenario)
