"""The Node.js adaptor (adaptors/memory-node) against the contract, as the host would drive it.

Each test starts `node adaptors/memory-node/adaptor.js` as a real child process with the host's
environment, parses its handshake line with sdk.handshake, and talks gRPC to it over the
announced socket. The adaptor was written from docs/protocol.md and proto/ alone, so these tests
are the proof that those documents suffice.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sdk import mtls
from sdk.contract import (
    ENV_CLIENT_CERT,
    ENV_MAX_PORT,
    ENV_MIN_PORT,
    ENV_PROTOCOL_VERSIONS,
    ENV_TRANSPORT,
    ENV_UNIX_SOCKET_DIR,
    HEALTH_SERVICE,
    MAGIC_COOKIE_KEY,
    MAGIC_COOKIE_VALUE,
)
from sdk.handshake import Handshake, parse
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import grpc_controller_pb2, grpc_controller_pb2_grpc
from tests.grpc_status import ended
from tests.processes import reap

ADAPTOR_DIR = Path(__file__).resolve().parents[2] / "adaptors" / "memory-node"
ADAPTOR = ADAPTOR_DIR / "adaptor.js"
#: Generous: the machine is shared, and nothing here asserts on speed.
DEADLINE = 30.0
RPC_TIMEOUT = 20.0

Amount = types_pb2.Amount


@pytest.fixture(autouse=True)
def _node_adaptor_installed() -> None:
    if shutil.which("node") is None:
        problem = "node is not installed"
    elif not (ADAPTOR_DIR / "node_modules").is_dir():
        problem = "adaptors/memory-node/node_modules is missing"
    else:
        return
    message = f"{problem}: run make setup: npm ci in adaptors/memory-node"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


# --- Running the adaptor --------------------------------------------------------------------


@dataclass
class Adaptor:
    """A running adaptor process and what its handshake announced."""

    process: asyncio.subprocess.Process
    handshake: Handshake
    stderr_path: Path

    def stderr(self) -> str:
        return self.stderr_path.read_text()

    def log_records(self) -> list[dict[str, Any]]:
        """Every stderr line, parsed as hclog JSON (fails on a line that is not)."""
        return [json.loads(line) for line in self.stderr().splitlines() if line.strip()]

    async def exit_status(self) -> int:
        return await asyncio.wait_for(self.process.wait(), DEADLINE)


def host_env(**extra: str) -> dict[str, str]:
    """The environment the host gives an adaptor, plus `extra`."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
        ENV_PROTOCOL_VERSIONS: "1",
    }
    env.update(extra)
    return env


@contextlib.asynccontextmanager
async def started(**extra: str) -> AsyncIterator[Adaptor]:
    """Start the adaptor with a fresh socket directory; kill it on the way out if still alive."""
    socket_dir = tempfile.mkdtemp(prefix="ilp")
    work_dir = tempfile.mkdtemp(prefix="ilp-node-test")
    stderr_path = Path(work_dir) / "stderr.log"
    try:
        with stderr_path.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                "node",
                str(ADAPTOR),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=stderr,
                env=host_env(**{ENV_UNIX_SOCKET_DIR: socket_dir, **extra}),
            )
        try:
            assert process.stdout is not None
            line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
            assert line, f"no handshake line; stderr:\n{stderr_path.read_text()}"
            yield Adaptor(process, parse(line.decode(), [1]), stderr_path)
        finally:
            await reap(process, DEADLINE)
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
        shutil.rmtree(work_dir, ignore_errors=True)


