"""The settlement engine: clearing balances, settlement decisions, the outbox, incoming credits.

Pure orchestration over a Store and the adaptors' SettlementPorts: no SQL, no gRPC. Every
operation validates its input first and raises an EngineError (state untouched) when refused.
Every change is one store transaction; the adaptor is only called after that transaction
committed (the outbox pattern), so a crash between any two steps loses nothing and, thanks to
stable idempotency keys, pays nothing twice. The sign convention is in host.engine.model.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import random
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace

from host.clearing_records import BalanceChange, InFlight, Resolution
from host.clearing_rules import (
    CREDIT_EFFECT,
    DEBIT_EFFECT,
    LEFTOVER_EFFECT,
    ClearingBook,
    credit_allows,
    settlement_amount,
)
from host.engine import observer as observing
from host.engine.adaptors import AdaptorRegistry
from host.engine.errors import (
    AlreadyExists,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
)
from host.engine.model import (
    Account,
    AccountView,
    ClearingEffect,
    Direction,
    IdempotencyRecord,
    Policy,
    Settlement,
    SettlementState,
    check_account_id,
    check_adaptor_name,
    check_amount,
    check_asset,
    check_idempotency_key,
    check_ledger_settlement_id,
    incoming_id,
)
from host.engine.outbox import DEFAULT_LEASE, OutboxWorker
from host.engine.policy import (
    check_policy,
    check_scales,
    new_balance,
    plan_incoming,
    plan_outgoing,
)
from host.engine.ports import Clock, RandomSource, SettlementPort, SystemClock
from host.engine.store import Store, Transaction
from host.ilp.outcome import Outcome
from sdk import failpoints
from sdk.backoff import Backoff

_log = logging.getLogger(__name__)

#: Idempotency scopes: keys of balance changes and of manual settlements never collide.
BALANCE_SCOPE = "balance"
SETTLE_SCOPE = "settle"
#: RFC 38 keeps idempotency keys at least 24 hours.
KEY_RETENTION = 24 * 3600.0
MAX_LIST = 10_000
#: Reads of an account's book before giving up on a moment without a change.
BOOK_READ_ATTEMPTS = 20


@dataclass(frozen=True, slots=True)
class _BalanceChanged:
    """A balance change inside a transaction: the new balance, and what to do once committed
    (a settlement queued, an effect journaled for the connector)."""

    balance: int
    queued: Settlement | None = None
    journaled: bool = False


def _new_settlement_id() -> str:
    return uuid.uuid4().hex


class Engine:
    """The settlement engine of one host (see the module docstring)."""

    def __init__(
        self,
        store: Store,
        adaptors: AdaptorRegistry | Mapping[str, SettlementPort],
        *,
        clock: Clock | None = None,
        rng: RandomSource | None = None,
        backoff: Backoff | None = None,
        new_settlement_id: Callable[[], str] = _new_settlement_id,
        outbox_batch: int = 32,
        lease: float = DEFAULT_LEASE,
        journal_clearing: bool = False,
        on_clearing_effect: Callable[[], None] | None = None,
        connector_in_step: asyncio.Event | None = None,
    ) -> None:
        """``adaptors``: the adaptors serving now, kept current by the host (a fixed mapping of
        names to ports is taken as a registry of those adaptors).

        ``new_settlement_id`` makes the id (and SendMoney idempotency key) of each outgoing
        settlement: it must be unique forever, not just per database, hence random by default.

        ``journal_clearing``: the connector keeps its own copy of the clearing balances
        (proposal 2), so every change the engine makes to a balance itself (a settlement's
        debit or credit) is also journaled as a ClearingEffect, in the same transaction, for
        the host to push to the connector; ``on_clearing_effect`` is called after each such
        commit. Without it (proposal 1) the engine's balances are the connector's.

        ``connector_in_step`` (proposal 2): set while the engine has applied every balance
        change its connector had logged (host.remote_connector). Incoming settlements are
        credited only then: one pays for packets whose changes may still wait in that log, and
        credited before them it would leave the engine owing the payer, and paying it back.
        """
        self._store = store
        if not isinstance(adaptors, AdaptorRegistry):
            adaptors = AdaptorRegistry(adaptors)
        self.adaptors = adaptors
        self._clock: Clock = clock or SystemClock()
        self._new_id = new_settlement_id
        self._journal = journal_clearing
        self._on_clearing_effect = on_clearing_effect
        self._connector_in_step = connector_in_step
        self.outbox = OutboxWorker(
            store,
            adaptors,
            self._clock,
            rng or random.Random(),
            backoff or Backoff(),
            batch=outbox_batch,
            lease=lease,
        )
        # Settlements that waited for an adaptor go out as soon as it can take them.
        adaptors.observe(lambda _name: self.outbox.wake())

    @property
    def observer(self) -> observing.SettlementObserver:
        """Told of every settlement change and SendMoney call (host.metrics); none by default."""
        return self.outbox.observer

    @observer.setter
    def observer(self, observer: observing.SettlementObserver) -> None:
        self.outbox.observer = observer

    # -- accounts -------------------------------------------------------------------------------

    async def create_account(
        self,
        account_id: str,
        *,
        adaptor: str,
        asset_code: str,
        asset_scale: int,
        ledger_scale: int,
        policy: Policy,
    ) -> Account:
        """Create a peer account with a zero balance.

        Idempotent: creating an account that exists with the same adaptor, asset, scales and
        policy returns it; with anything different, AlreadyExists (use update_policy).
        """
        check_account_id(account_id)
        check_adaptor_name(adaptor)
        check_asset(asset_code, asset_scale, ledger_scale)
        check_scales(asset_scale, ledger_scale)
        check_policy(policy)
        now = self._clock.now()
        wanted = Account(
            id=account_id,
            adaptor=adaptor,
            asset_code=asset_code,
            asset_scale=asset_scale,
            ledger_scale=ledger_scale,
            policy=policy,
            created_at=now,
            updated_at=now,
        )
        async with self._store.transaction() as tx:
            existing = await tx.lock_account(account_id)
            if existing is None:
                await tx.insert_account(wanted)
                return wanted
        same = (existing.adaptor, existing.asset_code, existing.asset_scale) == (
            adaptor,
            asset_code,
            asset_scale,
        ) and (existing.ledger_scale, existing.policy) == (ledger_scale, policy)
        if not same:
            raise AlreadyExists(f"account {account_id} exists with another configuration")
        return existing

    async def update_policy(self, account_id: str, policy: Policy) -> Account:
        """Replace an account's thresholds and credit limits (balances are untouched)."""
        check_account_id(account_id)
        check_policy(policy)
        async with self._store.transaction() as tx:
            account = await self._locked(tx, account_id)
            updated = replace(account, policy=policy, updated_at=self._clock.now())
            await tx.update_account(updated)
        return updated

    async def get_account(self, account_id: str) -> AccountView:
        """An account with its pending settlement total; NotFound if unknown."""
        check_account_id(account_id)
        account = await self._store.get_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist")
        totals = await self._store.pending_settlement_totals(account_id)
        return AccountView(account, totals.get(account_id, 0))

    async def list_accounts(self) -> list[AccountView]:
        """Every account, by id, with its pending settlement total."""
        accounts = await self._store.list_accounts()
        totals = await self._store.pending_settlement_totals(None)
        return [AccountView(a, totals.get(a.id, 0)) for a in accounts]

    async def record_liquidity(self, adaptor: str, liquidity: int | None) -> None:
        """Remember the liquidity an adaptor reported (GetBalance, ledger scale) on its accounts."""
        check_adaptor_name(adaptor)
        if liquidity is not None:
            check_amount(liquidity, "liquidity")
            if liquidity < 0:
                raise InvalidArgument(f"liquidity must not be negative, got {liquidity}")
        await self._store.set_liquidity(adaptor, liquidity, self._clock.now())

    # -- clearing -------------------------------------------------------------------------------

    async def check_credit(self, account_id: str, delta: int) -> bool:
        """Whether a balance change of ``delta`` would stay within the account's credit limits.

        The balance middleware asks on each Prepare (``delta > 0``: the peer would owe us more).
        """
        check_account_id(account_id)
        check_amount(delta, "delta")
        account = await self._store.get_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist")
        return credit_allows(account.balance, delta, account.policy)

    async def apply_balance_change(
        self, account_id: str, delta: int, idempotency_key: str | None = None
    ) -> int:
        """Change the clearing balance by ``delta``, settle if the policy says so; the new balance.

        Idempotent by key: a repeated key with the same account and delta returns the balance the
        first call returned and changes nothing; with other content, AlreadyExists. If the new
        balance crosses the settle threshold, the settlement is debited and queued in the same
        transaction (the returned balance includes it), unless a settlement of the account is
        parked as FAILED: automatic settlement then waits until an operator retried it.
        """
        check_account_id(account_id)
        check_amount(delta, "delta")
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        now = self._clock.now()
        async with self._store.transaction() as tx:
            change = await self._change_balance(tx, account_id, delta, idempotency_key, now)
        self._changed(change)
        return change.balance

    async def _change_balance(
        self, tx: Transaction, account_id: str, delta: int, idempotency_key: str | None, now: float
    ) -> _BalanceChanged:
        """apply_balance_change inside ``tx`` (validated input): what to do once committed.

        Without ``idempotency_key`` the caller guards against a replay itself (resolve_packet:
        the packet's own record)."""
        queued: Settlement | None = None
        account = await self._locked(tx, account_id)
        request = ""
        if idempotency_key is not None:
            request = f"{account_id} {delta}"
            replay = await self._replay(tx, BALANCE_SCOPE, idempotency_key, account_id, request)
            if replay is not None:
                return _BalanceChanged(int(replay.result))
        account = account.with_balance(new_balance(account, delta), now)
        debit = settlement_amount(account.balance, account.policy)
        # A settlement the adaptor refused for good waits for an operator; settling more
        # meanwhile would only debit more that cannot be paid. The balance keeps the truth
        # (what we owe), so the credit limit stops the traffic if it goes on.
        journaled = False
        if debit is not None and not await tx.has_failed_settlement(account_id):
            account, row = self._debit(account, debit, now)
            if row is not None:
                await tx.insert_settlement(row)
                queued = row
            journaled = await self._journal_debit(tx, account_id, debit, row, now)
        await tx.update_account(account)
        if idempotency_key is not None:
            await tx.record_idempotency(
                IdempotencyRecord(
                    BALANCE_SCOPE,
                    idempotency_key,
                    account_id,
                    request,
                    str(account.balance),
                    now,
                )
            )
        return _BalanceChanged(account.balance, queued, journaled)

    def _changed(self, change: _BalanceChanged) -> None:
        """After the commit of a balance change: tell the connector's journal, pay."""
        if change.journaled:
            self._effect_written()
        if change.queued is not None:
            observing.changed(self.observer, None, change.queued)
            failpoints.hit(failpoints.ENGINE_AFTER_DEBIT)
            self.outbox.carry(change.queued)

    # -- the connector's in-flight journal (host.connector.ports.ClearingJournal) ------------

    async def journal_packet(self, packet: InFlight) -> None:
        """Record a forwarded packet as pending, durably, before it goes out."""
        now = self._clock.now()
        async with self._store.transaction() as tx:
            await tx.journal_packet(packet, now)

    async def resolve_packet(
        self,
        packet: InFlight,
        resolution: Resolution,
        fulfillment: bytes,
        changes: Sequence[BalanceChange],
    ) -> Resolution:
        """Apply ``changes`` (as apply_balance_change does, settling if the policy says so)
        and record the packet's resolution, in one transaction; the resolution (an earlier
        one, and nothing done, if it was resolved before).

        The packet's record is the changes' idempotency record: their keys derive from the
        packet's key, and its resolution, read first in the transaction that writes it (on
        PostgreSQL with its row, or the creation of its row, locked), says whether they were
        applied. So no record of their own is written per change (two rows and two reads less
        per packet)."""
        for change in changes:
            check_account_id(change.account_id)
            check_amount(change.delta, "delta")
            check_idempotency_key(change.idempotency_key)
        now = self._clock.now()
        async with self._store.transaction() as tx:
            earlier = await tx.packet_resolution(packet.key)
            if earlier is not None:
                return earlier
            done = [
                await self._change_balance(tx, change.account_id, change.delta, None, now)
                # In account order: two packets crossing between the same accounts in
                # opposite directions lock them in the same order (no deadlock on PostgreSQL).
                for change in sorted(changes, key=lambda c: c.account_id)
            ]
            await tx.resolve_packet(packet, resolution, fulfillment, now)
        for change_done in done:
            self._changed(change_done)
        return resolution

    async def unresolved_packets(self) -> list[InFlight]:
        """The journaled packets not resolved yet, oldest first."""
        return await self._store.unresolved_packets()

    async def packet_outcome(self, source: str, source_id: bytes) -> Outcome:
        """What peer ``source`` is told of its packet ``source_id``."""
        return await self._store.packet_outcome(source, source_id)

    async def clearing_book(self, account_id: str) -> ClearingBook:
        """The account's balance and settlement totals, for a reconciliation with the peer.

        Derived from durable records (the balance, the outgoing leftover, the settlement
        totals, which the store keeps in the transaction that records each settlement: a read
        of one row, however long the history). Every settlement changes its account's row in
        that transaction too, so the totals are read between two reads of an unchanged row
        (FailedPrecondition if it keeps changing).

        The outgoing leftover (debited, below one ledger unit, not paid) is still owed to the
        peer: it counts in the balance, not among the settlements, as the peer's book has it.
        Counted as settled, it looked like a settlement in transit for as long as it waited,
        and a quiet pair never reconciled as agreeing.
        """
        check_account_id(account_id)
        for _ in range(BOOK_READ_ATTEMPTS):
            before = await self._store.get_account(account_id)
            if before is None:
                raise NotFound(f"account {account_id} does not exist")
            paid, credited = await self._store.settled_totals(account_id)
            if await self._store.get_account(account_id) == before:
                owed = before.outgoing_leftover
                return ClearingBook(before.asset_scale, before.balance - owed, paid, credited)
        raise FailedPrecondition(
            f"account {account_id} changed during each of {BOOK_READ_ATTEMPTS} reads; try again"
        )

    # -- outgoing settlements -------------------------------------------------------------------

    async def settle(
        self, account_id: str, amount: int | None = None, idempotency_key: str | None = None
    ) -> Settlement:
        """Settle now, on an operator's request: ``amount`` (account scale) or down to settle_to.

        Never pays more than we owe the peer. Idempotent by key like any settlement: the same key
        with the same content returns that settlement; other content, AlreadyExists. Without a
        key every call is a new request. FailedPrecondition when nothing is owed, when the amount
        is below one ledger unit, or when the account's adaptor is not serving.
        """
        check_account_id(account_id)
        if amount is not None:
            check_amount(amount, "amount", positive=True)
        if idempotency_key is not None:
            check_idempotency_key(idempotency_key)
        request = f"{account_id} {'' if amount is None else amount}"
        now = self._clock.now()
        async with self._store.transaction() as tx:
            account = await self._locked(tx, account_id)
            if idempotency_key is not None:
                replay = await self._replay(tx, SETTLE_SCOPE, idempotency_key, account_id, request)
                if replay is not None:
                    found = await tx.lock_settlement(replay.result)
                    if found is None:  # pragma: no cover - settlements are never deleted
                        raise NotFound(f"settlement {replay.result} does not exist")
                    return found
            if account.adaptor not in self.adaptors:
                raise FailedPrecondition(
                    f"account {account_id}: adaptor {account.adaptor!r} is not serving; "
                    "try again once it is"
                )
            debit = self._manual_debit(account, amount)
            account, row = self._debit(replace(account, updated_at=now), debit, now)
            if row is None:
                raise FailedPrecondition(
                    f"account {account_id}: {debit} at scale {account.asset_scale} is less than "
                    f"one unit at the ledger's scale {account.ledger_scale}; nothing settled"
                )
            await tx.update_account(account)
            await tx.insert_settlement(row)
            journaled = await self._journal_debit(tx, account_id, debit, row, now)
            if idempotency_key is not None:
                await tx.record_idempotency(
                    IdempotencyRecord(
                        SETTLE_SCOPE, idempotency_key, account_id, request, row.id, now
                    )
                )
        if journaled:
            self._effect_written()
        observing.changed(self.observer, None, row)
        failpoints.hit(failpoints.ENGINE_AFTER_DEBIT)
        self.outbox.carry(row)
        return row

    async def retry_settlement(self, settlement_id: str) -> Settlement:
        """Send a FAILED outgoing settlement again (same key), after an operator fixed the cause."""
        async with self._store.transaction() as tx:
            row = await tx.lock_settlement(settlement_id)
            if row is None:
                raise NotFound(f"settlement {settlement_id[:80]!r} does not exist")
            if row.state is not SettlementState.FAILED:
                raise FailedPrecondition(
                    f"settlement {settlement_id} is {row.state.value}, only failed ones are retried"
                )
            now = self._clock.now()
            failed = row
            row = replace(row, state=SettlementState.PENDING, next_attempt_at=now, updated_at=now)
            await tx.update_settlement(row)
        observing.changed(self.observer, failed, row)
        self.outbox.wake()
        return row

    # -- incoming settlements -------------------------------------------------------------------

    async def receive_settlement(
        self, settlement_id: str, account_id: str, ledger_amount: int
    ) -> Settlement:
        """Credit an incoming ledger payment once, then acknowledge it to the adaptor.

        A re-delivered ``settlement_id`` credits nothing and is only acknowledged again. The
        acknowledgement happens after the credit committed; if it fails, the outbox retries it.
        NotFound for an unknown account (nothing recorded, nothing acknowledged: the adaptor
        re-delivers); AlreadyExists if the id comes back with another account or amount. If the
        credit leaves the balance at or below the settle threshold (the peer paid more than it
        owed), the settlement back to settle_to is debited and queued in the same transaction.
        With ``connector_in_step`` (proposal 2), it first waits until that is set.
        """
        check_ledger_settlement_id(settlement_id)
        check_account_id(account_id)
        check_amount(ledger_amount, "amount", positive=True)
        await self._wait_for_connector(settlement_id)
        now = self._clock.now()
        lease_until = now + self.outbox.lease
        journaled = queued = received = False
        payback: Settlement | None = None
        async with self._store.transaction() as tx:
            account = await self._locked(tx, account_id)
            row = await tx.lock_settlement(incoming_id(account.adaptor, settlement_id))
            if row is None:
                plan = plan_incoming(account, ledger_amount)
                credited = replace(plan.account, updated_at=now)
                if self._journal and plan.amount:
                    digest = hashlib.sha256(
                        incoming_id(account.adaptor, settlement_id).encode()
                    ).hexdigest()[:48]
                    await tx.record_clearing_effect(
                        ClearingEffect(f"{CREDIT_EFFECT}{digest}", account_id, -plan.amount, now)
                    )
                    journaled = True
                # The threshold holds after every change of the balance, this one too: a peer
                # that paid more than it owed is paid back down to settle_to, at once rather
                # than at the next packet (which may never come).
                debit = settlement_amount(credited.balance, credited.policy)
                if debit is not None and not await tx.has_failed_settlement(account_id):
                    credited, payback = self._debit(credited, debit, now)
                    if payback is not None:
                        await tx.insert_settlement(payback)
                        queued = True
                    journaled = await self._journal_debit(tx, account_id, debit, payback, now) or (
                        journaled
                    )
                await tx.update_account(credited)
                row = Settlement(
                    id=incoming_id(account.adaptor, settlement_id),
                    account_id=account_id,
                    adaptor=account.adaptor,
                    direction=Direction.INCOMING,
                    state=SettlementState.CREDITED,
                    amount=plan.amount,
                    ledger_amount=ledger_amount,
                    ledger_settlement_id=settlement_id,
                    next_attempt_at=now,
                    lease_until=lease_until,  # ours: we acknowledge it right after the commit
                    created_at=now,
                    updated_at=now,
                )
                await tx.insert_settlement(row)
                received = True
            elif (row.account_id, row.ledger_amount) != (account_id, ledger_amount):
                raise AlreadyExists(
                    f"settlement {settlement_id} was already received for account "
                    f"{row.account_id} amount {row.ledger_amount}; this delivery says "
                    f"{account_id} amount {ledger_amount}"
                )
            elif row.state is SettlementState.CREDITED and (
                row.lease_until is None or row.lease_until <= now
            ):
                row = replace(row, lease_until=lease_until)
                await tx.update_settlement(row)
        if journaled:
            self._effect_written()
        if received:
            observing.changed(self.observer, None, row)
        if queued:
            assert payback is not None
            observing.changed(self.observer, None, payback)
            self.outbox.carry(payback)
        failpoints.hit(failpoints.ENGINE_AFTER_CREDIT)
        if row.state is SettlementState.CREDITED and row.lease_until == lease_until:
            return await self.outbox.process(row)
        if row.state is SettlementState.COMPLETED:
            await self._acknowledge_again(row)
        return row

    async def _wait_for_connector(self, settlement_id: str) -> None:
        in_step = self._connector_in_step
        if in_step is None or in_step.is_set():
            return
        _log.info(
            "incoming settlement %s waits until the engine has applied the balance changes "
            "its connector logged",
            settlement_id,
        )
        await in_step.wait()

    async def _acknowledge_again(self, row: Settlement) -> None:
        # The adaptor re-delivered a settlement we acknowledged: our acknowledgement was lost.
        port = self.adaptors.port(row.adaptor)
        if port is None:
            return
        try:
            await port.acknowledge_incoming(row.ledger_settlement_id)
        except Exception as exc:  # best effort: the adaptor re-delivers and we try again
            _log.warning("re-acknowledging settlement %s failed: %s", row.id, exc)

    # -- views and recovery ---------------------------------------------------------------------

    async def get_settlement(self, settlement_id: str) -> Settlement:
        """One settlement by the host's id; NotFound if unknown."""
        row = await self._store.get_settlement(settlement_id)
        if row is None:
            raise NotFound(f"settlement {settlement_id[:80]!r} does not exist")
        return row

    async def list_settlements(
        self, account_id: str | None = None, limit: int = 100
    ) -> list[Settlement]:
        """Settlements newest first, of one account or all; at most ``limit`` (1..10000)."""
        if account_id is not None:
            check_account_id(account_id)
        if not 1 <= limit <= MAX_LIST:
            raise InvalidArgument(f"limit must be 1..{MAX_LIST}, got {limit}")
        return await self._store.list_settlements(account_id, limit)

    async def reconcile(self) -> int:
        """At start-up: resume every settlement with work left; how many there were.

        Unfinished outgoing settlements are sent again with their own keys (healing a crash after
        the debit, or after the ledger committed), credited incoming ones acknowledged again.
        Each gets one attempt now; the outbox worker carries on from there.
        """
        resumed = await self._store.resume_outbox(self._clock.now())
        attempted = 0
        while attempted < resumed:
            claimed = await self.outbox.run_once()
            if not claimed:
                break
            attempted += claimed
        return resumed

    async def run_outbox(self) -> None:
        """Carry the outbox to the adaptors until cancelled (run it as a task)."""
        await self.outbox.run()

    async def forget_idempotency_keys(self, older_than: float = KEY_RETENTION) -> int:
        """Drop idempotency records older than ``older_than`` seconds; how many went."""
        return await self._store.forget_idempotency(self._clock.now() - older_than)

    # -- helpers --------------------------------------------------------------------------------

    async def _journal_debit(
        self, tx: Transaction, account_id: str, debit: int, row: Settlement | None, now: float
    ) -> bool:
        """Journal a settlement's debit (proposal 2); whether anything was journaled."""
        if not self._journal:
            return False
        # A debit that went wholly to the leftover has no settlement row, but it did raise the
        # balance: the connector must see it too.
        key = (
            f"{DEBIT_EFFECT}{row.id}" if row is not None else f"{LEFTOVER_EFFECT}{uuid.uuid4().hex}"
        )
        await tx.record_clearing_effect(ClearingEffect(key, account_id, debit, now))
        return True

    def _effect_written(self) -> None:
        if self._on_clearing_effect is not None:
            self._on_clearing_effect()

    async def _locked(self, tx: Transaction, account_id: str) -> Account:
        account = await tx.lock_account(account_id)
        if account is None:
            raise NotFound(f"account {account_id} does not exist")
        return account

    async def _replay(
        self, tx: Transaction, scope: str, key: str, account_id: str, request: str
    ) -> IdempotencyRecord | None:
        record = await tx.get_idempotency(scope, key)
        if record is not None and (record.account_id, record.request) != (account_id, request):
            raise AlreadyExists(
                f"idempotency key {key!r} was already used for another request; use a new key"
            )
        if record is not None:
            self.observer.replayed(scope)
        return record

    def _manual_debit(self, account: Account, amount: int | None) -> int:
        owed = -account.balance
        if amount is None:
            debit = account.policy.settle_to - account.balance
            if debit <= 0:
                raise FailedPrecondition(
                    f"account {account.id}: nothing to settle, the balance {account.balance} is "
                    f"not below settle_to {account.policy.settle_to}"
                )
            return debit
        if owed <= 0:
            raise FailedPrecondition(
                f"account {account.id}: nothing is owed to the peer (balance {account.balance})"
            )
        if amount > owed:
            raise FailedPrecondition(
                f"account {account.id}: {amount} is more than what we owe the peer ({owed})"
            )
        return amount

    def _debit(self, account: Account, debit: int, now: float) -> tuple[Account, Settlement | None]:
        """Raise the balance by ``debit``; the outbox row to pay it, or None (all leftover).

        The row is leased to the outbox worker when it can carry it right after the commit
        (``outbox.carry``), which saves the claim.
        """
        plan = plan_outgoing(account, debit)
        if plan.ledger_amount == 0:
            return plan.account, None  # never settle 0: it waits in the leftover
        row = Settlement(
            id=self._new_id(),
            account_id=account.id,
            adaptor=account.adaptor,
            direction=Direction.OUTGOING,
            state=SettlementState.PENDING,
            amount=plan.amount,
            ledger_amount=plan.ledger_amount,
            next_attempt_at=now,
            lease_until=self.outbox.lease_for_new(now),
            created_at=now,
            updated_at=now,
        )
        return plan.account, row
