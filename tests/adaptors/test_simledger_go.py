"""The Go simledger adaptor (adaptors/simledger-go), built on HashiCorp go-plugin's plugin.Serve.

Everything is real: ``python -m host.simledger`` runs as a process, the adaptor binary is built
with ``go build`` once per session and runs under the host's own Supervisor (or, for the signal,
cookie and offline-ledger checks, as a bare child through ``sdk.testing.run_adaptor``). The
engine side is ``sdk.testing``'s fake Engine answering as the peer's adaptor would; one test
peers the Go adaptor with the Python one (adaptors/simledger-python), each under its own
supervisor, their engines wired to each other. Nothing waits on a timer: every wait polls a
condition under a generous deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.binding import Credit, follow_incoming
from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger import peer_messages as simledger
from host.simledger.process import LedgerProcess, start_ledger
from host.supervisor import AdaptorSpec, ProcessState, Supervisor
from sdk.connectivity import TRANSITIONS, Connectivity
from sdk.contract import HEALTH_SERVICE, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE
from sdk.handshake import parse
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.testing import FakeEngine, Refuse, fake_engine, run_adaptor
from tests.adaptors import simledger_builds
from tests.grpc_status import failure

REPO = simledger_builds.REPO
PYTHON_ADAPTOR = simledger_builds.PYTHON_COMMAND
#: Generous: the machine is shared, and nothing here asserts on speed.
DEADLINE = 60.0
RPC_TIMEOUT = 20.0

# The first test to run may pay for a cold `go build` (grpc-go and protobuf from scratch).
pytestmark = pytest.mark.timeout(300)

Amount = types_pb2.Amount
Code = grpc.StatusCode


# --- fixtures ----------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def go_adaptor() -> Path:
    """The adaptor binary (tests/adaptors/simledger_builds.py: rebuilt when go is here)."""
    return simledger_builds.go_binary()


@contextlib.contextmanager
def running_ledger(tmp_path: Path, *extra: str) -> Iterator[LedgerProcess]:
    """A simulated ledger on a short unix socket path, stopped and cleaned up on exit."""
    sockets = tempfile.mkdtemp(prefix="ilp")
    try:
        with start_ledger(tmp_path / "ledger.db", f"unix:{sockets}/ledger.sock", extra) as ledger:
            yield ledger
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[LedgerProcess]:
    with running_ledger(tmp_path) as process:
        yield process


@pytest.fixture
def adaptor_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Captures what the supervisor logs, including every adaptor's output."""
    caplog.set_level(logging.INFO, logger="ilp_host")
    return caplog


# --- helpers -----------------------------------------------------------------------------------


def go_spec(
    binary: Path, ledger_target: str, state: Path, *, name: str = "alice", account: str = ""
) -> AdaptorSpec:
    return AdaptorSpec(
        name=name,
        command=(str(binary),),
        env={
            "ILP_SIMLEDGER_ADDR": ledger_target,
            "ILP_SIMLEDGER_ACCOUNT": account or f"ledger-{name}",
            "ILP_ADAPTOR_STATE_DB": str(state),
        },
        start_timeout=DEADLINE,
        health_timeout=5.0,
    )


@contextlib.asynccontextmanager
async def supervised(
    spec: AdaptorSpec,
    *,
    engine: FakeEngine | None = None,
    on_incoming: Credit | None = None,
) -> AsyncIterator[Supervisor]:
    supervisor = Supervisor([spec], engine_addr=engine.address if engine else None)
    await supervisor.start()
    following = None
    if on_incoming is not None:
        following = asyncio.create_task(incoming_while_serving(supervisor, spec.name, on_incoming))
    try:
        # The Python adaptor may answer its first GetInfo before its ledger did: the supervisor
        # then restarts it after a short backoff. (The Go adaptor waits for its ledger.)
        await eventually(lambda: supervisor.serving(spec.name), f"{spec.name} SERVING")
        yield supervisor
    finally:
        if following is not None:
            following.cancel()
            await asyncio.gather(following, return_exceptions=True)
        await supervisor.stop()


