"""SDK for ledger adaptors of the Interledger settlement host.

An adaptor serves the ``ilphost.adaptor.v1.LedgerAdaptor`` gRPC service; the generated
messages and stubs are under ``sdk.pb``; the contract's constants are in ``sdk.contract``.

A Python adaptor subclasses ``Adaptor``, overrides the RPCs it supports and calls ``serve``::

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
from sdk.events import (
    ConflictingSettlement,
    Connections,
    EventHub,
    Incoming,
    IncomingSettlements,
    UnknownSettlement,
)
from sdk.server import LaunchError, serve, serve_async
from sdk.stdio import Log

__all__ = [
    "Adaptor",
    "ConflictingSettlement",
    "Connections",
    "Context",
    "EngineNotConfigured",
    "EventHub",
    "Incoming",
    "IncomingSettlements",
    "LaunchError",
    "Log",
    "UnknownSettlement",
    "connect_engine",
    "serve",
    "serve_async",
]
