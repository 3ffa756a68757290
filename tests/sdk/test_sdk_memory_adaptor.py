"""The memory-python adaptor as a real subprocess, driven the way the host drives it."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sdk import contract
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import grpc_controller_pb2
from sdk.testing import AdaptorProcess, run_adaptor
from tests.grpc_status import ended

ROOT = Path(__file__).resolve().parents[2]
MEMORY = [sys.executable, str(ROOT / "adaptors" / "memory-python" / "adaptor.py")]
DEADLINE = 60.0


def with_adaptor(
    body: Callable[[AdaptorProcess], Awaitable[None]], env: dict[str, str] | None = None
) -> int:
    """Run ``body`` against a fresh memory adaptor; the adaptor's exit status."""

    async def main() -> int:
        async with asyncio.timeout(DEADLINE):
            async with run_adaptor(MEMORY, env=env) as adaptor:
                await body(adaptor)
            return await adaptor.wait()

    return asyncio.run(main())


def amount(value: str, scale: int = 2) -> types_pb2.Amount:
    return types_pb2.Amount(value=value, scale=scale)


async def balance(adaptor: AdaptorProcess) -> str:
    reply = await adaptor.client.adaptor.GetBalance(adaptor_pb2.GetBalanceRequest())
    return reply.balance.value


def test_handshake_health_info_and_reflection() -> None:
    seen: dict[str, object] = {}

    async def body(adaptor: AdaptorProcess) -> None:
        hs = adaptor.handshake
        assert (hs.core_version, hs.app_version, hs.network, hs.protocol) == (1, 1, "unix", "grpc")
        assert hs.server_cert_der is None
        assert stat.S_ISSOCK(os.stat(hs.address).st_mode)
        assert len(hs.address.encode()) < 100
        directory = os.path.dirname(hs.address)
        assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700
        seen["directory"] = directory

        for service in (contract.HEALTH_SERVICE, ""):
            reply = await adaptor.client.health.Check(
                health_pb2.HealthCheckRequest(service=service)
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING

        info = await adaptor.client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())
        assert (info.name, info.ledger, info.asset_code, info.asset_scale) == (
            "memory-python",
            "memory",
            "USD",
            2,
        )
        assert set(info.capabilities) == {"send_money", "receive_money", "balance", "accounts"}
        assert list(info.contract_versions) == [1]

        probe = await adaptor.client.adaptor.Probe(adaptor_pb2.ProbeRequest())
        assert probe.HasField("ready") and probe.ready.value
        assert [(c.name, c.state) for c in probe.connections] == [
            ("ledger", types_pb2.CONNECTIVITY_STATE_READY)
        ]

        stub = reflection_pb2_grpc.ServerReflectionStub(adaptor.client.channel)
        call = stub.ServerReflectionInfo()
        await call.write(reflection_pb2.ServerReflectionRequest(list_services=""))
        reply = await call.read()
        await call.done_writing()
        names = {s.name for s in reply.list_services_response.service}
        assert names == {
            "ilphost.adaptor.v1.LedgerAdaptor",
            "grpc.health.v1.Health",
            "plugin.GRPCController",
            "plugin.GRPCStdio",
            "grpc.reflection.v1alpha.ServerReflection",
        }

    assert with_adaptor(body) == 0
    # The socket directory is the adaptor's to clean up.
    assert not os.path.exists(str(seen["directory"]))


def test_accounts_and_send_money_statuses() -> None:
    async def body(adaptor: AdaptorProcess) -> None:
        stub = adaptor.client.adaptor
        for bad in ("", "x" * 129, "al ice", "alice/bob", "é"):
            assert (
                await ended(stub.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id=bad)))
            ).code == grpc.StatusCode.INVALID_ARGUMENT, bad
        for _ in range(2):  # idempotent
            await stub.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="alice"))
        await stub.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="bob.B-1_~"))
        assert await balance(adaptor) == "1000"

        def send(value: str, key: str = "k1", account: str = "alice", scale: int = 2) -> object:
            return stub.SendMoney(
                adaptor_pb2.SendMoneyRequest(
                    account_id=account, amount=amount(value, scale), idempotency_key=key
                )
            )

        invalid = [
            send("0"),
            send("-5"),
            send("1.5"),
            send("abc"),
            send(""),
            send("007"),
            send("1" * 79),
            send("10", scale=3),
            send("10", scale=300),
            send("10", key=""),
            send("10", key="k" * 129),
            send("10", key="has\ttab"),  # a space is allowed: printable ASCII
            send("10", account="bad id"),
        ]
        for call in invalid:
            assert (await ended(call)).code == grpc.StatusCode.INVALID_ARGUMENT
        assert (await ended(send("10", account="carol"))).code == grpc.StatusCode.NOT_FOUND
        assert (await ended(send("1001"))).code == grpc.StatusCode.FAILED_PRECONDITION
        assert await balance(adaptor) == "1000"  # nothing refused changed anything

        first = await send("300")
        again = await send("300")
        assert first == again
        assert first.status == adaptor_pb2.SETTLEMENT_STATUS_COMPLETED and first.settlement_id
        assert await balance(adaptor) == "700"  # paid once
        assert (await ended(send("301"))).code == grpc.StatusCode.ALREADY_EXISTS
        assert (
            await ended(send("300", account="bob.B-1_~"))
        ).code == grpc.StatusCode.ALREADY_EXISTS
        second = await send("700", key="k2")
        assert second.settlement_id != first.settlement_id
        assert await balance(adaptor) == "0"
        assert (await ended(send("1", key="k3"))).code == grpc.StatusCode.FAILED_PRECONDITION

        for _ in range(2):  # idempotent, including for an unknown account
            await stub.DeleteAccount(adaptor_pb2.DeleteAccountRequest(account_id="alice"))
        assert (await ended(send("1", key="k4"))).code == grpc.StatusCode.NOT_FOUND
        # A retry of a settlement made before the delete still gets its first answer.
        assert await send("300") == first

        try:
            await stub.ReceiveData(adaptor_pb2.ReceiveDataRequest(account_id="alice"))
        except grpc.aio.AioRpcError as error:
            assert error.code() == grpc.StatusCode.UNIMPLEMENTED
            assert "MemoryAdaptor" in (error.details() or "")
            assert "ReceiveData" in (error.details() or "")
        else:
            pytest.fail("ReceiveData is not a declared capability")

    assert with_adaptor(body, env={"ILP_ADAPTOR_LIQUIDITY": "1000"}) == 0


