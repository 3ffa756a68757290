"""The Node.js simledger adaptor (adaptors/simledger-node) on a real simulated ledger.

Every test runs ``python -m host.simledger`` as a real process and the adaptor as the host
would: under the host's Supervisor, or as a raw child process through ``sdk.testing``'s
``run_adaptor`` (cookie, versions, handshake, Shutdown). The engine side is ``sdk.testing``'s
fake Engine answering like the peer's adaptor; one test peers the Node adaptor with the Python
one (adaptors/simledger-python) to show they speak the same ledger-account message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2

from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger.process import LedgerProcess, start_ledger
from host.supervisor import AdaptorSpec, ProcessState, Supervisor
from sdk.connectivity import TRANSITIONS, Connectivity
from sdk.contract import ENV_ENGINE_ADDR, HEALTH_SERVICE, MAGIC_COOKIE_KEY
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.pb.plugin import grpc_controller_pb2
from sdk.testing import AdaptorClient, AdaptorProcess, Refuse, adaptor_environ, fake_engine
from sdk.testing import run_adaptor as _run_adaptor
from tests.adaptors import simledger_builds
from tests.grpc_status import ended

REPO = simledger_builds.REPO
ADAPTOR_DIR = simledger_builds.NODE_DIR
COMMAND = ("node", str(ADAPTOR_DIR / "adaptor.js"))
PYTHON_ADAPTOR = simledger_builds.PYTHON_COMMAND
#: Generous: the machine is shared, and nothing here asserts on speed.
DEADLINE = 30.0
RPC_TIMEOUT = 20.0

Amount = types_pb2.Amount
State = types_pb2.ConnectivityState


@pytest.fixture(autouse=True)
def _node_adaptor_installed() -> None:
    simledger_builds.node_command()


def test_node_unit_tests_pass() -> None:
    # The pure pieces and the state file, tested in Node itself (adaptors/simledger-node/test).
    result = subprocess.run(
        ["node", "--test", "--test-reporter=tap", "test/"],
        cwd=ADAPTOR_DIR,
        capture_output=True,
        text=True,
        timeout=DEADLINE * 2,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "# fail 0" in result.stdout


# --- The ledger, the adaptor, and waiting ----------------------------------------------------


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A short private directory (unix socket paths must stay under 100 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="ilp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@contextlib.contextmanager
def ledger_process(workdir: Path) -> Iterator[LedgerProcess]:
    with start_ledger(workdir / "ledger.db", f"unix:{workdir}/ledger.sock") as ledger:
        yield ledger


@contextlib.asynccontextmanager
async def ledger_client(target: str) -> AsyncIterator[simledger_pb2_grpc.SimLedgerStub]:
    async with grpc.aio.insecure_channel(target) as channel:
        yield simledger_pb2_grpc.SimLedgerStub(channel)


def adaptor_env(
    ledger_target: str, account: str, state_db: Path, engine: str | None = None
) -> dict[str, str]:
    env = {
        "ILP_SIMLEDGER_ADDR": ledger_target,
        "ILP_SIMLEDGER_ACCOUNT": account,
        "ILP_ADAPTOR_STATE_DB": str(state_db),
        # Not inherited from this process: only what the test says.
        ENV_ENGINE_ADDR: engine or "",
    }
    return env


def run_adaptor(
    env: dict[str, str], command: tuple[str, ...] = COMMAND, **kwargs: Any
) -> contextlib.AbstractAsyncContextManager[AdaptorProcess]:
    return _run_adaptor(command, env=env, **kwargs)


async def until(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Poll ``check`` until it holds; fail naming ``what`` after DEADLINE seconds."""
    deadline = time.monotonic() + DEADLINE
    while not await check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def ledger_state(client: AdaptorClient) -> types_pb2.Connection:
    probe = await client.adaptor.Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
    (connection,) = probe.connections
    assert (connection.name, connection.kind) == ("ledger", "settlement-system")
    return connection


async def wait_ready(client: AdaptorClient) -> None:
    async def ready() -> bool:
        return (await ledger_state(client)).state == State.CONNECTIVITY_STATE_READY

    await until(ready, "the ledger connection to be READY")


