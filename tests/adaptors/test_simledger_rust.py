"""The Rust simledger adaptor (adaptors/simledger-rust, tonic on the upstream ``http`` crate).

Real processes throughout: the simulated ledger, the adaptor binary that ``make setup`` built,
the host's own Supervisor. The conformance suite checks the contract over both transports
(tests/conformance); these few tests check what it cannot: the HTTP/2 authority the host sends
on unix sockets (tonic refuses a percent-encoded one), and two Rust adaptors settling with each
other under two supervisors, one over TCP with mutual TLS and one over a unix socket.
"""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.pb.ilphost.simledger.v1 import simledger_pb2_grpc
from host.simledger.process import LedgerProcess
from host.supervisor import AdaptorSpec, Supervisor
from sdk import channels
from sdk.connectivity import Connectivity
from sdk.contract import HEALTH_SERVICE
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.testing import Refuse, fake_engine, run_adaptor
from tests.adaptors import simledger_builds
from tests.adaptors.test_simledger_go import (
    DEADLINE,
    RPC_TIMEOUT,
    Amount,
    Code,
    Credits,
    balance,
    eventually,
    fund,
    ledger,
    ledger_is,
    send,
    stub,
    supervised,
    until_paid,
)
from tests.grpc_status import failure

__all__ = ["ledger"]  # the fixture, shared with the Go adaptor's tests


@pytest.fixture(scope="module")
def rust_adaptor() -> Path:
    return simledger_builds.rust_binary()


def rust_spec(
    binary: Path, ledger_target: str, state: Path, name: str, transport: str = "unix"
) -> AdaptorSpec:
    return AdaptorSpec(
        name=name,
        command=(str(binary),),
        env={
            "ILP_SIMLEDGER_ADDR": ledger_target,
            "ILP_SIMLEDGER_ACCOUNT": f"ledger-{name}",
            "ILP_ADAPTOR_STATE_DB": str(state),
        },
        transport="tcp" if transport == "tcp" else "unix",
        start_timeout=DEADLINE,
        health_timeout=5.0,
    )


def test_the_unix_authority_every_stack_accepts(
    rust_adaptor: Path, ledger: LedgerProcess, tmp_path: Path
) -> None:
    """gRPC's default authority on a unix socket (the percent-encoded path) is refused by
    tonic; the channels of sdk.channels (every channel the host opens) send "localhost"."""

    async def health(channel: grpc.aio.Channel) -> health_pb2.HealthCheckResponse:
        return await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=RPC_TIMEOUT
        )

    async def scenario() -> None:
        env = {
            "ILP_SIMLEDGER_ADDR": ledger.target,
            "ILP_SIMLEDGER_ACCOUNT": "ledger-alice",
            "ILP_ADAPTOR_STATE_DB": str(tmp_path / "alice.json"),
        }
        async with run_adaptor([str(rust_adaptor)], env=env) as adaptor:
            target = adaptor.handshake.grpc_target()
            assert target.startswith("unix:")
            async with grpc.aio.insecure_channel(target) as plain:
                refused = await failure(health(plain))
            # The stream is reset by the server's HTTP/2 layer (PROTOCOL_ERROR).
            assert refused.code in (Code.INTERNAL, Code.UNAVAILABLE)
            async with channels.aio_channel(target) as fixed:
                answer = await health(fixed)
            assert answer.status == health_pb2.HealthCheckResponse.SERVING

    asyncio.run(scenario())


