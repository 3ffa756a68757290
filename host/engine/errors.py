"""The engine's exceptions, and the status each one stands for.

::

    EngineError                  a request the engine refused; nothing has changed
    ├── InvalidArgument          malformed input (INVALID_ARGUMENT)
    ├── NotFound                 unknown account or settlement (NOT_FOUND)
    ├── FailedPrecondition       valid, but not possible in the current state (FAILED_PRECONDITION)
    └── AlreadyExists            an id or idempotency key reused with other content (ALREADY_EXISTS)

    SettlementError              raised by a SettlementPort (the adaptor side), never by the engine
    ├── TransientSettlementError outcome unknown or refused for now: retry later with the same key
    └── PermanentSettlementError the adaptor refused and nothing was paid: park the settlement

The engine does not import gRPC: ``EngineError.code`` is the name of a ``grpc.StatusCode``
member, so the serving layer translates with ``grpc.StatusCode[err.code]``.
"""

from __future__ import annotations

from typing import ClassVar


class EngineError(Exception):
    """A request the engine refused; the message says what, to what, and what to do."""

    code: ClassVar[str] = "UNKNOWN"


class InvalidArgument(EngineError):
    """Malformed input: a bad id, amount, key or policy."""

    code = "INVALID_ARGUMENT"


class NotFound(EngineError):
    """An unknown account or settlement."""

    code = "NOT_FOUND"


class FailedPrecondition(EngineError):
    """A valid request that the current state does not allow (nothing owed, adaptor down...)."""

    code = "FAILED_PRECONDITION"


class AlreadyExists(EngineError):
    """An account id or idempotency key reused with different content."""

    code = "ALREADY_EXISTS"


class SettlementError(Exception):
    """A SettlementPort could not do what it was asked."""


class TransientSettlementError(SettlementError):
    """The outcome is unknown or the refusal may pass (ledger unreachable, no liquidity yet).

    The engine retries later with the same idempotency key, so a payment that did go through is
    reported by the adaptor's idempotency instead of being paid again.
    """


class PermanentSettlementError(SettlementError):
    """The adaptor refused the request and paid nothing (bad account, bad amount, reused key).

    The engine parks the settlement as FAILED for an operator; it never refunds it silently.
    """
