"""The simulated ledger's book: accounts and transfers in SQLite.

Synchronous and single-connection: the service runs every call on one worker thread, so calls
never interleave. Balances and amounts are stored as TEXT decimal integers (a ledger may count
beyond 64 bits). Every transfer is one ``BEGIN IMMEDIATE`` transaction, in WAL mode with
``synchronous=FULL``: a transfer that was answered is on disk.

Idempotency lives here because it must be atomic with the transfer: the same ``transfer_id``
with the same content returns the first transfer; with other content TransferConflict.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from sdk.amount import fits

SCHEMA_VERSION: Final = 1
DEFAULT_ASSET_CODE: Final = "USD"
DEFAULT_ASSET_SCALE: Final = 2

# Statements run one by one: sqlite3's executescript would commit the open transaction.
_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE accounts (account_id TEXT PRIMARY KEY, balance TEXT NOT NULL)",
    """CREATE TABLE transfers (
        sequence INTEGER PRIMARY KEY AUTOINCREMENT,
        transfer_id TEXT NOT NULL UNIQUE,
        from_account_id TEXT NOT NULL,
        to_account_id TEXT NOT NULL,
        amount TEXT NOT NULL,
        memo TEXT NOT NULL
    )""",
    "CREATE INDEX transfers_into ON transfers (to_account_id, sequence)",
)


class LedgerError(Exception):
    """A transfer or lookup the ledger refuses; subclasses say why."""


class UnknownAccount(LedgerError):
    """No account with that id."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"ledger account {account_id!r} does not exist")
        self.account_id = account_id


class InsufficientFunds(LedgerError):
    """The payer's balance is below the amount."""

    def __init__(self, account_id: str, balance: int, amount: int) -> None:
        super().__init__(f"ledger account {account_id!r} holds {balance}, cannot pay {amount}")


class BalanceOverflow(LedgerError):
    """The payee's balance would no longer fit in an amount (78 digits)."""

    def __init__(self, account_id: str) -> None:
        super().__init__(f"ledger account {account_id!r} would exceed the largest balance")


class TransferConflict(LedgerError):
    """A transfer id already used for a transfer with other content."""

    def __init__(self, existing: LedgerTransfer) -> None:
        super().__init__(
            f"transfer id {existing.transfer_id!r} was already used for another transfer "
            f"({existing.amount} from {existing.from_account_id or '(mint)'!r} to "
            f"{existing.to_account_id!r}); use a new id for a new transfer"
        )
        self.existing = existing


class BookMismatch(LedgerError):
    """The database file cannot be opened as asked (other asset, newer schema)."""


@dataclass(frozen=True)
class Asset:
    """What the ledger counts: an asset code and the scale of its units."""

    code: str
    scale: int


@dataclass(frozen=True)
class LedgerTransfer:
    """A committed transfer. ``from_account_id`` is empty for a mint."""

    transfer_id: str
    from_account_id: str
    to_account_id: str
    amount: int
    memo: str
    sequence: int

    def same_content(
        self, from_account_id: str, to_account_id: str, amount: int, memo: str
    ) -> bool:
        """Whether a request repeats this transfer rather than reusing its id."""
        return (self.from_account_id, self.to_account_id, self.amount, self.memo) == (
            from_account_id,
            to_account_id,
            amount,
            memo,
        )


_TRANSFER_COLUMNS = "transfer_id, from_account_id, to_account_id, amount, memo, sequence"


def _transfer(row: tuple[str, str, str, str, str, int]) -> LedgerTransfer:
    return LedgerTransfer(row[0], row[1], row[2], int(row[3]), row[4], row[5])