async def run_to_exit(env: dict[str, str]) -> tuple[int, str, str]:
    """Run the adaptor to its end; (status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        "node",
        str(ADAPTOR),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def until(condition: Callable[[], bool], what: str) -> None:
    """Poll `condition` until it holds, failing with `what` after the deadline."""
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (gone, or a zombie nobody has reaped yet)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def exists(path: str) -> bool:
    return Path(path).exists()


def is_socket(path: str) -> bool:
    return Path(path).is_socket()


def channel(adaptor: Adaptor) -> grpc.aio.Channel:
    return grpc.aio.insecure_channel(adaptor.handshake.grpc_target())


# --- Handshake, health, info, probe ---------------------------------------------------------


async def _serves_the_contract() -> None:
    async with started() as adaptor, channel(adaptor) as ch:
        handshake = adaptor.handshake
        assert (handshake.core_version, handshake.app_version) == (1, 1)
        assert handshake.network == "unix" and handshake.protocol == "grpc"
        assert handshake.server_cert_der is None
        assert len(handshake.address.encode()) < 100
        assert is_socket(handshake.address)

        health = health_pb2_grpc.HealthStub(ch)
        reply = await health.Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=RPC_TIMEOUT
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        unknown = health.Check(health_pb2.HealthCheckRequest(service="x"), timeout=RPC_TIMEOUT)
        assert (await ended(unknown)).code == grpc.StatusCode.NOT_FOUND

        stub = adaptor_pb2_grpc.LedgerAdaptorStub(ch)
        info = await stub.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
        assert (info.name, info.ledger, info.asset_code, info.asset_scale) == (
            "memory-node",
            "memory",
            "USD",
            2,
        )
        assert info.version
        assert set(info.capabilities) == {"send_money", "receive_money", "balance", "accounts"}
        assert list(info.contract_versions) == [1]

        probe = await stub.Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
        assert probe.HasField("ready") and probe.ready.value
        [link] = probe.connections
        assert (link.name, link.kind, link.state) == (
            "ledger",
            "settlement-system",
            types_pb2.CONNECTIVITY_STATE_READY,
        )
        since = link.since.ToDatetime(tzinfo=datetime.UTC)
        now = datetime.datetime.now(datetime.UTC)
        assert now - datetime.timedelta(minutes=5) < since <= now
        assert (link.last_error, link.attempts) == ("", 0)

        data = stub.ReceiveData(
            adaptor_pb2.ReceiveDataRequest(account_id="bob", data=b"x"), timeout=RPC_TIMEOUT
        )
        assert (await ended(data)).code == grpc.StatusCode.UNIMPLEMENTED

        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(
                file_containing_symbol="ilphost.adaptor.v1.LedgerAdaptor"
            ),
        ]
        answers = [a async for a in reflection.ServerReflectionInfo(iter(requests))]
        services = {s.name for s in answers[0].list_services_response.service}
        assert {
            "ilphost.adaptor.v1.LedgerAdaptor",
            "grpc.health.v1.Health",
            "plugin.GRPCController",
        } <= services
        assert answers[1].file_descriptor_response.file_descriptor_proto

        records = adaptor.log_records()
        assert records, "the adaptor logged nothing"
        for record in records:
            assert {"@level", "@message", "@timestamp"} <= record.keys()
            assert record["@level"] in {"trace", "debug", "info", "warn", "error"}


def test_handshake_health_info_probe_and_reflection() -> None:
    asyncio.run(_serves_the_contract())


# --- Accounts and SendMoney -----------------------------------------------------------------

# More than a double can hold exactly: a float-based ledger would lose the trailing 7.
LIQUIDITY = 10**30 + 7


def send(account: str, value: str, key: str, scale: int = 2) -> adaptor_pb2.SendMoneyRequest:
    return adaptor_pb2.SendMoneyRequest(
        account_id=account, amount=Amount(value=value, scale=scale), idempotency_key=key
    )


async def _accounts_and_payments() -> None:
    async with started(ILP_ADAPTOR_LIQUIDITY=str(LIQUIDITY)) as adaptor, channel(adaptor) as ch:
        stub = adaptor_pb2_grpc.LedgerAdaptorStub(ch)

        async def balance() -> int:
            reply = await stub.GetBalance(adaptor_pb2.GetBalanceRequest(), timeout=RPC_TIMEOUT)
            assert reply.balance.scale == 2
            return int(reply.balance.value)

        assert await balance() == LIQUIDITY
        for bad_id in ["", "a b", "ü", "x" * 129, "bob/1"]:
            call = stub.SetupAccount(
                adaptor_pb2.SetupAccountRequest(account_id=bad_id), timeout=RPC_TIMEOUT
            )
            assert (await ended(call)).code == grpc.StatusCode.INVALID_ARGUMENT, bad_id
        for _ in range(2):  # idempotent
            await stub.SetupAccount(
                adaptor_pb2.SetupAccountRequest(account_id="bob"), timeout=RPC_TIMEOUT
            )
        await stub.DeleteAccount(
            adaptor_pb2.DeleteAccountRequest(account_id="nobody"), timeout=RPC_TIMEOUT
        )

        bad_requests = [
            send("bob", "0", "k"),
            send("bob", "-5", "k"),
            send("bob", "+5", "k"),
            send("bob", "1.5", "k"),
            send("bob", "01", "k"),
            send("bob", "", "k"),
            send("bob", "1e3", "k"),
            send("bob", "1" * 79, "k"),
            send("bob", "100", "k", scale=3),
            send("bob", "100", "k", scale=256),
            send("bob", "100", ""),
            send("bob", "100", "x" * 129),
            send("bob", "100", "caf\u00e9"),
            send("bob", "100", "tab\there"),
            send("", "100", "k"),
            adaptor_pb2.SendMoneyRequest(account_id="bob", idempotency_key="k"),
        ]
        for request in bad_requests:
            call = stub.SendMoney(request, timeout=RPC_TIMEOUT)
            assert (await ended(call)).code == grpc.StatusCode.INVALID_ARGUMENT, request
        unknown = stub.SendMoney(send("carol", "100", "k"), timeout=RPC_TIMEOUT)
        assert (await ended(unknown)).code == grpc.StatusCode.NOT_FOUND
        assert await balance() == LIQUIDITY, "a refused request changed the balance"

        amount = str(10**29)
        first = await stub.SendMoney(send("bob", amount, "settle-1"), timeout=RPC_TIMEOUT)
        assert first.status == adaptor_pb2.SETTLEMENT_STATUS_COMPLETED
        assert first.settlement_id
        again = await stub.SendMoney(send("bob", amount, "settle-1"), timeout=RPC_TIMEOUT)
        assert again == first
        assert await balance() == LIQUIDITY - 10**29, "paid twice, or lost precision"

        await stub.SetupAccount(
            adaptor_pb2.SetupAccountRequest(account_id="carol"), timeout=RPC_TIMEOUT
        )
        for reused in [send("bob", "1", "settle-1"), send("carol", amount, "settle-1")]:
            call = stub.SendMoney(reused, timeout=RPC_TIMEOUT)
            assert (await ended(call)).code == grpc.StatusCode.ALREADY_EXISTS

        too_much = stub.SendMoney(
            send("carol", str(LIQUIDITY - 10**29 + 1), "settle-2"), timeout=RPC_TIMEOUT
        )
        assert (await ended(too_much)).code == grpc.StatusCode.FAILED_PRECONDITION
        all_of_it = str(LIQUIDITY - 10**29)
        last = await stub.SendMoney(send("carol", all_of_it, "settle-2"), timeout=RPC_TIMEOUT)
        assert last.settlement_id != first.settlement_id
        assert await balance() == 0

        await stub.DeleteAccount(
            adaptor_pb2.DeleteAccountRequest(account_id="bob"), timeout=RPC_TIMEOUT
        )
        gone = stub.SendMoney(send("bob", "1", "settle-3"), timeout=RPC_TIMEOUT)
        assert (await ended(gone)).code == grpc.StatusCode.NOT_FOUND


def test_accounts_and_send_money_idempotency_and_statuses() -> None:
    asyncio.run(_accounts_and_payments())


# --- WatchEvents re-delivery ----------------------------------------------------------------


async def _redelivery() -> None:
    async with (
        started(ILP_ADAPTOR_INCOMING="alice:500,alice:250") as adaptor,
        channel(adaptor) as ch,
    ):
        stub = adaptor_pb2_grpc.LedgerAdaptorStub(ch)

        async def first_events(count: int) -> list[adaptor_pb2.IncomingSettlement]:
            """The re-delivered settlements, after the ledger link's current state (first)."""
            stream = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
            events = [await asyncio.wait_for(stream.read(), DEADLINE) for _ in range(count + 1)]
            stream.cancel()
            state, *rest = events
            assert state.WhichOneof("event") == "connection_changed"
            assert (state.connection_changed.name, state.connection_changed.state) == (
                "ledger",
                types_pb2.CONNECTIVITY_STATE_READY,
            )
            for event in rest:
                assert event.WhichOneof("event") == "incoming_settlement"
            return [event.incoming_settlement for event in rest]

        first, second = await first_events(2)
        assert (first.account_id, first.amount) == ("alice", Amount(value="500", scale=2))
        assert (second.account_id, second.amount) == ("alice", Amount(value="250", scale=2))
        assert first.settlement_id != second.settlement_id
        assert [e.settlement_id for e in await first_events(2)] == [
            first.settlement_id,
            second.settlement_id,
        ], "not re-delivered in ledger order"

        never = stub.ReceiveMoney(
            adaptor_pb2.ReceiveMoneyRequest(settlement_id="never-reported"), timeout=RPC_TIMEOUT
        )
        assert (await ended(never)).code == grpc.StatusCode.NOT_FOUND
        for _ in range(2):  # idempotent
            await stub.ReceiveMoney(
                adaptor_pb2.ReceiveMoneyRequest(settlement_id=first.settlement_id),
                timeout=RPC_TIMEOUT,
            )
        [left] = await first_events(1)
        assert left == second

        await stub.ReceiveMoney(
            adaptor_pb2.ReceiveMoneyRequest(settlement_id=second.settlement_id),
            timeout=RPC_TIMEOUT,
        )
        # Nothing is left to re-deliver: after the ledger link's current state, the next event
        # of a new stream is its SHUTDOWN when the adaptor stops, and then the stream ends OK.
        stream = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        await asyncio.wait_for(stream.wait_for_connection(), DEADLINE)
        controller = grpc_controller_pb2_grpc.GRPCControllerStub(ch)
        await controller.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)
        events = [event async for event in stream]
        assert [e.WhichOneof("event") for e in events] == ["connection_changed"] * 2
        states = [(e.connection_changed.name, e.connection_changed.state) for e in events]
        assert states == [
            ("ledger", types_pb2.CONNECTIVITY_STATE_READY),  # the current state, first
            ("ledger", types_pb2.CONNECTIVITY_STATE_SHUTDOWN),
        ]
        assert await stream.code() == grpc.StatusCode.OK
        assert await adaptor.exit_status() == 0


