"""The names adaptor authors import from ``sdk`` (a change here is a change of the SDK's API)."""

from __future__ import annotations

import sdk


def test_exported_names() -> None:
    assert sorted(sdk.__all__) == [
        "Adaptor",
        "AdaptorError",
        "Balance",
        "Conflict",
        "ConflictingSettlement",
        "Connections",
        "Context",
        "EngineNotConfigured",
        "EventHub",
        "Incoming",
        "IncomingSettlements",
        "Info",
        "InvalidRequest",
        "LaunchError",
        "LedgerAdaptor",
        "Log",
        "MemoryPaymentStore",
        "NotFound",
        "PaymentRecord",
        "PaymentStore",
        "Payments",
        "PeerMessage",
        "Refused",
        "SendMoney",
        "Sent",
        "SqlitePaymentStore",
        "Unavailable",
        "Unimplemented",
        "UnknownSettlement",
        "connect_engine",
        "serve",
        "serve_async",
    ]
    for name in sdk.__all__:
        assert getattr(sdk, name) is not None, name
