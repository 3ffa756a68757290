"""The adaptor supervisor: runs each configured ledger adaptor as a supervised subprocess.

Public surface::

    AdaptorSpec          what to run and how (spec.py)
    Supervisor           start/stop/restart/watch the adaptors (supervisor.py)
    AdaptorSnapshot      one adaptor's state as seen by operators and the engine
    SupervisorStopped    restart() after the supervisor began stopping
    StartFailure, StartProblem   why a start failed (diagnose.py)
    LogRecord, LineParser        adaptor output as structured logs (logs.py)
    backoff_delay        restart delays (sdk/backoff.py)

The process lifecycle states and their transition table are in host/lifecycle.py.
"""

from host.lifecycle import IllegalTransition, ProcessLifecycle, ProcessState
from host.supervisor.diagnose import StartFailure, StartProblem
from host.supervisor.logs import LineParser, LogRecord
from host.supervisor.runner import AdaptorSnapshot, SupervisorStopped
from host.supervisor.spec import AdaptorSpec
from host.supervisor.supervisor import Supervisor
from sdk.backoff import backoff_delay

__all__ = [
    "AdaptorSnapshot",
    "AdaptorSpec",
    "IllegalTransition",
    "LineParser",
    "LogRecord",
    "ProcessLifecycle",
    "ProcessState",
    "StartFailure",
    "StartProblem",
    "Supervisor",
    "SupervisorStopped",
    "backoff_delay",
]