def test_watch_events_redelivers_until_receive_money() -> None:
    asyncio.run(_redelivery())


# --- Stopping -------------------------------------------------------------------------------


async def _shutdown_rpc() -> None:
    async with started() as adaptor, channel(adaptor) as ch:
        health = health_pb2_grpc.HealthStub(ch).Watch(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)
        )
        first = await asyncio.wait_for(health.read(), DEADLINE)
        assert first.status == health_pb2.HealthCheckResponse.SERVING
        controller = grpc_controller_pb2_grpc.GRPCControllerStub(ch)
        await controller.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)
        rest = []
        while (reply := await asyncio.wait_for(health.read(), DEADLINE)) is not grpc.aio.EOF:
            rest.append(reply.status)
        assert rest == [health_pb2.HealthCheckResponse.NOT_SERVING]
        assert await adaptor.exit_status() == 0
        assert not exists(adaptor.handshake.address), "socket left behind"


def test_shutdown_rpc_stops_gracefully_and_exits_0() -> None:
    asyncio.run(_shutdown_rpc())


async def _signals() -> None:
    async with started() as adaptor, channel(adaptor) as ch:
        health = health_pb2_grpc.HealthStub(ch)
        check = health_pb2.HealthCheckRequest(service=HEALTH_SERVICE)

        adaptor.process.send_signal(signal.SIGINT)
        await until(lambda: "ignoring SIGINT" in adaptor.stderr(), "the SIGINT log record")
        reply = await health.Check(check, timeout=RPC_TIMEOUT)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        assert adaptor.process.returncode is None

        stream = adaptor_pb2_grpc.LedgerAdaptorStub(ch).WatchEvents(
            adaptor_pb2.WatchEventsRequest()
        )
        await asyncio.wait_for(stream.wait_for_connection(), DEADLINE)
        adaptor.process.send_signal(signal.SIGTERM)
        events = [event async for event in stream]
        assert [e.connection_changed.state for e in events] == [
            types_pb2.CONNECTIVITY_STATE_READY,
            types_pb2.CONNECTIVITY_STATE_SHUTDOWN,
        ]
        assert await adaptor.exit_status() == 0
        assert any(r.get("reason") == "SIGTERM" for r in adaptor.log_records())


