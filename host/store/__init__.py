"""Durable state of the settlement engine behind the Store protocol (host.store.base).

``SqliteStore`` (host.store.sqlite) is the embedded default: one file, group commit.
"""

from host.store.base import SchemaTooNew, Store, StoreError, StoreInUse, Transaction

__all__ = ["SchemaTooNew", "Store", "StoreError", "StoreInUse", "Transaction"]
