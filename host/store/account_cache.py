"""The accounts of an SQLite file this process owns, kept in memory beside the file.

A forwarded packet reads two accounts for its credit checks and locks, reads and writes the
same two in the transaction that applies its balance changes. The file has one writer, this
process (host.store.sqlitefile), so every change of an account passes through the store's own
statements and the store can keep what they wrote instead of reading it back: a read becomes a
dict lookup and no ``Account`` is rebuilt from a row.

Two views, because a transaction and a reader outside transactions see different things:

- *written*: the accounts as the writer connection sees them, the open batch's changes included
  (what ``lock_account`` returns inside a transaction);
- *committed*: the accounts as the last committed batch left them (what a read outside a
  transaction returns: the credit check, the admin API).

Group commit (host.store.groupcommit) reports each step of a transaction's life: kept (its
savepoint released), undone (rolled back to it), and of its batch: committed, or lost (the
COMMIT failed, or SQLite rolled the batch back); only one transaction runs at a time and a
batch's COMMIT holds the turn, so these steps are never concurrent. A statement whose effect
the store cannot follow (``run_in_thread``: an UPDATE over many rows) empties the written view
and, once its batch committed, the committed one. A miss is read from the file and kept.
Every view is a cache of the file: emptying one is always correct, only slower.
"""

from __future__ import annotations

from host.engine.model import Account


class AccountCache:
    """The two views of the accounts (see the module docstring)."""

    def __init__(self) -> None:
        self._committed: dict[str, Account] = {}
        self._written: dict[str, Account] = {}
        #: Accounts changed in the open batch.
        self._changed: set[str] = set()
        #: The written view's entries before the open transaction changed them (None: absent).
        self._undo: dict[str, Account | None] = {}
        #: A statement the cache cannot follow ran in the open batch.
        self._blind = False

    # -- outside transactions ---------------------------------------------------------------------

    def committed(self, account_id: str) -> Account | None:
        """The committed account, None if not in memory (read it, then :meth:`keep_committed`)."""
        return self._committed.get(account_id)

    def keep_committed(self, account: Account) -> None:
        """Remember an account just read from the file outside any transaction.

        The read and this call run without a pause, and a batch's commit is reported on the
        same thread: what was read cannot be older than what is committed when this runs.
        """
        self._committed.setdefault(account.id, account)

    # -- inside the transaction that has the turn --------------------------------------------------

    def written(self, account_id: str) -> Account | None:
        """The account as the writer sees it, None if not in memory (read it, then
        :meth:`keep_written`)."""
        return self._written.get(account_id)

    def keep_written(self, account: Account) -> None:
        """Remember an account just read through the writer connection."""
        self._written.setdefault(account.id, account)

    def write(self, account: Account) -> None:
        """The transaction wrote ``account`` (inserted or updated it)."""
        if account.id not in self._undo:
            self._undo[account.id] = self._written.get(account.id)
        self._written[account.id] = account
        self._changed.add(account.id)

    def blind_write(self) -> None:
        """A statement ran whose effect on the accounts is not known."""
        self._written.clear()
        self._blind = True

    # -- group commit's reports (host.store.groupcommit.BatchListener) -----------------------------

    def kept(self) -> None:
        """The transaction's savepoint was released: its writes belong to the batch."""
        self._undo.clear()

    def undone(self) -> None:
        """The transaction was rolled back to its savepoint: its writes never happened."""
        for account_id, before in self._undo.items():
            if before is None:
                self._written.pop(account_id, None)
            else:
                self._written[account_id] = before
        self._undo.clear()

    def committed_batch(self) -> None:
        """The batch committed: what it wrote is what a reader sees now."""
        if self._blind:
            self._committed.clear()
        else:
            for account_id in self._changed:
                account = self._written.get(account_id)
                if account is None:
                    self._committed.pop(account_id, None)
                else:
                    self._committed[account_id] = account
        self._changed.clear()
        self._blind = False

    def lost_batch(self) -> None:
        """The batch was rolled back: the file holds what was committed before it."""
        self._written.clear()
        self._undo.clear()
        self._changed.clear()
        self._blind = False
