"""One SQLite file owned by this process: what the engine's store and the connector's clearing
file share.

- An exclusive lock on ``<file>.lock`` (flock, released by the kernel if the process dies), so
  that the file belongs to one process at a time.
- Three connections: the writer, through which every transaction goes (group commit: one fsync
  per batch; its statements run on the event loop's thread, its COMMIT in a dedicated thread,
  host.store.groupcommit), and two query-only readers for reads outside transactions, which
  therefore see committed data only: one in that thread for reads that may scan many rows
  (:meth:`SqliteFile.read`), one on the loop's thread for reads of a row by its key
  (:meth:`SqliteFile.read_now`, the packet path's credit checks: no thread hop).
- ``synchronous=FULL`` and WAL: a commit is on disk before anyone is told it happened.

Each user brings its own schema and start-up work (``prepare``), run in the thread at open.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from host.store.base import StoreError, StoreInUse
from host.store.groupcommit import (
    BatchListener,
    GroupCommit,
    TxContext,
    WriterThread,
    translate,
)

T = TypeVar("T")
R = TypeVar("R")

BUSY_TIMEOUT_MS = 5000


def connect_database(path: str, busy_timeout_ms: int, query_only: bool) -> sqlite3.Connection:
    """A connection in autocommit mode, WAL, synchronous=FULL, foreign keys on.

    Not bound to the thread that opened it: the owners of each connection take care that one
    thread at a time uses it (host.store.groupcommit).
    """
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if mode != "wal":
            raise StoreError(f"{path}: cannot use WAL journaling here (got {mode!r})")
        # FULL: a commit is on disk (the WAL is fsynced) before anyone is told it happened.
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("PRAGMA foreign_keys = ON")
        if query_only:
            conn.execute("PRAGMA query_only = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def create_private(path: str) -> None:
    """Create the database file readable by its owner only (0600) unless it exists.

    SQLite creates the file with the process umask (0644 by default), and its ``-wal`` and
    ``-shm`` files with the database file's mode: creating it private first keeps all three
    away from other local users. An existing file keeps the mode its owner gave it.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    os.close(fd)


def lock_database(path: str) -> int:
    """Hold ``<path>.lock`` (flock) for this process; StoreInUse if another one holds it."""
    try:
        fd = os.open(f"{path}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise StoreError(f"cannot open the lock file of {path}: {exc.strerror}") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StoreInUse(
            f"{path} is in use by another process (or already open in this one); "
            "stop the other host or give this one its own database"
        ) from None
    return fd


def _connections(
    path: str,
    busy_timeout_ms: int,
    what: str,
    prepare: Callable[[sqlite3.Connection], R],
) -> tuple[sqlite3.Connection, sqlite3.Connection, sqlite3.Connection, R]:
    opened: list[sqlite3.Connection] = []
    try:
        opened.append(connect_database(path, busy_timeout_ms, query_only=False))
        prepared = prepare(opened[0])
        for _ in range(2):
            opened.append(connect_database(path, busy_timeout_ms, query_only=True))
        writer, reader, point_reader = opened
        return writer, reader, point_reader, prepared
    except BaseException as exc:
        for conn in opened:
            conn.close()
        if isinstance(exc, sqlite3.DatabaseError):
            raise StoreError(f"{path}: not a usable {what}: {exc}") from exc
        raise


class SqliteFile:
    """The file, its lock, its thread and its three connections. Use :meth:`open`."""

    def __init__(
        self,
        path: str,
        writer: WriterThread,
        group: GroupCommit,
        reader: sqlite3.Connection,
        point_reader: sqlite3.Connection,
        lock_fd: int,
    ) -> None:
        self.path = path
        self._writer = writer
        self.group = group
        self._reader = reader
        self._point_reader = point_reader
        self._lock_fd = lock_fd
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | os.PathLike[str],
        *,
        what: str,
        prepare: Callable[[sqlite3.Connection], R],
        max_batch: int = 256,
        busy_timeout_ms: int = BUSY_TIMEOUT_MS,
        listener: BatchListener | None = None,
    ) -> tuple[SqliteFile, R]:
        """Lock and open ``path``, then run ``prepare(writer connection)`` in the thread
        (migrations, start-up fixes); the file and what ``prepare`` returned.

        ``what`` names the kind of database in errors ("not a usable <what>"); ``listener`` is
        told of each transaction's and batch's end (host.store.groupcommit).
        """
        path = str(Path(path))
        lock_fd = lock_database(path)
        try:
            create_private(path)
        except OSError as exc:
            os.close(lock_fd)
            raise StoreError(f"cannot create the database {path}: {exc.strerror}") from exc
        writer = WriterThread(f"ilp-sqlite-{Path(path).stem}")
        try:
            conn, reader, point_reader, prepared = await writer.submit(
                partial(_connections, path, busy_timeout_ms, what, prepare)
            )
        except BaseException:
            await writer.stop(lambda: None)
            os.close(lock_fd)
            raise
        group = GroupCommit(writer, conn, max_batch, listener)
        return cls(path, writer, group, reader, point_reader, lock_fd), prepared

    def check_open(self) -> None:
        if self._closed:
            raise StoreError(f"the database {self.path} is closed")

    def transaction(self) -> contextlib.AbstractAsyncContextManager[TxContext]:
        """A logical transaction, committed with its batch (host.store.groupcommit)."""
        self.check_open()
        return self.group.transaction()

    async def read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(reader)`` in the thread: committed data only."""
        self.check_open()
        reader = self._reader
        try:
            return await self._writer.submit(lambda: fn(reader))
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def read_now(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn(reader)`` at once on the loop's thread: committed data only. For reads of a few
        rows by key (microseconds); anything that may scan goes to :meth:`read`."""
        self.check_open()
        try:
            return fn(self._point_reader)
        except sqlite3.Error as exc:
            raise translate(exc) from exc

    async def close(self) -> None:
        """Commit what is pending, close the connections and the thread, unlock. Idempotent."""
        if self._closed:
            return
        self._closed = True
        group, readers = self.group, (self._reader, self._point_reader)
        try:
            with contextlib.suppress(StoreError):
                await group.flush()
        finally:

            def close_connections() -> None:
                for reader in readers:
                    reader.close()
                group.close_connection()

            await self._writer.stop(close_connections)
            os.close(self._lock_fd)