async def incoming_ids(call: Any, n: int) -> list[str]:
    """The ids of the next ``n`` incoming settlements read from a WatchEvents call."""
    ids: list[str] = []
    while len(ids) < n:
        event = await call.read()
        assert event is not grpc.aio.EOF
        if event.HasField("incoming_settlement"):
            ids.append(event.incoming_settlement.settlement_id)
    return ids


def test_watch_events_redelivers_until_acknowledged() -> None:
    async def body(adaptor: AdaptorProcess) -> None:
        stub = adaptor.client.adaptor
        first = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        state = await first.read()  # the ledger connection's current state comes first
        assert state.connection_changed.name == "ledger"
        event = await first.read()
        assert event.incoming_settlement == adaptor_pb2.IncomingSettlement(
            settlement_id="memory-in-1", account_id="alice", amount=amount("500")
        )
        assert await incoming_ids(first, 1) == ["memory-in-2"]
        first.cancel()

        # A new stream (the engine reconnecting) gets both again, in ledger order.
        second = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        assert await incoming_ids(second, 2) == ["memory-in-1", "memory-in-2"]

        for _ in range(2):  # idempotent
            await stub.ReceiveMoney(adaptor_pb2.ReceiveMoneyRequest(settlement_id="memory-in-1"))
        assert (
            await ended(stub.ReceiveMoney(adaptor_pb2.ReceiveMoneyRequest(settlement_id="no")))
        ).code == grpc.StatusCode.NOT_FOUND
        third = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        assert await incoming_ids(third, 1) == ["memory-in-2"]
        await stub.ReceiveMoney(adaptor_pb2.ReceiveMoneyRequest(settlement_id="memory-in-2"))
        assert await balance(adaptor) == str(100_000_000 + 750)

        # Everything acknowledged: a new stream has no settlement to deliver, and stopping the
        # adaptor ends it (with the ledger's SHUTDOWN, if it subscribed before the stop).
        fourth = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        await adaptor.client.health.Check(health_pb2.HealthCheckRequest(service=""))
        await adaptor.client.controller.Shutdown(grpc_controller_pb2.Empty())
        rest = []
        while (event := await fourth.read()) is not grpc.aio.EOF:
            rest.append(event)
        assert not [e for e in rest if e.HasField("incoming_settlement")]
        # The ledger's current state first, if the stream subscribed before the stop.
        assert [e.connection_changed.state for e in rest] in (
            [],
            [types_pb2.CONNECTIVITY_STATE_READY, types_pb2.CONNECTIVITY_STATE_SHUTDOWN],
        )
        second.cancel()
        third.cancel()

    env = {"ILP_ADAPTOR_INCOMING": "alice:500,alice:250"}
    assert with_adaptor(body, env=env) == 0


def test_bad_configuration_exits_1_with_the_variable_named() -> None:
    async def main() -> tuple[int, bytes]:
        env = {"ILP_ADAPTOR_ASSET_SCALE": "two"}
        from sdk.testing import adaptor_environ

        process = await asyncio.create_subprocess_exec(
            *MEMORY,
            env=adaptor_environ(env),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        async with asyncio.timeout(DEADLINE):
            _, err = await process.communicate()
        return await process.wait(), err

    status, err = asyncio.run(main())
    assert status == 1
    assert b"ILP_ADAPTOR_ASSET_SCALE" in err


def test_logs_are_hclog_json() -> None:
    logs: list[dict[str, object]] = []

    async def body(adaptor: AdaptorProcess) -> None:
        await adaptor.client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())

    async def main() -> None:
        async with asyncio.timeout(DEADLINE), run_adaptor(MEMORY) as adaptor:
            await body(adaptor)
        logs.extend(json.loads(line) for line in adaptor.stderr.decode().splitlines())

    asyncio.run(main())
    messages = [entry["@message"] for entry in logs]
    assert messages == [
        "memory ledger ready",
        "adaptor serving",
        "adaptor stopping",
        "adaptor stopped",
    ]
    for entry in logs:
        assert entry["@level"] == "info"
        assert str(entry["@timestamp"]).endswith("Z")
    assert logs[2]["reason"] == "Shutdown RPC"
