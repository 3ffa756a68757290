"""Group commit: many logical transactions, one SQLite transaction and one fsync per batch.

A dedicated thread owns the SQLite connections and runs jobs in the order they were submitted
(``WriterThread``). On top of it, ``GroupCommit`` runs logical transactions one after another,
each inside a SAVEPOINT of a shared SQLite transaction. When a logical transaction ends and
others are already waiting for their turn, the shared transaction stays open for them; the one
that ends with nobody waiting (or fills the batch) commits it. Every logical transaction's
``async with`` returns only after the commit of its batch succeeded, so nothing is acknowledged
before it is durable; a commit failure fails every member of the batch.

A logical transaction that raises is rolled back to its savepoint and leaves the others intact.
Writes can be deferred (``TxContext.defer``): they run in the thread just before the next read of
the same transaction or at its end, which saves a thread round trip per write.
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
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from host.store.base import StoreError

T = TypeVar("T")
Write = Callable[[sqlite3.Connection], object]

_Job = tuple[Callable[[], Any], "asyncio.Future[Any]", asyncio.AbstractEventLoop]
_inside: contextvars.ContextVar[GroupCommit | None] = contextvars.ContextVar(
    "ilp_store_transaction", default=None
)


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
    #: Writes waiting to run in the thread (see module docstring).
    _writes: list[Write] = field(default_factory=list)
    #: Thread side: whether this transaction's savepoint exists.
    _savepoint: bool = False
    _ended: bool = False

    async def run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` in the thread, inside this transaction; its result."""
        if self._ended:
            raise StoreError("the transaction has ended")
        writes, self._writes = self._writes, []
        try:
            return await self._owner.writer.submit(
                partial(self._owner.in_savepoint, self, writes, fn)
            )
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    def defer(self, write: Write) -> None:
        """Queue a write to run in the thread before the next ``run`` or at the end."""
        if self._ended:
            raise StoreError("the transaction has ended")
        self._writes.append(write)


class GroupCommit:
    """Serializes logical transactions on one connection and commits them in batches."""

    def __init__(
        self, writer: WriterThread, connection: sqlite3.Connection, max_batch: int
    ) -> None:
        """``connection`` belongs to the writer thread: only jobs of ``writer`` touch it."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.writer = writer
        self._conn = connection
        self._max_batch = max_batch
        # Event-loop side: the turn of logical transactions, and the batch awaiting its commit.
        self._busy = False
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._members: list[asyncio.Future[None]] = []
        # Thread side: whether the shared SQLite transaction is open, and whether it was lost.
        self._in_batch = False
        self._poisoned = False
        #: Committed batches and logical transactions, for tests and benchmarks.
        self.commits = 0
        self.transactions = 0

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[TxContext]:
        """A logical transaction; leaving normally returns after its batch committed."""
        if _inside.get() is self:
            raise RuntimeError("nested store transaction: it would wait for itself forever")
        await self._acquire()
        token = _inside.set(self)
        context = TxContext(self)
        member: asyncio.Future[None] | None = None
        try:
            yield context
            member = asyncio.get_running_loop().create_future()
        finally:
            _inside.reset(token)
            context._ended = True
            self._finish(context, member)
        await member

    async def flush(self) -> None:
        """Wait for the turn, commit whatever batch is open, and keep the turn (for closing)."""
        await self._acquire()
        done = self.writer.submit(self._commit_job)
        batch, self._members = self._members, []
        error = await done
        self._resolve(batch, error)
        if error is not None:
            raise error

    # -- event-loop side --------------------------------------------------------------------------

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
                self._pass_on()  # handed the turn just as we were cancelled: hand it further
            else:
                self._waiters.remove(turn)
            raise

    def _someone_waits(self) -> bool:
        return any(not turn.done() for turn in self._waiters)

    def _finish(self, context: TxContext, member: asyncio.Future[None] | None) -> None:
        self.transactions += 1
        if member is not None:
            self._members.append(member)
        commit = not self._someone_waits() or len(self._members) >= self._max_batch
        batch: list[asyncio.Future[None]] | None = None
        if commit:
            batch, self._members = self._members, []
        job = partial(self._finish_job, context, context._writes, member is not None, commit)
        context._writes = []
        self.writer.submit(job).add_done_callback(partial(self._finished, member, batch))
        self._handoff()

    def _pass_on(self) -> None:
        if self._members and not self._someone_waits():
            batch, self._members = self._members, []
            done = self.writer.submit(self._commit_job)
            done.add_done_callback(lambda f: self._resolve(batch, _error_of(f)))
        self._handoff()

    def _handoff(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)
                return
        self._busy = False

    def _finished(
        self,
        member: asyncio.Future[None] | None,
        batch: list[asyncio.Future[None]] | None,
        done: asyncio.Future[tuple[BaseException | None, BaseException | None]],
    ) -> None:
        own_error: BaseException | None
        commit_error: BaseException | None
        if done.cancelled() or done.exception() is not None:  # pragma: no cover - a bug
            own_error = commit_error = StoreError(f"commit job failed: {_error_of(done)}")
        else:
            own_error, commit_error = done.result()
        if member is not None and own_error is not None and not member.done():
            member.set_exception(own_error)
        if batch is not None:
            self._resolve(batch, commit_error)

    @staticmethod
    def _resolve(batch: list[asyncio.Future[None]], error: BaseException | None) -> None:
        for member in batch:
            if not member.done():
                if error is None:
                    member.set_result(None)
                else:
                    member.set_exception(error)

    # -- thread side ------------------------------------------------------------------------------

    def close_connection(self) -> None:
        """Thread: close the connection (anything uncommitted is rolled back)."""
        self._conn.close()

    def in_savepoint(
        self, context: TxContext, writes: list[Write], fn: Callable[[sqlite3.Connection], T]
    ) -> T:
        """Thread: enter the transaction's savepoint, run the deferred writes, then ``fn``."""
        self._enter(context)
        for write in writes:
            write(self._conn)
        return fn(self._conn)

    def _enter(self, context: TxContext) -> None:
        if self._in_batch and not self._conn.in_transaction:
            # SQLite rolled the whole transaction back after an error: the batch is lost.
            self._poisoned = True
        if self._poisoned:
            raise StoreError("the batch transaction was lost after a database error; retry")
        if context._savepoint:
            return
        if not self._in_batch:
            self._conn.execute("BEGIN IMMEDIATE")
            self._in_batch = True
        self._conn.execute("SAVEPOINT tx")
        context._savepoint = True

    def _finish_job(
        self, context: TxContext, writes: list[Write], ok: bool, commit: bool
    ) -> tuple[BaseException | None, BaseException | None]:
        own_error: BaseException | None = None
        if ok and (writes or context._savepoint):
            try:
                self.in_savepoint(context, writes, lambda conn: None)
                self._conn.execute("RELEASE tx")
                context._savepoint = False
            except Exception as exc:
                own_error = translate(exc)
        if context._savepoint:
            try:
                self._conn.execute("ROLLBACK TO tx")
                self._conn.execute("RELEASE tx")
            except sqlite3.Error:
                self._poisoned = True
            context._savepoint = False
        return own_error, (self._commit_job() if commit else None)

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
