"""sdk.testing, the Adaptor base class and the EventHub, served in this process over a real
unix socket."""

from __future__ import annotations

import asyncio
import functools
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

import sdk
from sdk import contract
from sdk.connectivity import Connectivity
from sdk.engine import EngineNotConfigured, engine_address
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import grpc_controller_pb2
from sdk.testing import Refuse, fake_engine, serve_in_process
from tests.grpc_status import ended, failure
from tests.polling import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 60.0


@functools.cache
def memory_module() -> ModuleType:
    """adaptors/memory-python/adaptor.py, imported (its folder is not a package)."""
    path = ROOT / "adaptors" / "memory-python" / "adaptor.py"
    spec = importlib.util.spec_from_file_location("memory_python_adaptor", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look themselves up there
    spec.loader.exec_module(module)
    return module


def run(coroutine: Any) -> Any:
    async def bounded() -> Any:
        async with asyncio.timeout(DEADLINE):
            return await coroutine

    return asyncio.run(bounded())


def test_serve_in_process_runs_the_memory_adaptor() -> None:
    memory = memory_module()
    adaptor = memory.MemoryAdaptor(memory.Config.from_environ({"ILP_ADAPTOR_LIQUIDITY": "50"}))

    async def main() -> str:
        async with serve_in_process(adaptor) as client:
            reply = await client.health.Check(
                health_pb2.HealthCheckRequest(service=contract.HEALTH_SERVICE)
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            info = await client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())
            assert info.name == "memory-python"
            await client.adaptor.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="bob"))
            request = adaptor_pb2.SendMoneyRequest(
                account_id="bob", amount=types_pb2.Amount(value="20", scale=2), idempotency_key="a"
            )
            await client.adaptor.SendMoney(request)
            balance = await client.adaptor.GetBalance(adaptor_pb2.GetBalanceRequest())
            assert balance.balance == types_pb2.Amount(value="30", scale=2)
            await client.controller.Shutdown(grpc_controller_pb2.Empty())
            return client.target

    target = run(main())
    assert not os.path.exists(target.removeprefix("unix:"))  # cleaned up
    assert adaptor.connections["ledger"].state == Connectivity.SHUTDOWN  # stop() ran


class Bare(sdk.Adaptor):
    pass


def test_rpcs_not_overridden_answer_unimplemented_naming_rpc_and_class() -> None:
    requests = {
        "GetInfo": adaptor_pb2.GetInfoRequest(),
        "Probe": adaptor_pb2.ProbeRequest(),
        "SetupAccount": adaptor_pb2.SetupAccountRequest(account_id="a"),
        "DeleteAccount": adaptor_pb2.DeleteAccountRequest(account_id="a"),
        "SendMoney": adaptor_pb2.SendMoneyRequest(),
        "ReceiveMoney": adaptor_pb2.ReceiveMoneyRequest(),
        "ReceiveData": adaptor_pb2.ReceiveDataRequest(),
        "GetBalance": adaptor_pb2.GetBalanceRequest(),
    }

    async def main() -> None:
        async with serve_in_process(Bare()) as client:
            for rpc, request in requests.items():
                caught = await failure(getattr(client.adaptor, rpc)(request))
                assert caught.code == grpc.StatusCode.UNIMPLEMENTED
                assert caught.details == f"Bare does not implement LedgerAdaptor.{rpc}"
            stream = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            caught = await failure(stream.read())
            assert caught.code == grpc.StatusCode.UNIMPLEMENTED
            assert caught.details == "Bare does not implement LedgerAdaptor.WatchEvents"

    run(main())


def test_contract_versions_from_class_or_constructor() -> None:
    class Newer(sdk.Adaptor):
        contract_versions = (1, 2)

    assert Bare().contract_versions == contract.CONTRACT_VERSIONS
    assert Newer().contract_versions == (1, 2)
    assert Bare(contract_versions=[2, 3]).contract_versions == (2, 3)


class Relay(sdk.Adaptor):
    """Forwards ReceiveData to the engine, as an adaptor talking to its peer does."""

    async def ReceiveData(
        self, request: adaptor_pb2.ReceiveDataRequest, context: sdk.Context
    ) -> adaptor_pb2.ReceiveDataResponse:
        async with sdk.connect_engine() as (_, engine):
            try:
                reply = await engine.SendData(
                    engine_pb2.SendDataRequest(account_id=request.account_id, data=request.data)
                )
            except grpc.aio.AioRpcError as error:
                await context.abort(error.code(), error.details() or "")
        return adaptor_pb2.ReceiveDataResponse(data=reply.data)


def test_fake_engine_records_calls_and_answers() -> None:
    def reply(request: engine_pb2.SendDataRequest) -> bytes:
        if request.account_id == "nobody":
            raise Refuse(grpc.StatusCode.NOT_FOUND, "no account nobody")
        return b"pong:" + request.data

    async def main() -> None:
        async with fake_engine(reply) as engine, serve_in_process(Relay()) as client:
            assert os.environ[contract.ENV_ENGINE_ADDR] == engine.address
            answer = await client.adaptor.ReceiveData(
                adaptor_pb2.ReceiveDataRequest(account_id="bob", data=b"ping")
            )
            assert answer.data == b"pong:ping"
            assert (
                await ended(
                    client.adaptor.ReceiveData(adaptor_pb2.ReceiveDataRequest(account_id="nobody"))
                )
            ).code == grpc.StatusCode.NOT_FOUND
            assert [(c.account_id, c.data) for c in engine.calls] == [
                ("bob", b"ping"),
                ("nobody", b""),
            ]

        async def later(request: engine_pb2.SendDataRequest) -> bytes:
            await asyncio.sleep(0)
            return b"async"

        async with fake_engine(later, set_environ=False) as engine:
            assert os.environ.get(contract.ENV_ENGINE_ADDR) != engine.address
            async with sdk.connect_engine(engine.address) as (_, stub):
                assert (await stub.SendData(engine_pb2.SendDataRequest())).data == b"async"

    previous = os.environ.pop(contract.ENV_ENGINE_ADDR, None)
    try:
        run(main())
        assert contract.ENV_ENGINE_ADDR not in os.environ  # restored
    finally:
        if previous is not None:
            os.environ[contract.ENV_ENGINE_ADDR] = previous


