"""A non-Python adaptor under the host: the Node.js memory adaptor, driven by the supervisor."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path

import grpc
import pytest

from host.lifecycle import ProcessState
from host.supervisor import AdaptorSpec, Supervisor
from host.supervisor.process import is_alive
from sdk.connectivity import Connectivity
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.grpc_status import failure

NODE_DIR = Path(__file__).resolve().parents[2] / "adaptors" / "memory-node"


@pytest.fixture(autouse=True)
def _node_installed() -> None:
    if shutil.which("node") and (NODE_DIR / "node_modules").is_dir():
        return
    message = "node or adaptors/memory-node/node_modules missing: run make setup"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def test_node_adaptor_serves_and_stops_under_the_supervisor() -> None:
    async def go() -> None:
        spec = AdaptorSpec(
            "node",
            ("node", str(NODE_DIR / "adaptor.js")),
            env={"ILP_ADAPTOR_ASSET_CODE": "EUR", "ILP_ADAPTOR_ASSET_SCALE": "3"},
            start_timeout=30.0,
        )
        async with Supervisor([spec]) as supervisor:
            snapshot = supervisor.snapshot("node")
            assert snapshot.state == ProcessState.SERVING, snapshot.last_error
            assert snapshot.contract_version == 1
            assert snapshot.info is not None
            assert (snapshot.info.name, snapshot.info.asset_code) == ("memory-node", "EUR")
            host_channel = snapshot.connections[0]
            assert (host_channel.name, host_channel.state) == ("host", Connectivity.READY)
            channel = supervisor.channel("node")
            assert channel is not None
            stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
            await stub.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="bob"), timeout=10)
            request = adaptor_pb2.SendMoneyRequest(
                account_id="bob",
                amount=types_pb2.Amount(value="1250", scale=3),
                idempotency_key="k1",
            )
            first = await stub.SendMoney(request, timeout=10)
            again = await stub.SendMoney(request, timeout=10)
            assert first.settlement_id == again.settlement_id
            request.amount.value = "1"
            refused = await failure(stub.SendMoney(request, timeout=10))
            assert refused.code == grpc.StatusCode.ALREADY_EXISTS
            pid = snapshot.pid
        stopped = supervisor.snapshot("node")
        assert stopped.state == ProcessState.STOPPED
        assert stopped.last_error == ""  # it honoured the Shutdown RPC: no signal was needed
        assert pid is not None and not is_alive(pid)

    asyncio.run(go())
