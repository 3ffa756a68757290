"""The failures of the host's SQLite and PostgreSQL files: what a store (host.engine.store's
``Store``, implemented by host.store.sqlite and host.store.postgres) and the connector's
clearing file (host.connector.durable_clearing) raise when the database fails them.
"""

from __future__ import annotations


class StoreError(Exception):
    """The store failed (I/O error, corrupt or foreign database); the message says what to do."""


class SchemaTooNew(StoreError):
    """The database was written by a newer version of the host than this one."""


class StoreInUse(StoreError):
    """Another process (or another open store in this one) already uses the database."""