def test_two_rust_adaptors_settle_over_tcp_with_mtls_and_over_unix(
    rust_adaptor: Path, ledger: LedgerProcess, tmp_path: Path
) -> None:
    """Alice over TCP with automatic mutual TLS, bob over a unix socket, each under its own
    supervisor; each engine carries SendData to the other adaptor's ReceiveData, as two hosts
    do over ILP. Both directions settle, each payment is reported once and acknowledged; after
    a SIGTERM and a restart of bob nothing is re-delivered."""
    supervisors: dict[str, Supervisor] = {}
    peer_of = {"alice": ("bob", "alice"), "bob": ("alice", "bob")}
    credits = {"alice": Credits(), "bob": Credits()}

    def carry(sender: str) -> Callable[[engine_pb2.SendDataRequest], Awaitable[bytes]]:
        async def deliver(request: engine_pb2.SendDataRequest) -> bytes:
            receiver, account_there = peer_of[sender]
            channel = supervisors[receiver].channel(receiver) if receiver in supervisors else None
            if channel is None:
                raise Refuse(Code.UNAVAILABLE, f"{receiver} is not serving")
            try:
                reply = await adaptor_pb2_grpc.LedgerAdaptorStub(channel).ReceiveData(
                    adaptor_pb2.ReceiveDataRequest(account_id=account_there, data=request.data),
                    timeout=RPC_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                raise Refuse(Code.FAILED_PRECONDITION, f"{receiver}: {exc.details()}") from exc
            return bytes(reply.data)

        return deliver

    async def acknowledge(name: str, settlement: adaptor_pb2.IncomingSettlement) -> None:
        await credits[name](name, settlement)
        await stub(supervisors[name], name).ReceiveMoney(
            adaptor_pb2.ReceiveMoneyRequest(settlement_id=settlement.settlement_id)
        )

    async def scenario() -> None:
        alice_spec = rust_spec(rust_adaptor, ledger.target, tmp_path / "a.json", "alice", "tcp")
        bob_spec = rust_spec(rust_adaptor, ledger.target, tmp_path / "b.json", "bob")
        async with (
            fake_engine(carry("alice"), set_environ=False) as alice_engine,
            fake_engine(carry("bob"), set_environ=False) as bob_engine,
            supervised(alice_spec, engine=alice_engine, on_incoming=acknowledge) as alice,
            supervised(bob_spec, engine=bob_engine, on_incoming=acknowledge) as bob,
            channels.aio_channel(ledger.target) as channel,
        ):
            supervisors.update(alice=alice, bob=bob)
            book = simledger_pb2_grpc.SimLedgerStub(channel)
            await eventually(lambda: ledger_is(alice, Connectivity.READY), "alice READY")
            await eventually(lambda: ledger_is(bob, Connectivity.READY, "bob"), "bob READY")
            await fund(book, "ledger-alice", "10000")
            await fund(book, "ledger-bob", "10000")

            # Bob first: alice has not set up "bob" yet, so bob's exchange is refused and goes
            # on in the background; alice's own exchange then teaches both sides.
            await stub(bob, "bob").SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="alice"))
            await stub(alice).SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="bob"))

            sent = await until_paid(stub(alice), send("bob", "1234", "tcp-to-unix"))
            assert sent.settlement_id == "ledger-alice:tcp-to-unix"
            again = await until_paid(stub(alice), send("bob", "1234", "tcp-to-unix"))
            assert again == sent
            await eventually(lambda: credits["bob"].count(sent.settlement_id) >= 1, "bob paid")
            incoming = credits["bob"].deliveries[0]
            assert (incoming.account_id, incoming.amount) == (
                "alice",
                Amount(value="1234", scale=2),
            )

            back = await until_paid(stub(bob, "bob"), send("alice", "99", "unix-to-tcp"))
            await eventually(lambda: credits["alice"].count(back.settlement_id) >= 1, "alice paid")
            assert await balance(book, "ledger-alice") == str(10000 - 1234 + 99)
            assert await balance(book, "ledger-bob") == str(10000 + 1234 - 99)

            # SIGTERM: bob stops; the supervisor starts it again. Its acknowledged settlement
            # is not re-delivered (the state file kept the acknowledgement): a new stream
            # re-delivers before it follows live, so the next payment comes first.
            first_pid = bob.snapshot("bob").pid
            assert first_pid is not None
            os.kill(first_pid, signal.SIGTERM)
            await eventually(
                lambda: bob.snapshot("bob").pid not in (None, first_pid) and bob.serving("bob"),
                "bob restarted",
            )
            later = await until_paid(stub(alice), send("bob", "1", "after-restart"))
            await eventually(lambda: credits["bob"].count(later.settlement_id) >= 1, "bob paid")
            assert credits["bob"].count(sent.settlement_id) == 1

    asyncio.run(scenario())
