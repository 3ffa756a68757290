"""The refusals of a typed adaptor, and the gRPC status each one answers.

::

    AdaptorError          the adaptor failed; a bug or an answer it cannot explain (INTERNAL)
    ├── InvalidRequest    a malformed request; nothing changed (INVALID_ARGUMENT)
    │                     sdk.amount.AmountError is one
    ├── NotFound          an unknown account or settlement id (NOT_FOUND)
    ├── Conflict          an idempotency key reused with other content (ALREADY_EXISTS)
    ├── Refused           valid, but not possible now: no liquidity, the peer's ledger
    │                     address not known yet (FAILED_PRECONDITION)
    ├── Unavailable       the ledger cannot be reached; the outcome is unknown: retry with
    │                     the same key (UNAVAILABLE)
    └── Unimplemented     an RPC behind a capability the adaptor does not declare
                          (UNIMPLEMENTED)

A method of ``sdk.LedgerAdaptor`` raises one of these; ``sdk.LedgerAdaptor`` translates it into
its status in one place, with the message as the status details. Write the message for the
operator who reads it on the engine's side: what was refused, and what to do.
"""

from __future__ import annotations

from typing import ClassVar

import grpc


class AdaptorError(Exception):
    """The adaptor failed in a way the caller cannot fix (INTERNAL); the base of the others."""

    code: ClassVar[grpc.StatusCode] = grpc.StatusCode.INTERNAL


class InvalidRequest(AdaptorError, ValueError):
    """A malformed request: the message names the field and the problem."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(AdaptorError):
    """An account that is not set up, or a settlement id never reported."""

    code = grpc.StatusCode.NOT_FOUND


class Conflict(AdaptorError):
    """An idempotency key reused for another account or amount."""

    code = grpc.StatusCode.ALREADY_EXISTS


class Refused(AdaptorError):
    """A valid request the ledger cannot carry out now; nothing was paid."""

    code = grpc.StatusCode.FAILED_PRECONDITION


class Unavailable(AdaptorError):
    """The ledger cannot be reached, so the outcome is unknown; the engine retries."""

    code = grpc.StatusCode.UNAVAILABLE


class Unimplemented(AdaptorError):
    """An RPC the adaptor does not implement."""

    code = grpc.StatusCode.UNIMPLEMENTED