def test_engine_address_missing_is_a_clear_error() -> None:
    with pytest.raises(EngineNotConfigured, match=contract.ENV_ENGINE_ADDR):
        engine_address({})
    assert engine_address({contract.ENV_ENGINE_ADDR: "unix:/x"}) == "unix:/x"


class Hub(sdk.Adaptor):
    def __init__(self, queue_limit: int = 100) -> None:
        super().__init__()
        self.hub = sdk.EventHub(queue_limit=queue_limit)
        self.connections = sdk.Connections(self.hub)

    async def WatchEvents(
        self, request: adaptor_pb2.WatchEventsRequest, context: sdk.Context
    ) -> Any:
        async for event in self.hub.watch(context):
            yield event


def incoming(n: int, account: str = "alice") -> sdk.Incoming:
    return sdk.Incoming(f"s{n}", account, n * 100, 2)


def settlement_id(event: adaptor_pb2.WatchEventsResponse) -> str:
    assert event.HasField("incoming_settlement"), event
    return event.incoming_settlement.settlement_id


async def streams_become(hub: sdk.EventHub, count: int) -> None:
    # The hub announces no subscription change: poll it.
    await wait_until_async(lambda: hub.streams == count, f"{count} streams", interval=0.01)


def test_event_hub_fans_out_in_order_and_ends_streams() -> None:
    adaptor = Hub()
    hub = adaptor.hub

    async def main() -> None:
        hub.report_incoming(incoming(1))
        async with serve_in_process(adaptor) as client:
            watch = client.adaptor.WatchEvents
            one = watch(adaptor_pb2.WatchEventsRequest())
            two = watch(adaptor_pb2.WatchEventsRequest())
            # The backlog first: reading it proves both streams are subscribed.
            assert settlement_id(await one.read()) == "s1"
            assert settlement_id(await two.read()) == "s1"
            assert hub.streams == 2

            assert hub.report_incoming(incoming(2))
            assert not hub.report_incoming(incoming(2))  # a re-read of the ledger: not sent
            adaptor.connections.add("ledger", "settlement-system")
            adaptor.connections.move("ledger", Connectivity.CONNECTING)
            # Reported and acknowledged before any stream read it: skipped.
            hub.report_incoming(incoming(3))
            hub.settlements.acknowledge("s3")
            hub.report_incoming(incoming(4))
            for stream in (one, two):
                assert settlement_id(await stream.read()) == "s2"
                for state in (
                    types_pb2.CONNECTIVITY_STATE_IDLE,
                    types_pb2.CONNECTIVITY_STATE_CONNECTING,
                ):
                    event = await stream.read()
                    assert event.connection_changed.name == "ledger"
                    assert event.connection_changed.state == state
                assert settlement_id(await stream.read()) == "s4"

            two.cancel()
            await streams_become(hub, 1)  # an ended stream unsubscribes

            for n in (1, 2, 4):
                hub.settlements.acknowledge(f"s{n}")
            three = watch(adaptor_pb2.WatchEventsRequest())
            await streams_become(hub, 2)
            adaptor.connections.move("ledger", Connectivity.READY)
            # Nothing unacknowledged: after the ledger's current state (always first), the
            # live change.
            current = await three.read()
            assert current.connection_changed.state == types_pb2.CONNECTIVITY_STATE_CONNECTING
            first = await three.read()
            assert first.connection_changed.state == types_pb2.CONNECTIVITY_STATE_READY

            hub.close()
            # `one` still has READY to read; closing ends each stream after what is queued.
            for stream, expected in ((one, [types_pb2.CONNECTIVITY_STATE_READY]), (three, [])):
                rest = []
                while (event := await stream.read()) is not grpc.aio.EOF:
                    rest.append(event.connection_changed.state)
                assert rest == expected
                assert await stream.code() == grpc.StatusCode.OK
            late = watch(adaptor_pb2.WatchEventsRequest())
            assert await late.read() is grpc.aio.EOF
            assert hub.streams == 0

    run(main())


def test_a_stream_that_falls_behind_ends_unavailable_and_loses_nothing() -> None:
    adaptor = Hub(queue_limit=2)
    hub = adaptor.hub

    async def main() -> None:
        hub.report_incoming(incoming(1))
        async with serve_in_process(adaptor) as client:
            stream = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            assert settlement_id(await stream.read()) == "s1"
            for n in (2, 3, 4):  # no await in between: the stream cannot keep up
                hub.report_incoming(incoming(n))

            async def read_to_the_end() -> None:
                while True:
                    await stream.read()

            caught = await failure(read_to_the_end())
            assert caught.code == grpc.StatusCode.UNAVAILABLE
            assert "reopen" in caught.details
            again = client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
            assert [settlement_id(await again.read()) for _ in range(4)] == ["s1", "s2", "s3", "s4"]
            again.cancel()

    run(main())
