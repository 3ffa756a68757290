"""An adaptor process's lifecycle: its states and the one table of legal transitions.

Pure logic. The supervisor moves each adaptor through these states; an illegal transition is a
bug in the supervisor and raises IllegalTransition.

::

    STOPPED -> STARTING -> HANDSHAKING -> SERVING
                  |            |            |
                  +------------+------------+--> CRASHED -> BACKOFF -> STARTING ...
                  +------------+------------+--> STOPPING -> STOPPED

``attempts`` counts consecutive restarts since the adaptor last served: entering BACKOFF counts
one, SERVING (the adaptor works again) and STOPPED (stopped on purpose) reset it.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from host.pb.ilphost.admin.v1 import admin_pb2
from sdk import connectivity


class ProcessState(enum.IntEnum):
    """The state of an adaptor's process; values equal ilphost.admin.v1.ProcessState."""

    STARTING = admin_pb2.PROCESS_STATE_STARTING
    HANDSHAKING = admin_pb2.PROCESS_STATE_HANDSHAKING
    SERVING = admin_pb2.PROCESS_STATE_SERVING
    STOPPING = admin_pb2.PROCESS_STATE_STOPPING
    STOPPED = admin_pb2.PROCESS_STATE_STOPPED
    CRASHED = admin_pb2.PROCESS_STATE_CRASHED
    BACKOFF = admin_pb2.PROCESS_STATE_BACKOFF


_P = ProcessState
#: Every legal transition. A failed start or a dying process is CRASHED, and a restart always
#: waits out a BACKOFF; a stop goes through STOPPING while there is a process to stop, and
#: straight to STOPPED from CRASHED or BACKOFF, where none is left.
TRANSITIONS: dict[ProcessState, frozenset[ProcessState]] = {
    _P.STOPPED: frozenset({_P.STARTING}),
    _P.STARTING: frozenset({_P.HANDSHAKING, _P.CRASHED, _P.STOPPING}),
    _P.HANDSHAKING: frozenset({_P.SERVING, _P.CRASHED, _P.STOPPING}),
    _P.SERVING: frozenset({_P.CRASHED, _P.STOPPING}),
    _P.STOPPING: frozenset({_P.STOPPED}),
    _P.CRASHED: frozenset({_P.BACKOFF, _P.STOPPED}),
    _P.BACKOFF: frozenset({_P.STARTING, _P.STOPPED}),
}


class IllegalTransition(connectivity.IllegalTransition):
    """A process state change the table forbids: a bug in the supervisor."""


def _now() -> datetime:
    return datetime.now(UTC)


@dataclass(frozen=True)
class ProcessLifecycle:
    """One adaptor's process lifecycle: immutable, each transition makes a new value."""

    state: ProcessState = ProcessState.STOPPED
    since: datetime = field(default_factory=_now)
    last_error: str = ""
    attempts: int = 0

    def to(
        self,
        new: ProcessState,
        error: str = "",
        now: Callable[[], datetime] = _now,
    ) -> ProcessLifecycle:
        """The lifecycle after moving to ``new``, recording ``error`` if one is given.

        SERVING clears the last error (as READY does for a connection) and resets attempts;
        STOPPED resets attempts and keeps the last error; BACKOFF counts an attempt.
        """
        if new not in TRANSITIONS[self.state]:
            raise IllegalTransition(f"process: {self.state.name} -> {new.name} is not allowed")
        if new == ProcessState.SERVING:
            return replace(self, state=new, since=now(), last_error="", attempts=0)
        attempts = self.attempts
        if new == ProcessState.BACKOFF:
            attempts += 1
        elif new == ProcessState.STOPPED:
            attempts = 0
        return replace(
            self, state=new, since=now(), last_error=error or self.last_error, attempts=attempts
        )