class LedgerStore:
    """Accounts and transfers of one simulated ledger, in one SQLite file."""

    def __init__(
        self, path: str | Path, asset_code: str | None = None, asset_scale: int | None = None
    ) -> None:
        """Open (creating if needed) the book at ``path``.

        A new book takes the given asset (default USD, scale 2); an existing one keeps its own,
        and asking for another raises BookMismatch rather than misreading every balance.
        """
        # One worker thread owns the connection (see the module docstring); the connection is
        # created on the caller's thread, hence check_same_thread=False.
        self._db = sqlite3.connect(str(path), isolation_level=None, check_same_thread=False)
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self.asset = self._open_book(asset_code, asset_scale)
        except BaseException:
            self._db.close()
            raise

    def _open_book(self, asset_code: str | None, asset_scale: int | None) -> Asset:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            (version,) = self._db.execute("PRAGMA user_version").fetchone()
            if version == 0:
                for statement in _SCHEMA:
                    self._db.execute(statement)
                asset = Asset(
                    asset_code or DEFAULT_ASSET_CODE,
                    DEFAULT_ASSET_SCALE if asset_scale is None else asset_scale,
                )
                self._db.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [("asset_code", asset.code), ("asset_scale", str(asset.scale))],
                )
                self._db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            elif version > SCHEMA_VERSION:
                raise BookMismatch(
                    f"the ledger database has schema version {version}; this program reads "
                    f"up to {SCHEMA_VERSION}: use a newer simledger"
                )
            else:
                meta = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                asset = Asset(meta["asset_code"], int(meta["asset_scale"]))
                wanted = Asset(
                    asset_code or asset.code, asset.scale if asset_scale is None else asset_scale
                )
                if wanted != asset:
                    raise BookMismatch(
                        f"the ledger database holds {asset.code} at scale {asset.scale}, "
                        f"not {wanted.code} at scale {wanted.scale}: drop the --asset flags "
                        "or use another --db"
                    )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return asset

    def close(self) -> None:
        """Close the database file."""
        self._db.close()

    def create_account(self, account_id: str) -> int:
        """Open ``account_id`` at balance 0 unless it exists; its balance either way."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(
                "INSERT INTO accounts (account_id, balance) VALUES (?, '0') "
                "ON CONFLICT (account_id) DO NOTHING",
                (account_id,),
            )
            balance = self._balance(account_id)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        assert balance is not None
        return balance

    def balance(self, account_id: str) -> int:
        """The balance of ``account_id``; UnknownAccount if there is none."""
        balance = self._balance(account_id)
        if balance is None:
            raise UnknownAccount(account_id)
        return balance

    def _balance(self, account_id: str) -> int | None:
        row = self._db.execute(
            "SELECT balance FROM accounts WHERE account_id = ?", (account_id,)
        ).fetchone()
        return None if row is None else int(row[0])

    def transfer(
        self, transfer_id: str, from_account_id: str, to_account_id: str, amount: int, memo: str
    ) -> LedgerTransfer:
        """Move ``amount`` (> 0) atomically; an empty ``from_account_id`` mints it.

        Idempotent by ``transfer_id``. Raises TransferConflict, UnknownAccount,
        InsufficientFunds or BalanceOverflow, in that order of checking; nothing changes then.
        """
        self._db.execute("BEGIN IMMEDIATE")
        try:
            done = self._transfer_or_replay(
                transfer_id, from_account_id, to_account_id, amount, memo
            )
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        return done

    def _transfer_or_replay(
        self, transfer_id: str, from_account_id: str, to_account_id: str, amount: int, memo: str
    ) -> LedgerTransfer:
        existing = self.get_transfer(transfer_id)
        if existing is not None:
            if existing.same_content(from_account_id, to_account_id, amount, memo):
                return existing
            raise TransferConflict(existing)
        payee_balance = self.balance(to_account_id)
        if from_account_id:
            payer_balance = self.balance(from_account_id)
            if payer_balance < amount:
                raise InsufficientFunds(from_account_id, payer_balance, amount)
            self._set_balance(from_account_id, payer_balance - amount)
        if not fits(payee_balance + amount):
            raise BalanceOverflow(to_account_id)
        self._set_balance(to_account_id, payee_balance + amount)
        cursor = self._db.execute(
            "INSERT INTO transfers (transfer_id, from_account_id, to_account_id, amount, memo) "
            "VALUES (?, ?, ?, ?, ?)",
            (transfer_id, from_account_id, to_account_id, str(amount), memo),
        )
        assert cursor.lastrowid is not None
        return LedgerTransfer(
            transfer_id, from_account_id, to_account_id, amount, memo, cursor.lastrowid
        )

    def _set_balance(self, account_id: str, balance: int) -> None:
        self._db.execute(
            "UPDATE accounts SET balance = ? WHERE account_id = ?", (str(balance), account_id)
        )

    def get_transfer(self, transfer_id: str) -> LedgerTransfer | None:
        """The transfer with that id, or None."""
        row = self._db.execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers WHERE transfer_id = ?", (transfer_id,)
        ).fetchone()
        return None if row is None else _transfer(row)

    def last_sequence(self) -> int:
        """The highest transfer sequence in the book (0 for none)."""
        (last,) = self._db.execute("SELECT COALESCE(MAX(sequence), 0) FROM transfers").fetchone()
        return int(last)

    def transfers_into(
        self, account_id: str, after_sequence: int, limit: int
    ) -> list[LedgerTransfer]:
        """Up to ``limit`` transfers into ``account_id`` with a sequence above ``after_sequence``,
        in sequence order."""
        rows = self._db.execute(
            f"SELECT {_TRANSFER_COLUMNS} FROM transfers "
            "WHERE to_account_id = ? AND sequence > ? ORDER BY sequence LIMIT ?",
            (account_id, after_sequence, limit),
        ).fetchall()
        return [_transfer(row) for row in rows]

    def transfers(
        self, after_sequence: int, limit: int, account_id: str | None = None
    ) -> list[LedgerTransfer]:
        """Up to ``limit`` transfers with a sequence above ``after_sequence``, in sequence
        order: every one, or those into or out of ``account_id`` (UnknownAccount if it has no
        account)."""
        if account_id is None:
            rows = self._db.execute(
                f"SELECT {_TRANSFER_COLUMNS} FROM transfers "
                "WHERE sequence > ? ORDER BY sequence LIMIT ?",
                (after_sequence, limit),
            ).fetchall()
        else:
            if self._balance(account_id) is None:
                raise UnknownAccount(account_id)
            rows = self._db.execute(
                f"SELECT {_TRANSFER_COLUMNS} FROM transfers "
                "WHERE (to_account_id = ? OR from_account_id = ?) AND sequence > ? "
                "ORDER BY sequence LIMIT ?",
                (account_id, account_id, after_sequence, limit),
            ).fetchall()
        return [_transfer(row) for row in rows]
