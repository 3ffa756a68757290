"""The engine against a real SQLite store: validation, idempotency, settlement, the outbox,
incoming credits, restarts. The ledger is engine_fakes.FakeLedger (its own idempotency)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from engine_fakes import FakeClock, FakeLedger, add_account, open_engine

from host.engine import (
    AlreadyExists,
    Direction,
    Engine,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Policy,
    Settlement,
    SettlementPort,
    SettlementState,
)
from host.store.sqlite import SqliteStore
from sdk.backoff import Backoff
from tests.polling import wait_until_async

Scenario = Callable[[SqliteStore, Engine, FakeLedger, FakeClock], Awaitable[None]]


def run(tmp_path: Path, scenario: Scenario, *, serving: bool = True) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        ports: dict[str, SettlementPort] = {"sim": ledger} if serving else {}
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            await scenario(store, engine, ledger, clock)
        finally:
            await store.close()

    asyncio.run(main())


async def drain(engine: Engine, clock: FakeClock, passes: int = 20) -> None:
    """Let the outbox work until nothing is due, moving time past every backoff."""
    for _ in range(passes):
        clock.advance(120)
        if not await engine.outbox.run_once():
            return


# -- accounts -------------------------------------------------------------------------------------


def test_accounts_are_created_idempotently_and_validated(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        await add_account(engine)  # same configuration: fine
        with pytest.raises(AlreadyExists, match="another configuration"):
            await add_account(engine, asset_scale=3)
        with pytest.raises(InvalidArgument, match="account id"):
            await add_account(engine, "no spaces")
        with pytest.raises(InvalidArgument, match="settle_to"):
            await add_account(engine, "bob", policy=Policy(-10, -20, -30, 0))
        with pytest.raises(InvalidArgument, match="asset_scale"):
            await add_account(engine, "bob", asset_scale=256)
        with pytest.raises(NotFound, match="nobody"):
            await engine.get_account("nobody")
        assert [v.account.id for v in await engine.list_accounts()] == ["alice"]

    run(tmp_path, scenario)


def test_policy_updates_keep_balances(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", 700)
        wider = Policy(-2000, -100, -9000, 9000)
        updated = await engine.update_policy("alice", wider)
        assert (updated.policy, updated.balance) == (wider, 700)
        assert (await engine.get_account("alice")).account.policy == wider
        with pytest.raises(InvalidArgument):
            await engine.update_policy("alice", Policy(1, 0, 0, 0))

    run(tmp_path, scenario)


# -- clearing balance -----------------------------------------------------------------------------


def test_balance_changes_are_idempotent_by_key(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        assert await engine.apply_balance_change("alice", 250, "p1") == 250
        assert await engine.apply_balance_change("alice", 100, "p2") == 350
        assert await engine.apply_balance_change("alice", 250, "p1") == 250  # replay: first result
        assert (await engine.get_account("alice")).account.balance == 350
        with pytest.raises(AlreadyExists, match="p1"):
            await engine.apply_balance_change("alice", 251, "p1")
        await add_account(engine, "bob")
        with pytest.raises(AlreadyExists):
            await engine.apply_balance_change("bob", 250, "p1")
        assert (await engine.get_account("bob")).account.balance == 0
        assert await engine.apply_balance_change("alice", 5) == 355  # no key: not deduplicated
        assert await engine.apply_balance_change("alice", 5) == 360

    run(tmp_path, scenario)


def test_bad_balance_changes_leave_everything_untouched(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", 10, "ok")
        with pytest.raises(NotFound):
            await engine.apply_balance_change("ghost", 10, "k")
        with pytest.raises(InvalidArgument, match="digits"):
            await engine.apply_balance_change("alice", 10**80, "k")
        with pytest.raises(InvalidArgument, match="idempotency key"):
            await engine.apply_balance_change("alice", 10, "")
        with pytest.raises(InvalidArgument, match="integer"):
            await engine.apply_balance_change("alice", 1.5, "k")  # type: ignore[arg-type]
        await engine.update_policy("alice", Policy(-(10**77), -(10**77), -(10**77), 0))
        await engine.apply_balance_change("alice", -(10**77) + 1)
        with pytest.raises(FailedPrecondition, match="78 digits"):
            await engine.apply_balance_change("alice", -(10**78 - 1), "k")
        view = await engine.get_account("alice")
        assert view.account.balance == -(10**77) + 11
        # "k" was never recorded: it is still free to use.
        assert await engine.apply_balance_change("alice", 1, "k") == -(10**77) + 12

    run(tmp_path, scenario)


def test_credit_check_uses_the_limits(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", 2500)
        assert await engine.check_credit("alice", 500)
        assert not await engine.check_credit("alice", 501)
        assert await engine.check_credit("alice", -4999)
        with pytest.raises(NotFound):
            await engine.check_credit("ghost", 1)

    run(tmp_path, scenario)


# -- outgoing settlements ------------------------------------------------------------------------


def test_crossing_the_threshold_debits_and_queues_then_the_outbox_pays(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        assert await engine.apply_balance_change("alice", -999) == -999  # not yet
        assert await engine.list_settlements() == []
        # -1000 reached: settle 800 back up to settle_to; the returned balance includes it.
        assert await engine.apply_balance_change("alice", -1) == -200
        [row] = await engine.list_settlements()
        assert (row.direction, row.state, row.amount, row.ledger_amount) == (
            Direction.OUTGOING,
            SettlementState.PENDING,
            800,
            800,
        )
        assert (await engine.get_account("alice")).pending_settlement == 800
        assert await engine.outbox.run_once() == 1
        [row] = await engine.list_settlements()
        assert (row.state, row.ledger_settlement_id, row.attempts) == (
            SettlementState.COMPLETED,
            "tx-1",
            1,
        )
        assert ledger.payments[row.id].amount == 800
        assert (await engine.get_account("alice")).pending_settlement == 0

    run(tmp_path, scenario)


def test_never_settles_zero_the_leftover_waits_for_a_whole_unit(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        # Account in 1/10^4, ledger in 1/100: settling 80 (0.008) is less than one ledger unit.
        await add_account(
            engine, asset_scale=4, ledger_scale=2, policy=Policy(-100, -20, -500, 500)
        )
        assert await engine.apply_balance_change("alice", -100) == -20
        assert await engine.list_settlements() == []
        assert (await engine.get_account("alice")).account.outgoing_leftover == 80
        # The next settlement carries the leftover: 80 + 80 = 160 -> 1 ledger unit, 60 left.
        assert await engine.apply_balance_change("alice", -80) == -20
        [row] = await engine.list_settlements()
        assert (row.amount, row.ledger_amount) == (100, 1)
        assert (await engine.get_account("alice")).account.outgoing_leftover == 60
        # A manual settlement below one unit is refused and changes nothing.
        before = await engine.get_account("alice")
        with pytest.raises(FailedPrecondition, match="less than one unit"):
            await engine.settle("alice", 10)
        assert await engine.get_account("alice") == before

    run(tmp_path, scenario)


def test_transient_failures_retry_with_the_same_key_and_backoff(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        ledger.script.extend(["transient", "lost", "transient"])
        assert await engine.outbox.run_once() == 1
        [row] = await engine.list_settlements()
        assert (row.state, row.attempts, row.last_error) == (
            SettlementState.PENDING,
            1,
            "ledger unreachable",
        )
        assert row.next_attempt_at is not None
        # 0.2 s, jittered by up to half either way (sdk.backoff)
        assert clock.now() + 0.1 <= row.next_attempt_at <= clock.now() + 0.3
        assert await engine.outbox.run_once() == 0  # not due yet
        delays = []
        for _ in range(3):
            clock.advance(100)
            await engine.outbox.run_once()
            [row] = await engine.list_settlements()
            if row.next_attempt_at is not None:
                delays.append(row.next_attempt_at - clock.now())
        assert row.state is SettlementState.COMPLETED
        assert row.attempts == 4
        assert ledger.calls[row.id] == 4  # every attempt with the one key...
        assert ledger.paid[row.id] == 1  # ...and the ledger paid once
        assert len(ledger.payments) == 1
        assert 0.2 <= delays[0] <= 0.6 and 0.4 <= delays[1] <= 1.2  # exponential, jittered

    run(tmp_path, scenario)


def test_a_permanent_refusal_parks_the_settlement_debited_until_retried(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        ledger.script.append("permanent")
        await engine.outbox.run_once()
        [row] = await engine.list_settlements()
        assert (row.state, row.last_error) == (
            SettlementState.FAILED,
            "peer account unknown to the ledger",
        )
        view = await engine.get_account("alice")
        assert (view.account.balance, view.pending_settlement) == (-200, 800)  # no refund
        await drain(engine, clock)
        assert (await engine.get_settlement(row.id)).state is SettlementState.FAILED
        retried = await engine.retry_settlement(row.id)
        assert retried.state is SettlementState.PENDING
        await drain(engine, clock)
        assert (await engine.get_settlement(row.id)).state is SettlementState.COMPLETED
        assert ledger.paid[row.id] == 1
        with pytest.raises(FailedPrecondition, match="only failed"):
            await engine.retry_settlement(row.id)
        with pytest.raises(NotFound):
            await engine.retry_settlement("nope")

    run(tmp_path, scenario)


def test_automatic_settlement_pauses_while_a_settlement_is_parked(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        ledger.script.append("permanent")
        await engine.outbox.run_once()
        [failed] = await engine.list_settlements()
        assert failed.state is SettlementState.FAILED
        # Below the threshold again: nothing more is debited, the balance tells what we owe.
        assert await engine.apply_balance_change("alice", -1500) == -1700
        assert len(await engine.list_settlements()) == 1
        assert not await engine.check_credit("alice", -3301)
        await engine.retry_settlement(failed.id)
        await drain(engine, clock)
        assert await engine.apply_balance_change("alice", -1) == -200  # settling resumes
        rows = await engine.list_settlements()
        assert [r.amount for r in rows] == [1501, 800]

    run(tmp_path, scenario)


def test_submitted_settlements_are_polled_until_final(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        ledger.script.extend(["pending", "pending"])
        await engine.outbox.run_once()
        [row] = await engine.list_settlements()
        assert row.state is SettlementState.SUBMITTED
        assert row.ledger_settlement_id == "tx-1"
        assert (await engine.get_account("alice")).pending_settlement == 800
        await drain(engine, clock)
        [row] = await engine.list_settlements()
        assert row.state is SettlementState.COMPLETED
        assert ledger.calls[row.id] == 3 and ledger.paid[row.id] == 1

    run(tmp_path, scenario)


def test_an_adaptor_that_is_not_serving_is_a_transient_failure(tmp_path: Path) -> None:
    async def scenario(store: SqliteStore, engine: Engine, *_: object) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", -1000)
        await engine.outbox.run_once()
        [row] = await engine.list_settlements()
        assert (row.state, row.last_error) == (
            SettlementState.PENDING,
            "adaptor 'sim' is not serving",
        )
        with pytest.raises(FailedPrecondition, match="not serving"):
            await engine.settle("alice", 100)

    run(tmp_path, scenario, serving=False)


def test_manual_settlement_by_amount_or_down_to_settle_to(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        with pytest.raises(FailedPrecondition, match="nothing"):
            await engine.settle("alice")
        with pytest.raises(FailedPrecondition, match="nothing is owed"):
            await engine.settle("alice", 10)
        await engine.apply_balance_change("alice", -900)
        with pytest.raises(FailedPrecondition, match="more than what we owe"):
            await engine.settle("alice", 901)
        first = await engine.settle("alice", 300, "op-1")
        assert (first.amount, first.state) == (300, SettlementState.PENDING)
        assert (await engine.settle("alice", 300, "op-1")).id == first.id  # same request
        with pytest.raises(AlreadyExists, match="op-1"):
            await engine.settle("alice", 301, "op-1")
        with pytest.raises(AlreadyExists):
            await engine.settle("alice", None, "op-1")
        rest = await engine.settle("alice")  # down to settle_to: -600 -> -200
        assert rest.amount == 400
        assert (await engine.get_account("alice")).account.balance == -200
        await engine.outbox.run_once()
        done = await engine.settle("alice", 300, "op-1")
        assert (done.id, done.state) == (first.id, SettlementState.COMPLETED)
        with pytest.raises(InvalidArgument, match="greater than zero"):
            await engine.settle("alice", 0)
        with pytest.raises(NotFound):
            await engine.settle("ghost", 5)
        assert len(ledger.payments) == 2

    run(tmp_path, scenario)


def test_views_list_settlements_newest_first(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await add_account(engine, "bob")
        await engine.apply_balance_change("alice", -500)
        await engine.apply_balance_change("bob", -500)
        ids = []
        for account in ("alice", "bob", "alice"):
            clock.advance(1)
            ids.append((await engine.settle(account, 100)).id)
        assert [s.id for s in await engine.list_settlements()] == ids[::-1]
        assert [s.id for s in await engine.list_settlements("alice")] == [ids[2], ids[0]]
        assert [s.id for s in await engine.list_settlements(limit=1)] == [ids[2]]
        with pytest.raises(InvalidArgument):
            await engine.list_settlements(limit=0)
        views = {v.account.id: v for v in await engine.list_accounts()}
        assert (views["alice"].pending_settlement, views["bob"].pending_settlement) == (200, 100)
        await engine.record_liquidity("sim", 12345)
        assert (await engine.get_account("bob")).account.liquidity == 12345
        await engine.record_liquidity("sim", None)
        assert (await engine.get_account("bob")).account.liquidity is None

    run(tmp_path, scenario)


def test_idempotency_keys_expire_after_retention(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", 10, "old")
        clock.advance(3600)
        await engine.apply_balance_change("alice", 10, "new")
        clock.advance(24 * 3600 - 1800)
        assert await engine.forget_idempotency_keys() == 1
        assert await engine.apply_balance_change("alice", 10, "new") == 20  # still remembered
        assert await engine.apply_balance_change("alice", 10, "old") == 30  # forgotten: new

    run(tmp_path, scenario)


# -- incoming settlements -------------------------------------------------------------------------


def test_incoming_settlements_are_credited_once_and_acknowledged(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.apply_balance_change("alice", 1500)
        row = await engine.receive_settlement("T1", "alice", 1000)
        assert (row.direction, row.state, row.amount, row.id) == (
            Direction.INCOMING,
            SettlementState.COMPLETED,
            1000,
            "in:sim:T1",
        )
        assert ledger.acks["T1"] == 1
        again = await engine.receive_settlement("T1", "alice", 1000)  # re-delivery
        assert again.id == row.id
        assert ledger.acks["T1"] == 2  # acknowledged again, credited once
        assert (await engine.get_account("alice")).account.balance == 500
        with pytest.raises(AlreadyExists, match="T1"):
            await engine.receive_settlement("T1", "alice", 999)
        with pytest.raises(NotFound):
            await engine.receive_settlement("T2", "ghost", 5)
        assert "T2" not in ledger.acks
        with pytest.raises(InvalidArgument):
            await engine.receive_settlement("T3", "alice", 0)
        with pytest.raises(InvalidArgument, match="settlement id"):
            await engine.receive_settlement("", "alice", 5)
        assert (await engine.get_account("alice")).account.balance == 500

    run(tmp_path, scenario)


def test_an_incoming_settlement_past_the_threshold_is_settled_back_at_once(
    tmp_path: Path,
) -> None:
    """The threshold holds after an incoming settlement too: a peer that paid 15.00 when it owed
    nothing (threshold -10.00, settle_to -2.00) is paid 13.00 back, with no packet to wait for;
    a re-delivery changes nothing more."""

    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine)
        await engine.receive_settlement("T1", "alice", 1500)
        assert (await engine.get_account("alice")).account.balance == -200
        (back,) = [
            s for s in await engine.list_settlements("alice") if s.direction is Direction.OUTGOING
        ]
        assert (back.amount, back.ledger_amount) == (1300, 1300)
        await drain(engine, clock)
        assert (await engine.get_settlement(back.id)).state is SettlementState.COMPLETED
        assert ledger.total_paid("alice") == 1300
        await engine.receive_settlement("T1", "alice", 1500)  # re-delivered: credited once
        assert (await engine.get_account("alice")).account.balance == -200
        assert len(await engine.list_settlements("alice")) == 2
        # Within the threshold nothing is settled: -200 - 700 = -900 > -1000.
        await engine.receive_settlement("T2", "alice", 700)
        assert (await engine.get_account("alice")).account.balance == -900
        assert len(await engine.list_settlements("alice")) == 3

    run(tmp_path, scenario)


def test_incoming_amounts_keep_a_leftover_below_one_account_unit(tmp_path: Path) -> None:
    async def scenario(
        store: SqliteStore, engine: Engine, ledger: FakeLedger, clock: FakeClock
    ) -> None:
        await add_account(engine, asset_scale=2, ledger_scale=6)
        row = await engine.receive_settlement("T1", "alice", 1_234_567)
        assert row.amount == 123
        view = await engine.get_account("alice")
        assert (view.account.balance, view.account.incoming_leftover) == (-123, 4567)
        tiny = await engine.receive_settlement("T2", "alice", 5433)
        assert tiny.amount == 1
        view = await engine.get_account("alice")
        assert (view.account.balance, view.account.incoming_leftover) == (-124, 0)

    run(tmp_path, scenario)


def test_failed_acknowledgements_are_retried_and_redone_at_start_up(tmp_path: Path) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        ports: dict[str, SettlementPort] = {"sim": ledger}
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            await add_account(engine)
            ledger.ack_script.extend(["transient", "permanent"])
            row = await engine.receive_settlement("T1", "alice", 100)
            assert (row.state, row.last_error) == (SettlementState.CREDITED, "adaptor unreachable")
            await drain(engine, clock)
            row = await engine.get_settlement("in:sim:T1")
            assert (row.state, row.next_attempt_at) == (SettlementState.CREDITED, None)  # parked
        finally:
            await store.close()
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            assert await engine.reconcile() == 1
            row = await engine.get_settlement("in:sim:T1")
            assert row.state is SettlementState.COMPLETED
            assert ledger.acks["T1"] == 1
            assert (await engine.get_account("alice")).account.balance == -100  # credited once
        finally:
            await store.close()

    asyncio.run(main())


# -- crashes and restarts -------------------------------------------------------------------------


def test_restart_after_the_ledger_committed_but_the_reply_was_lost_pays_once(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ledger, clock = FakeLedger(), FakeClock()
        ports: dict[str, SettlementPort] = {"sim": ledger}
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            await add_account(engine)
            await engine.apply_balance_change("alice", -1000)
            ledger.script.append("lost")
            await engine.outbox.run_once()
            [row] = await engine.list_settlements()
            assert row.state is SettlementState.PENDING
            assert ledger.paid[row.id] == 1
            # Debited and queued but never sent: the crash between the debit and the call.
            await engine.apply_balance_change("alice", -800)
        finally:
            await store.close()
        store, engine = await open_engine(tmp_path / "host.db", ports, clock)
        try:
            assert await engine.reconcile() == 2
            rows = await engine.list_settlements()
            assert [r.state for r in rows] == [SettlementState.COMPLETED] * 2
            assert sorted(ledger.paid.values()) == [1, 1]
            assert ledger.total_paid("alice") == 1600
            assert (await engine.get_account("alice")).account.balance == -200
        finally:
            await store.close()

    asyncio.run(main())


@contextlib.asynccontextmanager
async def running_outbox(tmp_path: Path, ledger: FakeLedger) -> AsyncIterator[Engine]:
    """An engine with account alice whose outbox worker runs on the real clock with short
    retry delays, and sleeps: nothing is due. Its idle poll (60 s) is far beyond any wait, so
    whatever happens next must wake it."""
    store = await SqliteStore.open(tmp_path / "host.db")
    engine = Engine(store, {"sim": ledger}, backoff=Backoff(initial=0.01, cap=0.05))
    worker = asyncio.create_task(engine.run_outbox())
    try:
        await add_account(engine)
        # Running: a new row is carried to the worker, not claimed.
        await wait_until_async(
            lambda: engine.outbox.lease_for_new(0.0) is not None, "the worker to run"
        )
        await asyncio.sleep(0.1)  # asleep: nothing is due
        yield engine
    finally:
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await worker
        await store.close()


def test_a_failed_acknowledgement_is_retried_without_waiting_for_the_idle_poll(
    tmp_path: Path,
) -> None:
    async def main() -> None:
        ledger = FakeLedger()
        async with running_outbox(tmp_path, ledger) as engine:
            ledger.ack_script.append("transient")
            row = await engine.receive_settlement("T1", "alice", 700)
            # The engine acknowledged it itself (no claim), and that attempt failed.
            assert (row.state, row.attempts, ledger.acks["T1"]) == (SettlementState.CREDITED, 1, 0)

            async def acknowledged() -> Settlement | None:
                found = await engine.get_settlement(row.id)
                return found if found.state is SettlementState.COMPLETED else None

            done = await wait_until_async(
                acknowledged, "the acknowledgement to be retried", timeout=10
            )
            assert (done.attempts, ledger.acks["T1"]) == (2, 1)

    asyncio.run(main())


def test_the_outbox_loop_pays_as_soon_as_a_settlement_is_queued(tmp_path: Path) -> None:
    async def main() -> None:
        ledger = FakeLedger()
        async with running_outbox(tmp_path, ledger) as engine:
            # Carried to the worker; the retries after that attempt must still wake it.
            ledger.script.extend(["transient", "transient"])
            await engine.apply_balance_change("alice", -1000)

            async def settled() -> Settlement | None:
                [row] = await engine.list_settlements()
                return row if row.state is SettlementState.COMPLETED else None

            row = await wait_until_async(
                settled, "the settlement to complete after two retries", timeout=10
            )
            assert (row.attempts, ledger.paid[row.id]) == (3, 1)

    asyncio.run(main())