def test_sigint_is_ignored_and_sigterm_exits_0_ending_streams() -> None:
    asyncio.run(_signals())


async def _parent_death() -> None:
    # A shell starts the adaptor and reports its pid; killing the shell orphans the adaptor,
    # which must notice that its parent changed and exit on its own.
    socket_dir = tempfile.mkdtemp(prefix="ilp")
    shell = await asyncio.create_subprocess_exec(
        "sh",
        "-c",
        f'node "{ADAPTOR}" 2>/dev/null & echo "$!"; wait',
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        env=host_env(**{ENV_UNIX_SOCKET_DIR: socket_dir}),
    )
    pid = None
    try:
        assert shell.stdout is not None
        pid = int(await asyncio.wait_for(shell.stdout.readline(), DEADLINE))
        line = await asyncio.wait_for(shell.stdout.readline(), DEADLINE)
        handshake = parse(line.decode(), [1])
        shell.kill()
        # Not shell.wait() yet: it also waits for stdout to close, which the adaptor holds.
        await until(lambda: process_gone(pid), "the orphaned adaptor to exit")
        assert not exists(handshake.address), "socket left behind"
    finally:
        if pid is not None and not process_gone(pid):
            os.kill(pid, signal.SIGKILL)
        await reap(shell, DEADLINE)
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_adaptor_exits_when_its_parent_dies() -> None:
    asyncio.run(_parent_death())


