"""SDK for ledger adaptors of the Interledger settlement host.

A Python adaptor is its ledger logic in the typed methods of ``LedgerAdaptor``, served by
``serve``::

    import sdk

    class MyAdaptor(sdk.LedgerAdaptor):
        async def info(self) -> sdk.Info:
            return sdk.Info("my-adaptor", "0.1.0", "my-ledger", "USD", 2, ("send_money",))

        async def send_money(self, request: sdk.SendMoney) -> sdk.Sent:
            ...  # pay request.amount to request.account_id's peer; raise sdk.Refused(...) if not
            return sdk.Sent(settlement_id="...")

    if __name__ == "__main__":
        sdk.serve(MyAdaptor())

The requests arrive checked (``sdk.requests``); refusals are the exceptions of ``sdk.errors``,
each answered with its gRPC status; ``Payments`` over a ``PaymentStore`` makes SendMoney pay
once per idempotency key. ``adaptors/memory-python`` is the whole example.

Underneath, an adaptor serves the ``ilphost.adaptor.v1.LedgerAdaptor`` gRPC service; the generated
messages and stubs are under ``sdk.pb``; the contract's constants are in ``sdk.contract``.

The raw servicer stays available: a subclass of ``Adaptor`` overrides the RPCs, protobuf in and
out, and is served the same way::

    import sdk
    from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

    class MyAdaptor(sdk.Adaptor):
        async def GetInfo(self, request, context):
            return adaptor_pb2.GetInfoResponse(name="my-adaptor", ledger="my-ledger")

    if __name__ == "__main__":
        sdk.serve(MyAdaptor())

``serve`` does the rest of the process contract (cookie, version negotiation, handshake line,
health, Shutdown, stdio, reflection, mutual TLS, signals, exit when the host goes). The
building blocks of ``WatchEvents`` are ``EventHub``, ``IncomingSettlements`` and
``Connections``; ``connect_engine`` reaches the host's Engine service; ``sdk.testing`` tests an
adaptor without the host; ``sdk.mtls`` makes the certificates of automatic mutual TLS.
"""

from sdk.adaptor import Adaptor, Context
from sdk.engine import EngineNotConfigured, connect_engine
from sdk.errors import (
    AdaptorError,
    Conflict,
    InvalidRequest,
    NotFound,
    Refused,
    Unavailable,
    Unimplemented,
)
from sdk.events import (
    ConflictingSettlement,
    Connections,
    EventHub,
    Incoming,
    IncomingSettlements,
    UnknownSettlement,
)
from sdk.payments import (
    MemoryPaymentStore,
    PaymentRecord,
    Payments,
    PaymentStore,
    SqlitePaymentStore,
)
from sdk.requests import Balance, Info, PeerMessage, SendMoney, Sent
from sdk.server import LaunchError, serve, serve_async
from sdk.stdio import Log
from sdk.typed import LedgerAdaptor

__all__ = [
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
