"""The simledger adaptor's own state, in a small SQLite file (ILP_ADAPTOR_STATE_DB).

What it must not forget across restarts:

- the accounts the host set up and, for each, the peer's ledger account once the peers have
  exchanged them (``peers``);
- every transfer into our ledger account, with whether the host acknowledged it and the watch
  cursor, written in one transaction so that a restart neither loses nor doubles one
  (``incoming``, ``meta``).

``synchronous=NORMAL`` in WAL mode: a power cut may lose the last commits, and every loss is
recovered by design (the cursor rolls back with its transfers and they are read again from the
ledger; a lost acknowledgement means one more re-delivery, which the engine dedups; the ledger
dedups payments by transfer id). So commits need no fsync and run on the event loop.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path

SCHEMA_VERSION = 2
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE peers (account_id TEXT PRIMARY KEY, ledger_account TEXT)",
    # account_id is the host account the payer maps to; NULL while the payer is not known.
    """CREATE TABLE incoming (
        settlement_id TEXT PRIMARY KEY,
        sequence INTEGER NOT NULL UNIQUE,
        payer_ledger_account TEXT NOT NULL,
        amount TEXT NOT NULL,
        account_id TEXT,
        acknowledged INTEGER NOT NULL DEFAULT 0
    )""",
)


#: Version 1 kept the idempotency keys in a table ``sent``; the SDK's SqlitePaymentStore keeps
#: them now (``sdk_payments``, same file). Dropping the old claims loses nothing: a reused key's
#: transfer id is the same, and the ledger refuses it with other content.
_UPGRADE_FROM_1 = ("DROP TABLE IF EXISTS sent",)


@dataclass(frozen=True)
class Incoming:
    """A transfer into our ledger account, attributed to the host account of its payer."""

    settlement_id: str
    account_id: str
    amount: int
    sequence: int


class Acknowledgement:
    """What ReceiveMoney found: the three answers the contract distinguishes."""

    ACKNOWLEDGED = "acknowledged"
    ALREADY = "already acknowledged"
    UNKNOWN = "never reported"


class AdaptorState:
    """The adaptor's SQLite file. One connection, used from the event loop only."""

    def __init__(self, path: str | Path) -> None:
        self._db = sqlite3.connect(str(path), isolation_level=None)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"{path} has schema version {version}; this adaptor reads up to "
                    f"{SCHEMA_VERSION}: use a newer adaptor or another ILP_ADAPTOR_STATE_DB"
                )
            if version < SCHEMA_VERSION:
                with self._transaction():
                    for statement in _SCHEMA if version == 0 else _UPGRADE_FROM_1:
                        self._db.execute(statement)
                    self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        except BaseException:
            self._db.close()
            raise

    def close(self) -> None:
        """Close the file."""
        self._db.close()

    def _transaction(self) -> sqlite3.Connection:
        # sqlite3's context manager commits or rolls back; BEGIN IMMEDIATE takes the write lock
        # up front so that a read-then-write cannot interleave with another writer.
        self._db.execute("BEGIN IMMEDIATE")
        return self._db

    # -- meta ---------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        """A stored setting (watch cursor, the ledger's asset), or None."""
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        """Store a setting."""
        with self._transaction():
            self._set_meta(key, value)

    def _set_meta(self, key: str, value: str) -> None:
        self._db.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (key, value),
        )

    def watch_cursor(self) -> int:
        """The sequence of the last incoming transfer recorded (0 before the first)."""
        return int(self.get_meta("watch_cursor") or 0)

    # -- peers --------------------------------------------------------------------------------

    def add_account(self, account_id: str) -> None:
        """Record a set-up account (idempotent; keeps a known peer ledger account)."""
        with self._transaction():
            self._db.execute(
                "INSERT INTO peers (account_id) VALUES (?) ON CONFLICT (account_id) DO NOTHING",
                (account_id,),
            )

    def delete_account(self, account_id: str) -> None:
        """Forget an account (idempotent)."""
        with self._transaction():
            self._db.execute("DELETE FROM peers WHERE account_id = ?", (account_id,))

    def has_account(self, account_id: str) -> bool:
        """Whether the host set up ``account_id``."""
        row = self._db.execute("SELECT 1 FROM peers WHERE account_id = ?", (account_id,))
        return row.fetchone() is not None

    def peer_ledger_account(self, account_id: str) -> str | None:
        """The peer's ledger account for ``account_id``, None while not known."""
        row = self._db.execute(
            "SELECT ledger_account FROM peers WHERE account_id = ?", (account_id,)
        ).fetchone()
        return None if row is None else row[0]

    def accounts_awaiting_exchange(self) -> list[str]:
        """Set-up accounts whose peer ledger account is not known yet."""
        rows = self._db.execute(
            "SELECT account_id FROM peers WHERE ledger_account IS NULL ORDER BY account_id"
        )
        return [row[0] for row in rows]

    def learn_peer_ledger_account(self, account_id: str, ledger_account: str) -> list[Incoming]:
        """Record the peer's ledger account for ``account_id``.

        Transfers from that ledger account that were waiting for their payer to be known are
        attributed to ``account_id`` in the same transaction; they are returned, in ledger
        order, to be reported.
        """
        with self._transaction():
            self._db.execute(
                "UPDATE peers SET ledger_account = ? WHERE account_id = ?",
                (ledger_account, account_id),
            )
            self._db.execute(
                "UPDATE incoming SET account_id = ? "
                "WHERE account_id IS NULL AND payer_ledger_account = ?",
                (account_id, ledger_account),
            )
        return [i for i in self.unacknowledged() if i.account_id == account_id]

    def _account_of_payer(self, ledger_account: str) -> str | None:
        # Two host accounts behind one ledger account is a configuration the adaptor cannot
        # disambiguate; the first in id order gets the money, deterministically.
        row = self._db.execute(
            "SELECT account_id FROM peers WHERE ledger_account = ? ORDER BY account_id LIMIT 1",
            (ledger_account,),
        ).fetchone()
        return None if row is None else row[0]

    # -- incoming -----------------------------------------------------------------------------

    def record_incoming(
        self, settlement_id: str, sequence: int, payer_ledger_account: str, amount: int
    ) -> Incoming | None:
        """Record one transfer into our ledger account and move the cursor past it.

        Returns the settlement to report now, or None when its payer is not known yet (it is
        kept), it was recorded before (a replay after a reconnect), or it is a mint (funding,
        not a settlement: only the cursor moves).
        """
        with self._transaction():
            if sequence > self.watch_cursor():
                self._set_meta("watch_cursor", str(sequence))
            if not payer_ledger_account:
                return None
            inserted = self._db.execute(
                "INSERT INTO incoming (settlement_id, sequence, payer_ledger_account, amount, "
                "account_id) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
                (
                    settlement_id,
                    sequence,
                    payer_ledger_account,
                    str(amount),
                    self._account_of_payer(payer_ledger_account),
                ),
            ).rowcount
        if not inserted:
            return None
        row = self._db.execute(
            "SELECT account_id FROM incoming WHERE settlement_id = ?", (settlement_id,)
        ).fetchone()
        if row[0] is None:
            return None
        return Incoming(settlement_id, row[0], amount, sequence)

    def unacknowledged(self) -> list[Incoming]:
        """Every attributed, unacknowledged incoming settlement, in ledger order."""
        rows = self._db.execute(
            "SELECT settlement_id, account_id, amount, sequence FROM incoming "
            "WHERE account_id IS NOT NULL AND acknowledged = 0 ORDER BY sequence"
        )
        return [Incoming(row[0], row[1], int(row[2]), row[3]) for row in rows]

    def acknowledge(self, settlement_id: str) -> str:
        """Mark an incoming settlement acknowledged; an Acknowledgement value."""
        with self._transaction():
            row = self._db.execute(
                "SELECT account_id, acknowledged FROM incoming WHERE settlement_id = ?",
                (settlement_id,),
            ).fetchone()
            if row is None or row[0] is None:
                return Acknowledgement.UNKNOWN
            if row[1]:
                return Acknowledgement.ALREADY
            self._db.execute(
                "UPDATE incoming SET acknowledged = 1 WHERE settlement_id = ?", (settlement_id,)
            )
        return Acknowledgement.ACKNOWLEDGED