async def set_offline(ledger: simledger_pb2_grpc.SimLedgerStub, offline: bool) -> None:
    faults = simledger_pb2.Faults(offline=offline)
    await ledger.SetFaults(simledger_pb2.SetFaultsRequest(faults=faults), timeout=RPC_TIMEOUT)


async def balance_on_ledger(ledger: simledger_pb2_grpc.SimLedgerStub, account: str) -> int:
    reply = await ledger.GetAccount(
        simledger_pb2.GetAccountRequest(account_id=account), timeout=RPC_TIMEOUT
    )
    return int(reply.account.balance.value)


async def mint(ledger: simledger_pb2_grpc.SimLedgerStub, account: str, value: int) -> None:
    await ledger.CreateAccount(
        simledger_pb2.CreateAccountRequest(account_id=account), timeout=RPC_TIMEOUT
    )
    await ledger.Mint(
        simledger_pb2.MintRequest(
            transfer_id=f"mint:{account}:{value}",
            account_id=account,
            amount=Amount(value=str(value), scale=2),
        ),
        timeout=RPC_TIMEOUT,
    )


async def next_incoming(
    stream: grpc.aio.UnaryStreamCall[Any, adaptor_pb2.WatchEventsResponse],
) -> adaptor_pb2.IncomingSettlement:
    """The next incoming settlement on a WatchEvents stream (connection changes skipped)."""
    async with asyncio.timeout(DEADLINE):
        while True:
            event = await stream.read()
            assert event is not grpc.aio.EOF, "WatchEvents ended"
            if event.WhichOneof("event") == "incoming_settlement":
                return event.incoming_settlement


def watch(client: AdaptorClient) -> grpc.aio.UnaryStreamCall[Any, adaptor_pb2.WatchEventsResponse]:
    return client.adaptor.WatchEvents(adaptor_pb2.WatchEventsRequest())


def send_money(
    client: AdaptorClient, account: str, value: str, key: str, scale: int = 2
) -> Awaitable[adaptor_pb2.SendMoneyResponse]:
    request = adaptor_pb2.SendMoneyRequest(
        account_id=account, amount=Amount(value=value, scale=scale), idempotency_key=key
    )
    return client.adaptor.SendMoney(request, timeout=RPC_TIMEOUT)


# --- Under the host's supervisor ------------------------------------------------------------


async def _under_supervisor(workdir: Path) -> None:
    with ledger_process(workdir) as process:
        env = adaptor_env(process.target, "alice", workdir / "alice.db")
        spec = AdaptorSpec(name="alice", command=COMMAND, env=env, start_timeout=DEADLINE)
        async with ledger_client(process.target) as ledger, Supervisor([spec]) as supervisor:
            snapshot = supervisor.snapshot("alice")
            assert snapshot.state == ProcessState.SERVING
            assert snapshot.info is not None
            assert (snapshot.info.name, snapshot.info.ledger) == ("simledger-node", "simledger")
            assert (snapshot.info.asset_code, snapshot.info.asset_scale) == ("USD", 2)
            assert set(snapshot.info.capabilities) == {
                "send_money",
                "receive_money",
                "data",
                "balance",
                "accounts",
            }
            assert list(snapshot.info.contract_versions) == [1]

            def ledger_link() -> Any:
                found = [c for c in supervisor.snapshot("alice").connections if c.name == "ledger"]
                return found[0] if found else None

            async def link_is(state: Connectivity) -> bool:
                link = ledger_link()
                return link is not None and link.state == state

            await until(lambda: link_is(Connectivity.READY), "the host to see the ledger READY")
            await set_offline(ledger, True)
            await until(
                lambda: link_is(Connectivity.TRANSIENT_FAILURE),
                "the host to see the ledger TRANSIENT_FAILURE",
            )
            link = ledger_link()
            assert link.attempts >= 1 and "UNAVAILABLE" in link.last_error
            # Alive but not ready: the process is fine, its ledger is not.
            assert supervisor.serving("alice")
            await set_offline(ledger, False)
            await until(lambda: link_is(Connectivity.READY), "the host to see the ledger again")
            assert (ledger_link().attempts, ledger_link().last_error) == (0, "")
        assert supervisor.snapshot("alice").state == ProcessState.STOPPED


