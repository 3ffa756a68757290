"""Durable state: the engine's stores (host.engine.store's ``Store``) and their failures.

``SqliteStore`` (host.store.sqlite) is the embedded default: one file, group commit;
``PostgresStore`` (host.store.postgres) lets several hosts share one database.
"""

from host.store.base import SchemaTooNew, StoreError, StoreInUse

__all__ = ["SchemaTooNew", "StoreError", "StoreInUse"]
