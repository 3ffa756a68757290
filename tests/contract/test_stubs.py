"""The generated stubs import from inside the package and expose the contract's services."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest
from google.protobuf import descriptor_pool

SERVICES = {
    "sdk.pb.ilphost.adaptor.v1.adaptor_pb2": {
        "ilphost.adaptor.v1.LedgerAdaptor": [
            "GetInfo",
            "Probe",
            "SetupAccount",
            "DeleteAccount",
            "SendMoney",
            "ReceiveMoney",
            "ReceiveData",
            "GetBalance",
            "WatchEvents",
        ],
    },
    "sdk.pb.ilphost.engine.v1.engine_pb2": {"ilphost.engine.v1.Engine": ["SendData"]},
    "host.pb.ilphost.connector.v1.connector_pb2": {
        "ilphost.connector.v1.Connector": [
            "GetBalance",
            "ApplyBalanceDelta",
            "SendData",
            "WatchEvents",
            "AcknowledgeEvents",
            "RespondToPeerMessage",
        ],
    },
    "host.pb.ilphost.admin.v1.admin_pb2": {
        "ilphost.admin.v1.HostAdmin": [
            "ListAdaptors",
            "GetAdaptor",
            "WatchAdaptors",
            "RestartAdaptor",
            "ListAccounts",
            "GetAccount",
            "ListSettlements",
            "Settle",
            "RetrySettlement",
            "ListPeers",
            "SendPackets",
            "GetConnectorLink",
            "ListRoutes",
            "Reconcile",
        ],
    },
    "host.pb.ilphost.simledger.v1.simledger_pb2": {
        "ilphost.simledger.v1.SimLedger": [
            "GetLedgerInfo",
            "CreateAccount",
            "GetAccount",
            "Mint",
            "Transfer",
            "GetTransfer",
            "WatchTransfers",
            "SetFaults",
            "GetFaults",
            "ListTransfers",
        ],
    },
    "sdk.pb.plugin.grpc_controller_pb2": {"plugin.GRPCController": ["Shutdown"]},
    "sdk.pb.plugin.grpc_stdio_pb2": {"plugin.GRPCStdio": ["StreamStdio"]},
    "sdk.pb.plugin.grpc_broker_pb2": {"plugin.GRPCBroker": ["StartStream"]},
}


@pytest.mark.parametrize("module_name", sorted(SERVICES))
def test_module_exposes_services(module_name: str) -> None:
    module = importlib.import_module(module_name)
    grpc_module = importlib.import_module(module_name + "_grpc")
    for full_name, methods in SERVICES[module_name].items():
        service = module.DESCRIPTOR.services_by_name[full_name.rsplit(".", 1)[1]]
        assert service.full_name == full_name
        assert [m.name for m in service.methods] == methods
        short = full_name.rsplit(".", 1)[1]
        assert hasattr(grpc_module, f"{short}Stub")
        assert hasattr(grpc_module, f"{short}Servicer")
        assert hasattr(grpc_module, f"add_{short}Servicer_to_server")


def test_streaming_shapes() -> None:
    """The streams the docs promise are streams on the wire."""
    pool = descriptor_pool.Default()
    importlib.import_module("sdk.pb.ilphost.adaptor.v1.adaptor_pb2")
    importlib.import_module("sdk.pb.plugin.grpc_broker_pb2")
    watch = pool.FindMethodByName("ilphost.adaptor.v1.LedgerAdaptor.WatchEvents")
    assert watch.server_streaming and not watch.client_streaming
    broker = pool.FindMethodByName("plugin.GRPCBroker.StartStream")
    assert broker.server_streaming and broker.client_streaming


def test_go_plugin_wire_numbers() -> None:
    """Field numbers and enum values must equal go-plugin's, or Go plugins break."""
    from sdk.pb.plugin import grpc_broker_pb2, grpc_stdio_pb2

    conn = grpc_broker_pb2.ConnInfo.DESCRIPTOR
    assert {f.name: f.number for f in conn.fields} == {
        "service_id": 1,
        "network": 2,
        "address": 3,
        "knock": 4,
    }
    knock = grpc_broker_pb2.ConnInfo.Knock.DESCRIPTOR
    assert {f.name: f.number for f in knock.fields} == {"knock": 1, "ack": 2, "error": 3}
    data = grpc_stdio_pb2.StdioData.DESCRIPTOR
    assert {f.name: f.number for f in data.fields} == {"channel": 1, "data": 2}
    assert grpc_stdio_pb2.StdioData.STDOUT == 1
    assert grpc_stdio_pb2.StdioData.STDERR == 2
    stdio = grpc_stdio_pb2.DESCRIPTOR.services_by_name["GRPCStdio"].methods_by_name["StreamStdio"]
    assert stdio.input_type.full_name == "google.protobuf.Empty"


def test_connectivity_enum_matches_grpc_vocabulary() -> None:
    from sdk.pb.ilphost.types.v1 import types_pb2

    names = [v.name for v in types_pb2.ConnectivityState.DESCRIPTOR.values]
    assert names == [
        "CONNECTIVITY_STATE_UNSPECIFIED",
        "CONNECTIVITY_STATE_IDLE",
        "CONNECTIVITY_STATE_CONNECTING",
        "CONNECTIVITY_STATE_READY",
        "CONNECTIVITY_STATE_TRANSIENT_FAILURE",
        "CONNECTIVITY_STATE_SHUTDOWN",
    ]


def test_sdk_stubs_hold_only_what_an_adaptor_uses() -> None:
    """The host's own services (admin, connector, simulated ledger) are generated into host/pb:
    the SDK ships the adaptor's contract only, and its stubs import nothing of the host."""
    import sdk.pb

    root = Path(sdk.pb.__file__).parent
    packages = {p.parent.relative_to(root).as_posix() for p in root.rglob("*_pb2.py")}
    assert packages == {
        "ilphost/adaptor/v1",
        "ilphost/engine/v1",
        "ilphost/ethereum/v1",
        "ilphost/types/v1",
        "plugin",
    }
    for path in root.rglob("*.py*"):
        imports = [line for line in path.read_text().splitlines() if line.startswith("from ")]
        assert not [line for line in imports if line.startswith("from host")], path