def test_serves_under_the_supervisor_and_reports_the_ledger_connection(workdir: Path) -> None:
    asyncio.run(_under_supervisor(workdir))


# --- The ledger connection ------------------------------------------------------------------


async def _connection_states(workdir: Path) -> None:
    # The adaptor starts before its ledger exists: it must handshake anyway and say so.
    target = f"unix:{workdir}/ledger.sock"
    async with run_adaptor(adaptor_env(target, "alice", workdir / "alice.db")) as adaptor:
        client = adaptor.client
        health = await client.health.Check(
            health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=RPC_TIMEOUT
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        no_asset = client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
        assert (await ended(no_asset)).code == grpc.StatusCode.UNAVAILABLE
        balance = client.adaptor.GetBalance(adaptor_pb2.GetBalanceRequest(), timeout=RPC_TIMEOUT)
        assert (await ended(balance)).code == grpc.StatusCode.UNAVAILABLE

        async def failing() -> bool:
            link = await ledger_state(client)
            return link.state == State.CONNECTIVITY_STATE_TRANSIENT_FAILURE and link.attempts >= 2

        await until(failing, "TRANSIENT_FAILURE with attempts while there is no ledger")
        probe = await client.adaptor.Probe(adaptor_pb2.ProbeRequest(), timeout=RPC_TIMEOUT)
        assert probe.HasField("ready") and not probe.ready.value
        assert probe.connections[0].last_error

        async def down() -> bool:
            link = await ledger_state(client)
            return link.state != State.CONNECTIVITY_STATE_READY and link.attempts >= 1

        stream = watch(client)
        await asyncio.wait_for(stream.wait_for_connection(), DEADLINE)
        with ledger_process(workdir) as process:
            assert process.target == target
            await wait_ready(client)
            info = await client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
            assert (info.name, info.asset_code, info.asset_scale) == ("simledger-node", "USD", 2)
            async with ledger_client(process.target) as ledger:
                await set_offline(ledger, True)
                await until(down, "the ledger connection to fail while the ledger is offline")
                await set_offline(ledger, False)
                await wait_ready(client)
        # The ledger process is gone now: the stream to it breaks.
        await until(down, "the ledger connection to fail once the ledger process stopped")
        states: list[types_pb2.Connection] = []
        await adaptor_stop(adaptor)
        async for event in stream:
            if event.WhichOneof("event") == "connection_changed":
                states.append(event.connection_changed)
        assert await stream.code() == grpc.StatusCode.OK
    seen = [Connectivity(c.state) for c in states]
    assert seen[-1] == Connectivity.SHUTDOWN
    assert Connectivity.READY in seen and Connectivity.TRANSIENT_FAILURE in seen
    for before, after in itertools.pairwise(seen):
        assert after in TRANSITIONS[before], f"illegal {before.name} -> {after.name} in {seen}"
    for connection in states:
        if connection.state == State.CONNECTIVITY_STATE_TRANSIENT_FAILURE:
            assert connection.attempts >= 1 and connection.last_error
        if connection.state == State.CONNECTIVITY_STATE_READY:
            assert (connection.attempts, connection.last_error) == (0, "")


async def adaptor_stop(adaptor: AdaptorProcess) -> None:
    """Shutdown, as the host asks; the adaptor must exit 0."""
    await adaptor.client.controller.Shutdown(grpc_controller_pb2.Empty(), timeout=RPC_TIMEOUT)
    async with asyncio.timeout(DEADLINE):
        assert await adaptor.wait() == 0


def test_ledger_connection_moves_legally_through_outages(workdir: Path) -> None:
    asyncio.run(_connection_states(workdir))


# SetupAccount, SendMoney and incoming settlements (redelivery, acknowledgements surviving a
# kill, restarts): the scenarios every simledger adaptor runs, in test_simledger_adaptors.py.


# --- Peering with the Python adaptor --------------------------------------------------------


async def _peering(workdir: Path) -> None:
    # Each side's fake engine carries SendData to the other adaptor's ReceiveData, as two
    # hosts would. alice (Node) knows the peer as account "bob"; bob (Python) as "alice".
    clients: dict[str, AdaptorClient] = {}

    def carrier(to: str, as_account: str) -> Callable[[engine_pb2.SendDataRequest], Any]:
        async def carry(request: engine_pb2.SendDataRequest) -> bytes:
            if to not in clients:
                raise Refuse(grpc.StatusCode.UNAVAILABLE, f"{to} is not up yet")
            try:
                reply = await clients[to].adaptor.ReceiveData(
                    adaptor_pb2.ReceiveDataRequest(account_id=as_account, data=request.data),
                    timeout=RPC_TIMEOUT,
                )
            except grpc.aio.AioRpcError as exc:
                raise Refuse(grpc.StatusCode.FAILED_PRECONDITION, str(exc.details())) from exc
            return reply.data

        return carry

    with ledger_process(workdir) as process:
        async with (
            ledger_client(process.target) as ledger,
            fake_engine(carrier("bob", "alice"), set_environ=False) as alice_engine,
            fake_engine(carrier("alice", "bob"), set_environ=False) as bob_engine,
        ):
            await mint(ledger, "alice", 1000)
            await mint(ledger, "bob", 1000)
            alice_env = adaptor_env(
                process.target, "alice", workdir / "alice.db", alice_engine.address
            )
            bob_env = adaptor_env(process.target, "bob", workdir / "bob.db", bob_engine.address)
            bob_env["PYTHONPATH"] = str(REPO)
            async with (
                run_adaptor(alice_env) as alice,
                run_adaptor(bob_env, PYTHON_ADAPTOR) as bob,
            ):
                clients.update(alice=alice.client, bob=bob.client)
                await wait_ready(alice.client)
                await wait_ready(bob.client)
                bob_events = watch(bob.client)
                alice_events = watch(alice.client)
                # bob first: alice's exchange then reaches a peer that knows the account.
                await bob.client.adaptor.SetupAccount(
                    adaptor_pb2.SetupAccountRequest(account_id="alice"), timeout=RPC_TIMEOUT
                )
                await alice.client.adaptor.SetupAccount(
                    adaptor_pb2.SetupAccountRequest(account_id="bob"), timeout=RPC_TIMEOUT
                )

                async def pays(client: AdaptorClient, account: str, key: str) -> bool:
                    call = send_money(client, account, "120", key)
                    code = (await ended(call)).code
                    assert code in (grpc.StatusCode.OK, grpc.StatusCode.FAILED_PRECONDITION)
                    return code == grpc.StatusCode.OK

                await until(lambda: pays(alice.client, "bob", "n1"), "alice to pay bob")
                incoming = await next_incoming(bob_events)
                assert (incoming.settlement_id, incoming.account_id) == ("alice:n1", "alice")
                assert incoming.amount == Amount(value="120", scale=2)
                await until(lambda: pays(bob.client, "alice", "p1"), "bob to pay alice")
                incoming = await next_incoming(alice_events)
                assert (incoming.settlement_id, incoming.account_id) == ("bob:p1", "bob")
                assert incoming.amount == Amount(value="120", scale=2)
                assert await balance_on_ledger(ledger, "alice") == 1000
                assert await balance_on_ledger(ledger, "bob") == 1000
                bob_events.cancel()
                alice_events.cancel()


def test_peers_with_the_python_simledger_adaptor(workdir: Path) -> None:
    asyncio.run(_peering(workdir))


# --- The process contract -------------------------------------------------------------------


async def _process_contract(workdir: Path) -> None:
    with ledger_process(workdir) as process:
        env = adaptor_env(process.target, "alice", workdir / "alice.db")
        async with run_adaptor(env, transport="tcp", use_mtls=True) as adaptor:
            assert adaptor.handshake.network == "tcp"
            assert adaptor.handshake.server_cert_der is not None
            client = adaptor.client
            await wait_ready(client)
            info = await client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest(), timeout=RPC_TIMEOUT)
            assert info.name == "simledger-node"

            adaptor.process.send_signal(signal.SIGINT)
            async with asyncio.timeout(DEADLINE):
                await adaptor.wait_for_output("ignoring SIGINT", stream="stderr")
            health = await client.health.Check(
                health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=RPC_TIMEOUT
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING

            stream = watch(client)
            await asyncio.wait_for(stream.wait_for_connection(), DEADLINE)
            adaptor.process.send_signal(signal.SIGTERM)
            events = [event async for event in stream]
            # The ledger link's current state first (the contract), then its SHUTDOWN.
            assert [e.connection_changed.name for e in events] == ["ledger", "ledger"]
            assert events[-1].connection_changed.state == State.CONNECTIVITY_STATE_SHUTDOWN
            assert await stream.code() == grpc.StatusCode.OK
            async with asyncio.timeout(DEADLINE):
                assert await adaptor.wait() == 0
            # All of stderr: read until it ends (the process has exited).
            with contextlib.suppress(EOFError):
                async with asyncio.timeout(DEADLINE):
                    await adaptor.wait_for_output("\0not in any log\0", stream="stderr")
    records = [json.loads(line) for line in adaptor.stderr.decode().splitlines() if line.strip()]
    assert records, "the adaptor logged nothing"
    for record in records:
        assert {"@level", "@message", "@timestamp"} <= record.keys()
    assert any(r.get("reason") == "SIGTERM" for r in records)


def test_mutual_tls_signals_and_hclog_logs(workdir: Path) -> None:
    asyncio.run(_process_contract(workdir))


async def _run_to_exit(env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *COMMAND,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(process.communicate(), DEADLINE)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


@pytest.mark.parametrize(
    ("change", "said"),
    [
        ({"ILP_SIMLEDGER_ADDR": ""}, "ILP_SIMLEDGER_ADDR"),
        ({"ILP_SIMLEDGER_ADDR": "nowhere"}, "ILP_SIMLEDGER_ADDR"),
        ({"ILP_SIMLEDGER_ACCOUNT": ""}, "ILP_SIMLEDGER_ACCOUNT"),
        ({"ILP_SIMLEDGER_ACCOUNT": "no spaces"}, "ILP_SIMLEDGER_ACCOUNT"),
        ({"ILP_ADAPTOR_STATE_DB": ""}, "ILP_ADAPTOR_STATE_DB"),
        ({ENV_ENGINE_ADDR: "not a target"}, ENV_ENGINE_ADDR),
        ({MAGIC_COOKIE_KEY: "wrong"}, MAGIC_COOKIE_KEY),
    ],
)
def test_refuses_bad_configuration_with_status_1(
    workdir: Path, change: dict[str, str], said: str
) -> None:
    env = adaptor_environ(adaptor_env("unix:/nonexistent/ledger.sock", "alice", workdir / "a.db"))
    env.update(change)
    env = {key: value for key, value in env.items() if value}
    status, out, err = asyncio.run(_run_to_exit(env))
    assert (status, out) == (1, ""), err
    assert said in err
    assert not (workdir / "a.db").exists(), "created state before refusing"


async def _state_of_another_account(workdir: Path) -> tuple[int, str, str]:
    # The ledger need not be up: the adaptor handshakes anyway, having written its state file.
    target = f"unix:{workdir}/ledger.sock"
    async with run_adaptor(adaptor_env(target, "alice", workdir / "state.db")):
        pass
    return await _run_to_exit(adaptor_environ(adaptor_env(target, "bob", workdir / "state.db")))


def test_refuses_a_state_file_of_another_ledger_account(workdir: Path) -> None:
    status, out, err = asyncio.run(_state_of_another_account(workdir))
    assert (status, out) == (1, ""), err
    assert "ILP_SIMLEDGER_ACCOUNT" in err and '"alice"' in err
