"""Group commit: many logical transactions, one SQLite transaction and one fsync per batch.

Logical transactions take turns on one connection, each inside a SAVEPOINT of a shared SQLite
transaction. Their statements run at once on the event loop's thread: a statement on a page in
memory takes microseconds, far less than handing it to another thread and waking the loop with
its result. Only what waits on the disk leaves the loop: the COMMIT (the fsync) runs in a
dedicated thread (``WriterThread``), and so do statements a caller marks as heavy
(``TxContext.run_in_thread``).

While a COMMIT is under way the connection is the thread's; the transactions that arrive
meanwhile wait for their turn and then run one after another in the next shared transaction.
When a logical transaction ends and others are already waiting for their turn, the shared
transaction stays open for them; the one that ends with nobody waiting (or fills the batch)
commits it, one turn of the event loop later, so that callers already woken (by the previous
commit, or by requests that arrived together) join the batch rather than wait for the next.
Every logical transaction's ``async with`` returns only after the commit of its batch succeeded,
so nothing is acknowledged before it is durable; a commit failure fails every member of the
batch.

A logical transaction that raises is rolled back to its savepoint and leaves the others intact.

A ``BatchListener`` is told each of these steps as it happens, on the loop's thread (the store
keeps its accounts in memory by them, host.store.account_cache).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import queue
import sqlite3
import threading
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol, TypeVar

from host.store.base import StoreError

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], object]

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_inside: contextvars.ContextVar[GroupCommit | None] = contextvars.ContextVar(
    "ilp_store_transaction", default=None
)


class BatchListener(Protocol):
    """Told of each step of the transactions' lives, as it happens (one at a time)."""

    def kept(self) -> None:
        """The transaction that had the turn released its savepoint: its writes are batched."""

    def undone(self) -> None:
        """The transaction that had the turn was rolled back to its savepoint."""

    def blind_write(self) -> None:
        """A statement of unknown effect runs (``TxContext.run_in_thread``)."""

    def committed_batch(self) -> None:
        """The open batch committed."""

    def lost_batch(self) -> None:
        """The open batch is rolled back (its COMMIT failed, or SQLite undid it)."""


class _NoListener:
    def kept(self) -> None:
        pass

    def undone(self) -> None:
        pass

    def blind_write(self) -> None:
        pass

    def committed_batch(self) -> None:
        pass

    def lost_batch(self) -> None:
        pass


def _deliver(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():  # the awaiting task was cancelled
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)


class WriterThread:
    """A thread that runs submitted callables one at a time, in submission order."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        # Daemon: a host that exits without closing must not hang; nothing uncommitted was acked.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` in the thread after every job submitted before; its result as a future."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((fn, future, loop))
        return future

    async def stop(self, last: Callable[[], object]) -> None:
        """Run ``last`` after every pending job, then end the thread."""
        try:
            await self.submit(last)
        finally:
            self._jobs.put(None)
            self._thread.join()  # immediate: the queue is empty after ``last``

    def _run(self) -> None:
        while (job := self._jobs.get()) is not None:
            fn, future, loop = job
            try:
                outcome: tuple[bool, Any] = (True, fn())
            except BaseException as exc:
                outcome = (False, exc)
            # RuntimeError: the loop is closed, nobody waits for the result any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_deliver, future, *outcome)


def translate(exc: BaseException) -> BaseException:
    """An sqlite3 error as a StoreError (others unchanged), for the engine's eyes."""
    if isinstance(exc, sqlite3.Error):
        error = StoreError(f"database error: {exc}")
        error.__cause__ = exc
        return error
    return exc