async def incoming_while_serving(supervisor: Supervisor, name: str, credit: Credit) -> None:
    """What the engine binding does with incoming settlements, for one adaptor across its
    restarts: follow_incoming on each channel while the adaptor serves on it."""
    followed: tuple[grpc.aio.Channel, asyncio.Task[None]] | None = None
    try:
        async for _ in supervisor.watch(name):
            channel = supervisor.channel(name)
            if followed is not None and followed[0] is not channel:
                followed[1].cancel()
                followed = None
            if channel is not None and followed is None:
                followed = (channel, asyncio.create_task(follow_incoming(channel, name, credit)))
    finally:
        if followed is not None:
            followed[1].cancel()
            await asyncio.gather(followed[1], return_exceptions=True)


def stub(supervisor: Supervisor, name: str = "alice") -> adaptor_pb2_grpc.LedgerAdaptorStub:
    channel = supervisor.channel(name)
    assert channel is not None, f"adaptor {name} is not serving"
    return adaptor_pb2_grpc.LedgerAdaptorStub(channel)


def connection(supervisor: Supervisor, name: str, connection_name: str = "ledger") -> Any:
    for state in supervisor.snapshot(name).connections:
        if state.name == connection_name:
            return state
    return None


def ledger_is(supervisor: Supervisor, state: Connectivity, name: str = "alice") -> bool:
    found = connection(supervisor, name)
    return found is not None and found.state == state


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` at the deadline."""
    try:
        async with asyncio.timeout(DEADLINE):
            while not condition():  # noqa: ASYNC110 (state seen through logs and snapshots)
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {DEADLINE} s waiting for {what}") from None


async def redelivered(adaptor: adaptor_pb2_grpc.LedgerAdaptorStub, count: int) -> list[str]:
    """The first ``count`` settlement ids a new WatchEvents stream re-delivers, after the
    current ledger connection state, which the adaptor sends first (the contract); then
    nothing more for a moment."""
    call = adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest(), timeout=RPC_TIMEOUT)
    try:
        first = await call.read()
        assert first != grpc.aio.EOF and first.WhichOneof("event") == "connection_changed"
        assert first.connection_changed.name == "ledger"
        ids = []
        for _ in range(count):
            event = await call.read()
            assert event != grpc.aio.EOF and event.WhichOneof("event") == "incoming_settlement"
            ids.append(event.incoming_settlement.settlement_id)
        with contextlib.suppress(TimeoutError):
            extra = await asyncio.wait_for(call.read(), 0.3)
            if extra != grpc.aio.EOF and extra.WhichOneof("event") == "incoming_settlement":
                raise AssertionError(f"re-delivered more than {count}: {extra}")
        return ids
    finally:
        call.cancel()


class Peers:
    """A fake engine's answer to SendData: the peer's adaptor replying with its ledger account.
    Accounts in ``unreachable`` answer UNAVAILABLE, as an engine does while the peer is down."""

    def __init__(self, ledger_accounts: dict[str, str]) -> None:
        self.ledger_accounts = ledger_accounts
        self.unreachable: set[str] = set()

    def __call__(self, request: engine_pb2.SendDataRequest) -> bytes:
        if request.account_id in self.unreachable:
            raise Refuse(Code.UNAVAILABLE, "the peer cannot be reached (test)")
        if request.account_id not in self.ledger_accounts:
            raise Refuse(Code.NOT_FOUND, f"no account {request.account_id}")
        return simledger.ledger_account_reply(self.ledger_accounts[request.account_id])


class Credits:
    """The engine's side of incoming settlements: records every delivery; ``fail_once`` makes
    the first delivery of an id fail, as an engine that crashed before crediting."""

    def __init__(self) -> None:
        self.deliveries: list[adaptor_pb2.IncomingSettlement] = []
        self.fail_once: set[str] = set()

    async def __call__(self, adaptor: str, settlement: adaptor_pb2.IncomingSettlement) -> None:
        copy = adaptor_pb2.IncomingSettlement()
        copy.CopyFrom(settlement)
        self.deliveries.append(copy)
        if settlement.settlement_id in self.fail_once:
            self.fail_once.discard(settlement.settlement_id)
            raise RuntimeError(f"engine failed before crediting {settlement.settlement_id} (test)")

    def count(self, settlement_id: str) -> int:
        return sum(1 for s in self.deliveries if s.settlement_id == settlement_id)


def send(account: str, value: str, key: str, scale: int = 2) -> adaptor_pb2.SendMoneyRequest:
    return adaptor_pb2.SendMoneyRequest(
        account_id=account, amount=Amount(value=value, scale=scale), idempotency_key=key
    )


async def until_paid(
    adaptor: adaptor_pb2_grpc.LedgerAdaptorStub, request: adaptor_pb2.SendMoneyRequest
) -> adaptor_pb2.SendMoneyResponse:
    """SendMoney, retried while the peer's ledger account is not known yet (as the engine does)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            try:
                return await adaptor.SendMoney(request, timeout=RPC_TIMEOUT)
            except grpc.aio.AioRpcError as exc:
                if exc.code() != Code.FAILED_PRECONDITION:
                    raise
            await asyncio.sleep(0.05)


async def balance(ledger: simledger_pb2_grpc.SimLedgerStub, account: str) -> str:
    answer = await ledger.GetAccount(simledger_pb2.GetAccountRequest(account_id=account))
    return str(answer.account.balance.value)


async def pay(
    ledger: simledger_pb2_grpc.SimLedgerStub, transfer_id: str, payer: str, payee: str, value: str
) -> None:
    await ledger.Transfer(
        simledger_pb2.TransferRequest(
            transfer_id=transfer_id,
            from_account_id=payer,
            to_account_id=payee,
            amount=Amount(value=value, scale=2),
            memo=payer,
        )
    )


async def fund(ledger: simledger_pb2_grpc.SimLedgerStub, account: str, value: str) -> None:
    await ledger.CreateAccount(simledger_pb2.CreateAccountRequest(account_id=account))
    await ledger.Mint(
        simledger_pb2.MintRequest(
            transfer_id=f"fund-{account}", account_id=account, amount=Amount(value=value, scale=2)
        )
    )


def records(caplog: pytest.LogCaptureFixture, adaptor: str, starts: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == f"ilp_host.adaptor.{adaptor}" and r.getMessage().startswith(starts)
    ]


def adaptor_env(ledger_target: str, state: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        MAGIC_COOKIE_KEY: MAGIC_COOKIE_VALUE,
        "PLUGIN_PROTOCOL_VERSIONS": "1",
        "ILP_SIMLEDGER_ADDR": ledger_target,
        "ILP_SIMLEDGER_ACCOUNT": "ledger-alice",
        "ILP_ADAPTOR_STATE_DB": str(state),
        **extra,
    }


async def probe_until(
    adaptor: adaptor_pb2_grpc.LedgerAdaptorStub, state: Connectivity
) -> adaptor_pb2.ProbeResponse:
    """Probe until the ledger connection is in ``state``; the answer."""
    async with asyncio.timeout(DEADLINE):
        while True:
            probe = await adaptor.Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
            if probe.connections and probe.connections[0].state == state:
                return probe
            await asyncio.sleep(0.05)


async def collect_connection_changes(
    adaptor: adaptor_pb2_grpc.LedgerAdaptorStub, into: list[types_pb2.Connection]
) -> None:
    call = adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())
    try:
        async for event in call:
            if event.WhichOneof("event") == "connection_changed":
                into.append(event.connection_changed)
    finally:
        call.cancel()


# --- the process contract ----------------------------------------------------------------------


def test_refuses_to_run_by_hand_or_without_configuration(go_adaptor: Path, tmp_path: Path) -> None:
    by_hand = subprocess.run(
        [str(go_adaptor)], capture_output=True, text=True, timeout=60, check=False
    )
    assert by_hand.returncode == 1
    assert "This binary is a plugin" in by_hand.stderr
    assert by_hand.stdout == ""

    env = adaptor_env("unix:/nonexistent.sock", tmp_path / "state.json")
    del env["ILP_SIMLEDGER_ADDR"]
    unconfigured = subprocess.run(
        [str(go_adaptor)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert unconfigured.returncode == 1
    assert "ILP_SIMLEDGER_ADDR is not set" in unconfigured.stderr
    assert unconfigured.stdout == "", "no handshake line when the configuration is wrong"

    env = adaptor_env("unix:/nonexistent.sock", tmp_path / "state.json")
    env["ILP_SIMLEDGER_ACCOUNT"] = "not a valid account"
    malformed = subprocess.run(
        [str(go_adaptor)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert malformed.returncode == 1
    assert "ILP_SIMLEDGER_ACCOUNT" in malformed.stderr

    # No common contract version: refused before Serve (go-plugin alone would fall back to 1).
    env = adaptor_env("unix:/nonexistent.sock", tmp_path / "state.json")
    env["PLUGIN_PROTOCOL_VERSIONS"] = "2,3"
    no_version = subprocess.run(
        [str(go_adaptor)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert no_version.returncode == 1
    assert "PLUGIN_PROTOCOL_VERSIONS" in no_version.stderr
    assert no_version.stdout == ""


def test_serves_under_the_supervisor_and_stops_on_shutdown(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path, adaptor_logs: pytest.LogCaptureFixture
) -> None:
    spec = go_spec(go_adaptor, ledger.target, tmp_path / "alice.json")

    async def scenario() -> int:
        async with supervised(spec) as supervisor:
            snapshot = supervisor.snapshot("alice")
            assert snapshot.contract_version == 1
            crashes = [r for r in adaptor_logs.records if "CRASHED" in r.getMessage()]
            assert crashes == [], "served at the first attempt (GetInfo waits for the ledger)"
            info = snapshot.info
            assert info is not None
            assert (info.name, info.ledger, info.asset_code, info.asset_scale) == (
                "simledger-go",
                "simledger",
                "USD",
                2,
            )
            assert set(info.capabilities) == {
                "send_money",
                "receive_money",
                "data",
                "balance",
                "accounts",
            }
            assert list(info.contract_versions) == [1]
            await eventually(
                lambda: ledger_is(supervisor, Connectivity.READY), "the ledger connection READY"
            )
            assert connection(supervisor, "alice").kind == "settlement-system"

            channel = supervisor.channel("alice")
            assert channel is not None
            health = await health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=RPC_TIMEOUT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            probe = await stub(supervisor).Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
            assert probe.HasField("ready") and probe.ready.value
            assert [c.name for c in probe.connections] == ["ledger"]
            pid = snapshot.pid
            assert pid is not None
        final = supervisor.snapshot("alice")
        assert final.state == ProcessState.STOPPED
        # The runner notes a stop that needed SIGTERM or SIGKILL: none means Shutdown did it.
        assert final.last_error == ""
        return pid

    pid = asyncio.run(scenario())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert [r for r in adaptor_logs.records if "did not stop after" in r.getMessage()] == []
    # The adaptor's hclog JSON on stderr, understood: its last words after plugin.Serve returned.
    stopped = records(adaptor_logs, "alice", "stopped")
    assert stopped and stopped[-1].levelno == logging.INFO


def test_sigterm_stops_it_cleanly(go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path) -> None:
    sockets = tempfile.mkdtemp(prefix="ilp")

    async def scenario() -> None:
        env = adaptor_env(ledger.target, tmp_path / "alice.json", PLUGIN_UNIX_SOCKET_DIR=sockets)
        process = await asyncio.create_subprocess_exec(
            str(go_adaptor),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        try:
            assert process.stdout is not None and process.stderr is not None
            line = await asyncio.wait_for(process.stdout.readline(), DEADLINE)
            handshake = parse(line.decode(), [1])
            assert (handshake.network, handshake.protocol) == ("unix", "grpc")
            assert handshake.server_cert_der is None
            socket = Path(handshake.address)
            assert socket.parent == Path(sockets)
            assert os.path.exists(socket)  # noqa: ASYNC240 (a stat, not I/O worth a thread)
            process.send_signal(signal.SIGINT)  # ignored, as go-plugin plugins do
            process.send_signal(signal.SIGTERM)
            _, stderr = await asyncio.wait_for(process.communicate(), DEADLINE)
            assert process.returncode == 0, stderr.decode()
            assert not os.path.exists(socket), "the socket is removed on the way out"  # noqa: ASYNC240
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()

    try:
        asyncio.run(scenario())
    finally:
        shutil.rmtree(sockets, ignore_errors=True)


def test_ledger_connection_follows_the_ledger(go_adaptor: Path, tmp_path: Path) -> None:
    """Started while the ledger is offline: it handshakes and says so; then it follows the
    ledger going online, offline and online again, on Probe and on WatchEvents."""

    async def scenario(target: str) -> None:
        env = {
            "ILP_SIMLEDGER_ADDR": target,
            "ILP_SIMLEDGER_ACCOUNT": "ledger-alice",
            "ILP_ADAPTOR_STATE_DB": str(tmp_path / "alice.json"),
        }
        async with (
            run_adaptor([str(go_adaptor)], env=env, start_timeout=DEADLINE) as running,
            grpc.aio.insecure_channel(target) as channel,
        ):
            adaptor = running.client.adaptor
            changes: list[types_pb2.Connection] = []
            watch = asyncio.create_task(collect_connection_changes(adaptor, changes))
            try:
                down = await probe_until(adaptor, Connectivity.TRANSIENT_FAILURE)
                assert not down.ready.value
                assert down.connections[0].attempts >= 1
                assert "UNAVAILABLE" in down.connections[0].last_error.upper()
                code, _ = await failure(
                    adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
                )
                assert code == Code.UNAVAILABLE  # the asset is not known before the ledger

                book = simledger_pb2_grpc.SimLedgerStub(channel)
                await book.SetFaults(simledger_pb2.SetFaultsRequest())
                up = await probe_until(adaptor, Connectivity.READY)
                assert up.ready.value and up.connections[0].attempts == 0
                assert up.connections[0].last_error == ""
                info = await adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
                assert (info.asset_code, info.asset_scale) == ("USD", 2)
                answer = await adaptor.GetBalance(adaptor_pb2.GetBalanceRequest())
                assert answer.balance == Amount(value="0", scale=2)

                offline = simledger_pb2.Faults(offline=True)
                await book.SetFaults(simledger_pb2.SetFaultsRequest(faults=offline))
                await probe_until(adaptor, Connectivity.TRANSIENT_FAILURE)
                code, _ = await failure(
                    adaptor.GetBalance(adaptor_pb2.GetBalanceRequest(), timeout=RPC_TIMEOUT)
                )
                assert code == Code.UNAVAILABLE
                # The asset is remembered: GetInfo answers while the ledger is away.
                await adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
                await book.SetFaults(simledger_pb2.SetFaultsRequest())
                await probe_until(adaptor, Connectivity.READY)
                await eventually(
                    lambda: bool(changes) and changes[-1].state == Connectivity.READY,
                    "READY on WatchEvents",
                )
            finally:
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch
            states = [Connectivity(c.state) for c in changes]
            for before, after in itertools.pairwise(states):
                assert after in TRANSITIONS[before], states
            assert Connectivity.TRANSIENT_FAILURE in states
            assert all(c.name == "ledger" for c in changes)
        assert running.process.returncode == 0

    with running_ledger(tmp_path, "--offline") as ledger:
        asyncio.run(scenario(ledger.target))


# --- settling ----------------------------------------------------------------------------------


def test_under_the_supervisor_receipts_go_over_grpc_stdio(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path, adaptor_logs: pytest.LogCaptureFixture
) -> None:
    """What only go-plugin's Serve adds to the parametrised payments of
    test_simledger_adaptors.py: the adaptor runs under the host's Supervisor, and its settlement
    receipts, printed on stdout, reach the host over GRPCStdio."""
    peers = Peers({"peer-bob": "ledger-bob"})

    def receipts() -> list[logging.LogRecord]:
        # The adaptor also logs "settlement sent" on stderr (hclog), before its receipt on
        # stdout: only the stdout records are the receipts.
        return [
            r
            for r in records(adaptor_logs, "alice", "settlement sent")
            if getattr(r, "stream", "") == "stdout"
        ]

    async def scenario() -> None:
        spec = go_spec(go_adaptor, ledger.target, tmp_path / "alice.json")
        async with (
            fake_engine(peers, set_environ=False) as engine,
            supervised(spec, engine=engine) as supervisor,
            grpc.aio.insecure_channel(ledger.target) as channel,
        ):
            book = simledger_pb2_grpc.SimLedgerStub(channel)
            await eventually(lambda: ledger_is(supervisor, Connectivity.READY), "READY")
            await fund(book, "ledger-alice", "10000")
            await book.CreateAccount(simledger_pb2.CreateAccountRequest(account_id="ledger-bob"))
            adaptor = stub(supervisor)
            await adaptor.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="peer-bob"))
            assert [
                (c.account_id, simledger.parse_ledger_account_request(c.data)) for c in engine.calls
            ] == [("peer-bob", "ledger-alice")]
            for key, value in (("settle-1", "1500"), ("settle-2", "500")):
                sent = await adaptor.SendMoney(send("peer-bob", value, key))
                assert sent.settlement_id == f"ledger-alice:{key}"
            assert await balance(book, "ledger-bob") == "2000"
            # Settlement receipts go to stdout, which go-plugin carries over GRPCStdio: the
            # supervisor drains that stream and logs each line.
            await eventually(
                lambda: len(receipts()) >= 2, "the receipts on GRPCStdio in the supervisor's log"
            )

    asyncio.run(scenario())
    assert [getattr(r, "fields", {}).get("settlement_id") for r in receipts()] == [
        "ledger-alice:settle-1",
        "ledger-alice:settle-2",
    ]


def test_the_hosts_follower_retries_a_credit_and_a_supervised_restart_redelivers(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path
) -> None:
    """What only the host adds to the parametrised redelivery of test_simledger_adaptors.py:
    the host's own follower of WatchEvents (host.binding.follow_incoming) delivers again a
    credit the engine failed, and a restart through the Supervisor (go-plugin's
    GRPCController.Shutdown, then a new handshake) keeps the unacknowledged and the keys."""
    peers = Peers({"peer-bob": "ledger-bob"})
    credits = Credits()

    async def scenario() -> None:
        spec = go_spec(go_adaptor, ledger.target, tmp_path / "alice.json")
        async with (
            fake_engine(peers, set_environ=False) as engine,
            supervised(spec, engine=engine, on_incoming=credits) as supervisor,
            grpc.aio.insecure_channel(ledger.target) as channel,
        ):
            book = simledger_pb2_grpc.SimLedgerStub(channel)
            await eventually(lambda: ledger_is(supervisor, Connectivity.READY), "READY")
            await fund(book, "ledger-bob", "5000")
            await fund(book, "ledger-alice", "5000")
            adaptor = stub(supervisor)
            await adaptor.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="peer-bob"))

            # The engine fails on the first delivery: the credit is tried again.
            credits.fail_once.add("bob:1")
            await pay(book, "bob:1", "ledger-bob", "ledger-alice", "700")
            await eventually(lambda: credits.count("bob:1") >= 2, "bob:1 re-delivered")
            delivered = credits.deliveries[0]
            assert delivered.account_id == "peer-bob"
            assert delivered.amount == Amount(value="700", scale=2)
            await pay(book, "bob:2", "ledger-bob", "ledger-alice", "200")
            await eventually(lambda: credits.count("bob:2") >= 1, "bob:2 delivered")
            await adaptor.ReceiveMoney(adaptor_pb2.ReceiveMoneyRequest(settlement_id="bob:1"))
            paid = await adaptor.SendMoney(send("peer-bob", "100", "before-restart"))

            before = credits.count("bob:2")
            restarted = await supervisor.restart("alice")
            assert restarted.state == ProcessState.SERVING, restarted.last_error
            await eventually(lambda: credits.count("bob:2") > before, "bob:2 after the restart")
            adaptor = stub(supervisor)
            assert await redelivered(adaptor, 1) == ["bob:2"]
            assert await adaptor.SendMoney(send("peer-bob", "100", "before-restart")) == paid
            assert await balance(book, "ledger-bob") == str(5000 - 700 - 200 + 100)
            assert {s.settlement_id for s in credits.deliveries} == {"bob:1", "bob:2"}

    asyncio.run(scenario())


def test_accounts_and_peer_messages(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path
) -> None:
    peers = Peers({"peer-bob": "ledger-bob"})
    peers.unreachable.add("peer-bob")

    async def scenario() -> None:
        spec = go_spec(go_adaptor, ledger.target, tmp_path / "alice.json")
        async with (
            fake_engine(peers, set_environ=False) as engine,
            supervised(spec, engine=engine) as supervisor,
            grpc.aio.insecure_channel(ledger.target) as channel,
        ):
            book = simledger_pb2_grpc.SimLedgerStub(channel)
            await eventually(lambda: ledger_is(supervisor, Connectivity.READY), "READY")
            await fund(book, "ledger-alice", "1000")
            await book.CreateAccount(simledger_pb2.CreateAccountRequest(account_id="ledger-bob"))
            adaptor = stub(supervisor)

            for bad in ("", "peer bob", "x" * 129, "peer:bob"):
                code, _ = await failure(
                    adaptor.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id=bad))
                )
                assert code == Code.INVALID_ARGUMENT, bad

            # The peer cannot be reached: OK all the same, the exchange goes on in the background.
            await adaptor.SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="peer-bob"))
            code, details = await failure(adaptor.SendMoney(send("peer-bob", "100", "k1")))
            assert code == Code.FAILED_PRECONDITION, details
            await eventually(lambda: len(engine.calls) >= 2, "a retried exchange")
            peers.unreachable.clear()
            sent = await until_paid(adaptor, send("peer-bob", "100", "k1"))
            assert sent.settlement_id == "ledger-alice:k1"

            # The peer's adaptor sends its ledger account: we answer with ours.
            reply = await adaptor.ReceiveData(
                adaptor_pb2.ReceiveDataRequest(
                    account_id="peer-bob", data=simledger.ledger_account_request("ledger-bob")
                )
            )
            assert simledger.parse_ledger_account_reply(reply.data) == "ledger-alice"
            malformed = [
                b"",
                b"not protobuf",
                b"\x12\x03new",  # a kind from a newer release
                b"\x0a\x00",  # an exchange without an account
                simledger.ledger_account_request("no spaces allowed"),
                simledger.ledger_account_request("ledger-alice"),
                b"x" * 32768,
            ]
            for data in malformed:
                code, _ = await failure(
                    adaptor.ReceiveData(
                        adaptor_pb2.ReceiveDataRequest(account_id="peer-bob", data=data)
                    )
                )
                assert code == Code.INVALID_ARGUMENT, data[:40]
            code, _ = await failure(
                adaptor.ReceiveData(
                    adaptor_pb2.ReceiveDataRequest(
                        account_id="nobody", data=simledger.ledger_account_request("ledger-x")
                    )
                )
            )
            assert code == Code.NOT_FOUND

            # Deleting is idempotent; a deleted account is unknown, but its keys still answer.
            for _ in range(2):
                await adaptor.DeleteAccount(adaptor_pb2.DeleteAccountRequest(account_id="peer-bob"))
            code, _ = await failure(adaptor.SendMoney(send("peer-bob", "100", "k2")))
            assert code == Code.NOT_FOUND
            assert await adaptor.SendMoney(send("peer-bob", "100", "k1")) == sent
            code, _ = await failure(
                adaptor.DeleteAccount(adaptor_pb2.DeleteAccountRequest(account_id="bad id"))
            )
            assert code == Code.INVALID_ARGUMENT
            assert await balance(book, "ledger-bob") == "100"

    asyncio.run(scenario())


# --- peering with the Python adaptor -----------------------------------------------------------


def test_peers_with_the_python_adaptor(
    go_adaptor: Path, ledger: LedgerProcess, tmp_path: Path
) -> None:
    """Go on alice's side, Python on bob's: each engine carries SendData to the other adaptor's
    ReceiveData, as two hosts do over ILP. Both directions settle."""
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
        alice_spec = go_spec(go_adaptor, ledger.target, tmp_path / "alice.json", name="alice")
        bob_spec = AdaptorSpec(
            name="bob",
            command=PYTHON_ADAPTOR,
            env={
                "ILP_SIMLEDGER_ADDR": ledger.target,
                "ILP_SIMLEDGER_ACCOUNT": "ledger-bob",
                "ILP_ADAPTOR_STATE_DB": str(tmp_path / "bob.db"),
                "PYTHONPATH": str(REPO),
            },
            start_timeout=DEADLINE,
            health_timeout=5.0,
        )
        async with (
            fake_engine(carry("alice"), set_environ=False) as alice_engine,
            fake_engine(carry("bob"), set_environ=False) as bob_engine,
            supervised(alice_spec, engine=alice_engine, on_incoming=acknowledge) as alice,
            supervised(bob_spec, engine=bob_engine, on_incoming=acknowledge) as bob,
            grpc.aio.insecure_channel(ledger.target) as channel,
        ):
            supervisors.update(alice=alice, bob=bob)
            book = simledger_pb2_grpc.SimLedgerStub(channel)
            await eventually(lambda: ledger_is(alice, Connectivity.READY), "alice READY")
            await eventually(lambda: ledger_is(bob, Connectivity.READY, "bob"), "bob READY")
            await fund(book, "ledger-alice", "10000")
            await fund(book, "ledger-bob", "10000")

            # Bob first: alice has not set up "bob" yet, so bob's exchange is refused and
            # retried; alice's own exchange then teaches both sides.
            await stub(bob, "bob").SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="alice"))
            await stub(alice).SetupAccount(adaptor_pb2.SetupAccountRequest(account_id="bob"))

            sent = await until_paid(stub(alice), send("bob", "1234", "go-to-python"))
            assert sent.settlement_id == "ledger-alice:go-to-python"
            await eventually(
                lambda: credits["bob"].count("ledger-alice:go-to-python") >= 1,
                "the Python adaptor reporting the Go adaptor's payment",
            )
            incoming = credits["bob"].deliveries[0]
            assert (incoming.account_id, incoming.amount) == (
                "alice",
                Amount(value="1234", scale=2),
            )

            back = await until_paid(stub(bob, "bob"), send("alice", "99", "python-to-go"))
            await eventually(
                lambda: credits["alice"].count(back.settlement_id) >= 1,
                "the Go adaptor reporting the Python adaptor's payment",
            )
            incoming = credits["alice"].deliveries[0]
            assert (incoming.account_id, incoming.amount) == ("bob", Amount(value="99", scale=2))
            assert await redelivered(stub(alice), 0) == []
            assert await balance(book, "ledger-alice") == str(10000 - 1234 + 99)

    asyncio.run(scenario())
