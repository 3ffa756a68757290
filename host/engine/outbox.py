"""The outbox worker: it carries every settlement with work left to its adaptor, until done.

Outgoing settlements (PENDING, SUBMITTED) get ``send_money`` with the settlement's own id as the
idempotency key, on every attempt and after every restart: if an earlier attempt did pay (the
reply was lost, or the host crashed after the ledger committed), the adaptor's idempotency reports
that payment instead of making another. Incoming settlements that are CREDITED get
``acknowledge_incoming``. A transient failure is retried with capped exponential backoff and
jitter (sdk.backoff, the one retry shape of the host); a permanent refusal parks an outgoing
settlement as FAILED (still debited: never refunded behind anyone's back) and an incoming
acknowledgement until the next start-up.

The decision of what an outcome does to a row is the pure function ``after_outcome``; the worker
around it only claims rows, calls the port and records the decision.

A settlement the engine records while the worker runs needs no claim: the engine writes it
already leased to this worker (``lease_for_new``) in the transaction that debits it, and hands
it over after the commit (``carry``), so its SendMoney starts at once, without a transaction and
a wake-up of its own. The row is durable before the call all the same; if the host dies first,
the row's lease is cleared at start-up (SQLite) or runs out (PostgreSQL, for the other hosts)
and the outbox resumes it like any other.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass, replace

from host.engine import observer as observing
from host.engine.adaptors import AdaptorRegistry
from host.engine.errors import PermanentSettlementError, TransientSettlementError
from host.engine.model import Direction, Settlement, SettlementState
from host.engine.ports import Clock, RandomSource, SendResult
from host.engine.store import Store
from sdk import failpoints
from sdk.backoff import Backoff

_log = logging.getLogger(__name__)

#: How long a claimed settlement is the claimer's, seconds, unless configured
#: (``[engine] outbox_lease``).
DEFAULT_LEASE = 30.0


@dataclass(frozen=True, slots=True)
class Paid:
    """send_money answered."""

    result: SendResult


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """acknowledge_incoming succeeded."""


@dataclass(frozen=True, slots=True)
class Refused:
    """The port failed: ``transient`` (retry later, same key) or not (park the row)."""

    error: str
    transient: bool


Outcome = Paid | Acknowledged | Refused

_FINAL = frozenset({SettlementState.COMPLETED, SettlementState.FAILED})


def after_outcome(
    row: Settlement, outcome: Outcome, *, now: float, retry_delay: float, lease_until: float | None
) -> Settlement | None:
    """The row after ``outcome``, or None to leave it as it is.

    ``row`` is the current (locked) row; ``lease_until`` the lease under which the attempt was
    made. States only move forward: a late outcome never undoes a final state, and a failure
    reported under an expired lease (another worker has the row now) changes nothing.
    """
    if row.state in _FINAL:
        return None
    attempts = row.attempts + 1
    if isinstance(outcome, Refused):
        if row.lease_until != lease_until:
            return None
        if outcome.transient:
            return replace(
                row,
                attempts=attempts,
                last_error=outcome.error,
                next_attempt_at=now + retry_delay,
                lease_until=None,
                updated_at=now,
            )
        parked_state = SettlementState.FAILED if row.direction is Direction.OUTGOING else row.state
        return replace(
            row,
            state=parked_state,
            attempts=attempts,
            last_error=outcome.error,
            next_attempt_at=None,
            lease_until=None,
            updated_at=now,
        )
    if isinstance(outcome, Acknowledged):
        return replace(
            row,
            state=SettlementState.COMPLETED,
            attempts=attempts,
            last_error="",
            next_attempt_at=None,
            lease_until=None,
            updated_at=now,
        )
    completed = outcome.result.completed
    return replace(
        row,
        state=SettlementState.COMPLETED if completed else SettlementState.SUBMITTED,
        ledger_settlement_id=outcome.result.settlement_id or row.ledger_settlement_id,
        attempts=attempts,
        last_error="",
        # Not final yet: ask the ledger again later (same key) until it is.
        next_attempt_at=None if completed else now + retry_delay,
        lease_until=None,
        updated_at=now,
    )


class OutboxWorker:
    """Claims due settlements from the store and carries each to its adaptor's port."""

    def __init__(
        self,
        store: Store,
        adaptors: AdaptorRegistry,
        clock: Clock,
        rng: RandomSource,
        backoff: Backoff,
        *,
        batch: int = 32,
        lease: float = DEFAULT_LEASE,
        idle_poll: float = 60.0,
    ) -> None:
        """``adaptors``: the adaptors serving now (one not bound is not serving).

        ``lease`` must exceed the longest port call (the gRPC port's deadline), or another worker
        may pick a row up while its call is still running (harmless, only wasteful). ``idle_poll``
        bounds the sleep when nothing is due, to notice rows other hosts make due.
        """
        self._store = store
        self._adaptors = adaptors
        self._clock = clock
        self._rng = rng
        self._backoff = backoff
        self._batch = batch
        self.lease = lease
        self._idle_poll = idle_poll
        self._wakeup = asyncio.Event()
        self._running = False
        #: Attempts for the rows handed over by ``carry``, running now.
        self._carried: set[asyncio.Task[None]] = set()
        #: Told of every settlement change (the Engine sets it; host.metrics observes).
        self.observer: observing.SettlementObserver = observing.NoObserver()

    def wake(self) -> None:
        """Look at the outbox now (a row was added or made due)."""
        self._wakeup.set()

    def lease_for_new(self, now: float) -> float | None:
        """The lease to record a new settlement with so that ``carry`` takes it after the
        commit; None (the row waits to be claimed) while the worker does not run, or while it
        carries about a batch of rows already (this bounds the calls in flight)."""
        if not self._running or len(self._carried) >= self._batch:
            return None
        return now + self.lease

    def carry(self, row: Settlement) -> None:
        """Attempt ``row`` now if it was recorded under ``lease_for_new``'s lease (after its
        commit: the row is durable before its port is called); else wake the worker to claim it."""
        if row.lease_until is None or not self._running:
            self.wake()
            return
        task = asyncio.get_running_loop().create_task(self._carry(row))
        self._carried.add(task)
        task.add_done_callback(self._carried.discard)

    async def _carry(self, row: Settlement) -> None:
        try:
            await self.process(row)
        except Exception:  # the store failed: the lease runs out and a claim retries the row
            _log.exception("settlement %s: recording the outcome failed; retrying", row.id)
            self.wake()

    async def run_once(self) -> int:
        """Claim the due rows (one batch) and process them concurrently; how many were claimed."""
        rows = await self._store.claim_outbox(self._batch, self._clock.now(), self.lease)
        async with asyncio.TaskGroup() as group:
            for row in rows:
                group.create_task(self.process(row))
        return len(rows)

    async def run(self) -> None:
        """Process the outbox until cancelled, sleeping until the next row is due or wake()."""
        self._running = True
        try:
            await self._run()
        finally:
            self._running = False
            carried = list(self._carried)
            for task in carried:
                task.cancel()
            await asyncio.gather(*carried, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            self._wakeup.clear()
            try:
                if await self.run_once():
                    continue
                due = await self._store.next_outbox_due()
            except Exception:  # keep the worker alive; the store may recover (disk full...)
                _log.exception("outbox pass failed; retrying")
                due = self._clock.now() + self._backoff.cap
            timeout = self._idle_poll
            if due is not None:
                timeout = min(timeout, max(0.0, due - self._clock.now()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wakeup.wait(), timeout)

    async def process(self, row: Settlement) -> Settlement:
        """Make one attempt for a leased row and record its outcome; the row as recorded."""
        outcome = await self._attempt(row)
        if isinstance(outcome, Paid):
            failpoints.hit(failpoints.ENGINE_AFTER_SEND_MONEY)
        if isinstance(outcome, Refused):
            _log.warning(
                "settlement %s (%s, account %s): %s",
                row.id,
                row.direction.value,
                row.account_id,
                outcome.error,
            )
        async with self._store.transaction() as tx:
            current = await tx.lock_settlement(row.id)
            if current is None:  # pragma: no cover - rows are never deleted
                return row
            updated = after_outcome(
                current,
                outcome,
                now=self._clock.now(),
                retry_delay=self._backoff.delay(current.attempts + 1, self._rng.random),
                lease_until=row.lease_until,
            )
            if updated is None:
                return current
            await tx.update_settlement(updated)
        observing.changed(self.observer, current, updated)
        if updated.next_attempt_at is not None:
            # Work left (a retry, or a payment not final yet) on a row the worker may never
            # have seen (carried, or acknowledged by the engine itself): it may be asleep until
            # its idle poll, so let it schedule the next attempt.
            self.wake()
        return updated

    async def _attempt(self, row: Settlement) -> Outcome:
        port = self._adaptors.port(row.adaptor)
        if port is None:
            return Refused(f"adaptor {row.adaptor!r} is not serving", transient=True)
        try:
            if row.direction is Direction.OUTGOING:
                started = time.perf_counter()
                try:
                    return Paid(await port.send_money(row.account_id, row.ledger_amount, row.id))
                finally:
                    self.observer.send_money(row, time.perf_counter() - started)
            await port.acknowledge_incoming(row.ledger_settlement_id)
            return Acknowledged()
        except TransientSettlementError as exc:
            return Refused(str(exc) or type(exc).__name__, transient=True)
        except PermanentSettlementError as exc:
            return Refused(str(exc) or type(exc).__name__, transient=False)
        except Exception as exc:
            # A bug in a port: the outcome is unknown, so treat it as transient (same key).
            _log.exception("settlement port for %r raised unexpectedly", row.adaptor)
            return Refused(f"unexpected {type(exc).__name__}: {exc}", transient=True)
