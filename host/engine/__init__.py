"""The settlement engine: clearing balances, settlement decisions, outbox, incoming credits.

Pure logic over Protocols (host.engine.ports): a Store, one SettlementPort per serving adaptor
(kept in an AdaptorRegistry, host.engine.adaptors), a Clock and a random source. The sign
convention is written once, in host.engine.model.
"""

from host.engine.adaptors import AdaptorRegistry
from host.engine.engine import Engine
from host.engine.errors import (
    AlreadyExists,
    EngineError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermanentSettlementError,
    SettlementError,
    TransientSettlementError,
)
from host.engine.model import (
    Account,
    AccountView,
    Direction,
    Policy,
    Settlement,
    SettlementState,
)
from host.engine.ports import Clock, RandomSource, SendResult, SettlementPort, SystemClock
from sdk.backoff import Backoff

__all__ = [
    "Account",
    "AccountView",
    "AdaptorRegistry",
    "AlreadyExists",
    "Backoff",
    "Clock",
    "Direction",
    "Engine",
    "EngineError",
    "FailedPrecondition",
    "InvalidArgument",
    "NotFound",
    "PermanentSettlementError",
    "Policy",
    "RandomSource",
    "SendResult",
    "Settlement",
    "SettlementError",
    "SettlementPort",
    "SettlementState",
    "SystemClock",
    "TransientSettlementError",
]
