"""Connection lifecycle in gRPC's connectivity vocabulary: one explicit transition table.

Pure logic, shared by adaptors (their ledger and peer links) and the host (its channel to each
adaptor). A connection carries since-when, last error and attempt count; an illegal transition
is a bug and raises IllegalTransition.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from sdk.pb.ilphost.types.v1 import types_pb2


class Connectivity(enum.IntEnum):
    """gRPC connectivity states; values equal ilphost.types.v1.ConnectivityState."""

    IDLE = types_pb2.CONNECTIVITY_STATE_IDLE
    CONNECTING = types_pb2.CONNECTIVITY_STATE_CONNECTING
    READY = types_pb2.CONNECTIVITY_STATE_READY
    TRANSIENT_FAILURE = types_pb2.CONNECTIVITY_STATE_TRANSIENT_FAILURE
    SHUTDOWN = types_pb2.CONNECTIVITY_STATE_SHUTDOWN


_C = Connectivity
#: Every legal transition. gRPC's rules: a connection only becomes READY by CONNECTING; failure
#: and idleness are entered from where they can happen; SHUTDOWN is final.
TRANSITIONS: dict[Connectivity, frozenset[Connectivity]] = {
    _C.IDLE: frozenset({_C.CONNECTING, _C.SHUTDOWN}),
    _C.CONNECTING: frozenset({_C.READY, _C.TRANSIENT_FAILURE, _C.IDLE, _C.SHUTDOWN}),
    _C.READY: frozenset({_C.IDLE, _C.TRANSIENT_FAILURE, _C.CONNECTING, _C.SHUTDOWN}),
    _C.TRANSIENT_FAILURE: frozenset({_C.CONNECTING, _C.IDLE, _C.SHUTDOWN}),
    _C.SHUTDOWN: frozenset(),
}


class IllegalTransition(RuntimeError):
    """A state change the table forbids: a bug in the caller."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ConnectionState:
    """One connection's lifecycle: immutable, each transition makes a new value."""

    name: str
    kind: str
    state: Connectivity = Connectivity.IDLE
    since: datetime | None = None
    last_error: str = ""
    attempts: int = 0

    def to(
        self,
        new: Connectivity,
        error: str = "",
        now: Callable[[], datetime] = _now,
    ) -> ConnectionState:
        """The connection after moving to ``new``.

        Entering TRANSIENT_FAILURE counts an attempt and records ``error``; READY clears both.
        Staying in the same state is allowed and only updates the error (since is kept).
        """
        if new == self.state:
            return replace(self, last_error=error or self.last_error)
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(
                f"connection {self.name!r}: {self.state.name} -> {new.name} is not allowed"
            )
        if new == Connectivity.READY:
            return replace(self, state=new, since=now(), last_error="", attempts=0)
        attempts = self.attempts + 1 if new == Connectivity.TRANSIENT_FAILURE else self.attempts
        return replace(
            self, state=new, since=now(), last_error=error or self.last_error, attempts=attempts
        )

    def to_proto(self) -> types_pb2.Connection:
        """The wire form (ilphost.types.v1.Connection)."""
        message = types_pb2.Connection(
            name=self.name,
            kind=self.kind,
            state=types_pb2.ConnectivityState.ValueType(int(self.state)),
            last_error=self.last_error,
            attempts=self.attempts,
        )
        if self.since is not None:
            message.since.FromDatetime(self.since)
        return message