@dataclass(eq=False)
class TxContext:
    """One logical transaction's handle, for the store's statements."""

    _owner: GroupCommit
    #: Whether this transaction's savepoint exists.
    _savepoint: bool = False
    _ended: bool = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` inside this transaction, at once on the loop's thread; its result."""
        self._check()
        try:
            return fn(self._owner.connection)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def run_in_thread(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(connection)`` inside this transaction, in the writer thread: for statements that
        may touch many rows (the loop keeps serving meanwhile; the turn stays ours)."""
        self._check()
        self._owner.listener.blind_write()
        job = self._owner.writer.submit(partial(fn, self._owner.connection))
        try:
            return await asyncio.shield(job)
        except asyncio.CancelledError:
            # The statement runs on in the thread: the connection is not ours (to roll the
            # savepoint back) until it has ended.
            while not job.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait({job})
            raise
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def defer(self, write: Write) -> None:
        """Run a write inside this transaction (at once: no thread hop to save any more)."""
        self._check()
        try:
            write(self._owner.connection)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def _check(self) -> None:
        if self._ended:
            raise StoreError("the transaction has ended")


class GroupCommit:
    """Serializes logical transactions on one connection and commits them in batches."""

    def __init__(
        self,
        writer: WriterThread,
        connection: sqlite3.Connection,
        max_batch: int,
        listener: BatchListener | None = None,
    ) -> None:
        """``connection`` (opened with ``check_same_thread=False``) is used by one side at a
        time: the loop while a logical transaction has the turn, ``writer`` while a COMMIT (or a
        statement sent there by the transaction that has the turn) runs."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.writer = writer
        self.listener: BatchListener = listener or _NoListener()
        self._conn = connection
        self._max_batch = max_batch
        # The turn: held by one logical transaction, or by a COMMIT under way.
        self._busy = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        # The open batch: its members await its commit; _in_batch: its BEGIN was run.
        self._members: list[asyncio.Future[None]] = []
        self._in_batch = False
        self._poisoned = False
        #: Committed batches and logical transactions, for tests and benchmarks.
        self.commits = 0
        self.transactions = 0

    @property
    def connection(self) -> sqlite3.Connection:
        """The writer connection (only for the holder of the turn)."""
        return self._conn

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[TxContext]:
        """A logical transaction; leaving normally returns after its batch committed."""
        if _inside.get() is self:
            raise RuntimeError("nested store transaction: it would wait for itself forever")
        await self._acquire()
        token = _inside.set(self)
        context = TxContext(self)
        ok = False
        try:
            self._enter(context)
            yield context
            ok = True
        finally:
            _inside.reset(token)
            context._ended = True
            member, own_error = self._finish(context, ok)
        if own_error is not None:
            raise own_error
        assert member is not None
        await member

    async def flush(self) -> None:
        """Wait for the turn, commit whatever batch is open, and keep the turn (for closing)."""
        await self._acquire()
        batch, self._members = self._members, []
        error = await self.writer.submit(self._commit_job)
        self._batch_ended(error)
        self._resolve(batch, error)
        if error is not None:
            raise error

    # -- the turn ---------------------------------------------------------------------------------

    async def _acquire(self) -> None:
        if not self._busy:
            self._busy = True
            return
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            await turn
        except asyncio.CancelledError:
            if turn.done() and not turn.cancelled():
                self._release()  # handed the turn just as we were cancelled: hand it further
            else:
                self._waiters.remove(turn)
            raise

    def _someone_waits(self) -> bool:
        return any(not turn.done() for turn in self._waiters)

    def _release(self) -> None:
        """Give the turn up: keep the batch open for a waiter, or commit it."""
        if self._in_batch and len(self._members) >= self._max_batch:
            self._commit()
        elif self._someone_waits() or not self._in_batch:
            self._handoff()
        else:
            # Nobody waits yet, but callers woken in this turn of the loop (say, by the
            # previous commit) have not run yet: let them join before the batch is closed.
            asyncio.get_running_loop().call_soon(self._commit_unless_joined)

    def _commit_unless_joined(self) -> None:
        if self._someone_waits() and len(self._members) < self._max_batch:
            self._handoff()
        else:
            self._commit()

    def _commit(self) -> None:
        batch, self._members = self._members, []
        # The turn stays taken until the COMMIT is done: the connection is the thread's.
        done = self.writer.submit(self._commit_job)
        done.add_done_callback(partial(self._committed, batch))

    def _committed(self, batch: list[asyncio.Future[None]], done: asyncio.Future[Any]) -> None:
        error = _error_of(done)
        self._batch_ended(error)
        self._resolve(batch, error)
        self._handoff()

    def _batch_ended(self, error: BaseException | None) -> None:
        if error is None:
            self.listener.committed_batch()
        else:
            self.listener.lost_batch()

    def _handoff(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    @staticmethod
    def _resolve(batch: list[asyncio.Future[None]], error: BaseException | None) -> None:
        for member in batch:
            if not member.done():
                if error is None:
                    member.set_result(None)
                else:
                    member.set_exception(error)

    # -- statements (the holder of the turn) ------------------------------------------------------

    def _enter(self, context: TxContext) -> None:
        if self._poisoned:
            raise StoreError("the batch transaction was lost after a database error; retry")
        try:
            if not self._in_batch:
                self._conn.execute("BEGIN IMMEDIATE")
                self._in_batch = True
            self._conn.execute("SAVEPOINT tx")
        except sqlite3.Error as exc:
            raise translate(exc) from exc
        context._savepoint = True

    def _finish(
        self, context: TxContext, ok: bool
    ) -> tuple[asyncio.Future[None] | None, BaseException | None]:
        """End the transaction's savepoint (kept if ``ok``), then give the turn up; the future
        of its commit, or the error that undid it."""
        self.transactions += 1
        own_error: BaseException | None = None
        try:
            if context._savepoint and self._in_batch and not self._conn.in_transaction:
                # SQLite rolled the whole transaction back after an error: the batch is lost.
                self._poisoned = True
                self.listener.lost_batch()
                own_error = StoreError(
                    "the batch transaction was lost after a database error; retry"
                )
                ok = False
            elif context._savepoint and ok:
                try:
                    self._conn.execute("RELEASE tx")
                    context._savepoint = False
                    self.listener.kept()
                except sqlite3.Error as exc:
                    own_error, ok = translate(exc), False
            if context._savepoint and not self._poisoned:
                try:
                    self._conn.execute("ROLLBACK TO tx")
                    self._conn.execute("RELEASE tx")
                    self.listener.undone()
                except sqlite3.Error:
                    self._poisoned = True
                    self.listener.lost_batch()
            context._savepoint = False
            member: asyncio.Future[None] | None = None
            if ok:
                member = asyncio.get_running_loop().create_future()
                self._members.append(member)
            return member, own_error
        finally:
            self._release()

    # -- thread side ------------------------------------------------------------------------------

    def close_connection(self) -> None:
        """Thread: close the connection (anything uncommitted is rolled back)."""
        self._conn.close()

    def _commit_job(self) -> BaseException | None:
        if not self._in_batch:
            return None
        error: BaseException | None = None
        try:
            if self._poisoned or not self._conn.in_transaction:
                raise StoreError("the batch transaction was lost after a database error; retry")
            self._conn.execute("COMMIT")
            self.commits += 1
        except Exception as exc:
            error = translate(exc)
            with contextlib.suppress(sqlite3.Error):
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
        self._in_batch = False
        self._poisoned = False
        return error


def _error_of(future: asyncio.Future[Any]) -> BaseException | None:
    if future.cancelled():  # pragma: no cover - writer jobs are never cancelled
        return StoreError("commit cancelled")
    exc = future.exception()
    if exc is not None:
        return translate(exc)
    result = future.result()
    return result if isinstance(result, BaseException) else None