# --- Refusals at start ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "said"),
    [
        ({MAGIC_COOKIE_KEY: ""}, MAGIC_COOKIE_KEY),
        ({MAGIC_COOKIE_KEY: "wrong"}, MAGIC_COOKIE_KEY),
        ({ENV_PROTOCOL_VERSIONS: "2,3"}, "version"),
        ({ENV_TRANSPORT: "quic"}, ENV_TRANSPORT),
        ({"ILP_ADAPTOR_INCOMING": "alice:-5"}, "ILP_ADAPTOR_INCOMING"),
        ({ENV_CLIENT_CERT: "not a certificate"}, ENV_CLIENT_CERT),
    ],
)
def test_refuses_to_start_with_status_1(env: dict[str, str], said: str) -> None:
    full = host_env(**{ENV_UNIX_SOCKET_DIR: tempfile.gettempdir(), **env})
    full = {key: value for key, value in full.items() if value}
    status, out, err = asyncio.run(run_to_exit(full))
    assert status == 1
    assert out == "", "printed something on stdout"
    assert said in err


# --- Automatic mutual TLS -------------------------------------------------------------------


def tls_channel(
    target: str, server_pem: bytes, client: mtls.Certificate | None
) -> grpc.aio.Channel:
    """A channel that trusts exactly `server_pem` and presents `client` (if any)."""
    if client is not None:
        credentials = mtls.channel_credentials(client, server_pem)
    else:
        credentials = grpc.ssl_channel_credentials(root_certificates=server_pem)
    return grpc.aio.secure_channel(target, credentials, options=mtls.CHANNEL_OPTIONS)


async def _mutual_tls() -> None:
    host = mtls.generate_certificate()
    env = {
        ENV_TRANSPORT: "tcp",
        ENV_MIN_PORT: "20000",
        ENV_MAX_PORT: "45000",
        ENV_CLIENT_CERT: host.cert_pem.decode(),
        "ILP_ADAPTOR_ASSET_CODE": "XRP",
        "ILP_ADAPTOR_ASSET_SCALE": "6",
    }
    async with started(**env) as adaptor:
        handshake = adaptor.handshake
        assert handshake.network == "tcp"
        ip, port = handshake.address.rsplit(":", 1)
        assert ip == "127.0.0.1" and 20000 <= int(port) <= 45000
        assert handshake.server_cert_der is not None
        cert = x509.load_der_x509_certificate(handshake.server_cert_der)
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "localhost"
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        assert san.get_values_for_type(x509.DNSName) == ["localhost"]
        usages = set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
        assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= usages
        assert curve_of(handshake.server_cert_der) == curve_of(host.cert_der)
        cert.verify_directly_issued_by(cert)
        server_pem = mtls.der_to_pem(handshake.server_cert_der)

        async with tls_channel(handshake.grpc_target(), server_pem, host) as ch:
            stub = adaptor_pb2_grpc.LedgerAdaptorStub(ch)
            info = await stub.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
            assert (info.asset_code, info.asset_scale) == ("XRP", 6)

        for client in (mtls.generate_certificate(), None):  # a stranger, and no certificate
            async with tls_channel(handshake.grpc_target(), server_pem, client) as ch:
                call = adaptor_pb2_grpc.LedgerAdaptorStub(ch).GetInfo(
                    adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT
                )
                assert (await ended(call)).code == grpc.StatusCode.UNAVAILABLE, client

        async with tls_channel(handshake.grpc_target(), server_pem, host) as ch:
            controller = grpc_controller_pb2_grpc.GRPCControllerStub(ch)
            await controller.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)
        assert await adaptor.exit_status() == 0


def curve_of(der: bytes) -> str:
    public_key = x509.load_der_x509_certificate(der).public_key()
    assert isinstance(public_key, ec.EllipticCurvePublicKey)
    return public_key.curve.name


def test_mutual_tls_over_tcp() -> None:
    asyncio.run(_mutual_tls())


async def _adaptor_curve(host: mtls.Certificate) -> str:
    async with started(**{ENV_CLIENT_CERT: host.cert_pem.decode()}) as adaptor:
        assert adaptor.handshake.network == "unix"
        der = adaptor.handshake.server_cert_der
        assert der is not None
        return curve_of(der)


@pytest.mark.parametrize("curve", [ec.SECP256R1(), ec.SECP521R1()], ids=lambda c: c.name)
def test_adaptor_certificate_is_on_the_host_certificate_curve(curve: ec.EllipticCurve) -> None:
    # P-521 is the curve of docs/protocol.md and go-plugin; gRPC's BoringSSL cannot use it, so
    # the adaptor follows the host's curve instead of forcing one (see sdk/mtls.py).
    assert asyncio.run(_adaptor_curve(mtls.generate_certificate(curve))) == curve.name
