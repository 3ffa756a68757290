"""The supervisor with real adaptor processes: serve, crash and restart, health, stop stages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import signal
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import grpc
import pytest

from host.binding import follow_incoming
from host.lifecycle import ProcessState
from host.supervisor import AdaptorSnapshot, AdaptorSpec, Supervisor, SupervisorStopped
from host.supervisor.process import is_alive
from sdk.connectivity import Connectivity
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from tests.grpc_status import failure
from tests.polling import wait_until_async

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "adaptors"
GOOD = (sys.executable, str(FIXTURES / "good.py"))
MEMORY = REPO / "adaptors" / "memory-python" / "adaptor.py"
DEADLINE = 30.0  # generous: the machine is shared; nothing below relies on timing margins


def spec(name: str = "good", **options: object) -> AdaptorSpec:
    defaults: dict[str, object] = {"command": GOOD, "backoff_initial": 0.1, "backoff_max": 0.5}
    defaults.update(options)
    return AdaptorSpec(name, **defaults)  # type: ignore[arg-type]


async def until(
    supervisor: Supervisor, name: str, wanted: Callable[[AdaptorSnapshot], bool]
) -> AdaptorSnapshot:
    """The first snapshot of ``name`` (now or later) that satisfies ``wanted``."""
    async with asyncio.timeout(DEADLINE), contextlib.aclosing(supervisor.watch(name)) as watch:
        async for snapshot in watch:
            if wanted(snapshot):
                return snapshot
    raise AssertionError(f"the supervisor stopped before {name} got there")


async def wait_dead(pid: int) -> None:
    # Polled: the process table has no event to wait on.
    await wait_until_async(lambda: not is_alive(pid), f"process {pid} to be gone", timeout=DEADLINE)


@pytest.fixture
def marker(tmp_path: Path) -> Path:
    return tmp_path / "marker.txt"


def events(marker: Path) -> list[str]:
    return marker.read_text().split("\n")[:-1] if marker.exists() else []


def test_serves_reports_and_stops_gracefully(
    marker: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="ilp_host")

    async def go() -> None:
        supervisor = Supervisor(
            [
                spec(
                    env={
                        "FIXTURE_MARKER": str(marker),
                        "FIXTURE_BANNER": "starting up...",
                        "FIXTURE_STDOUT_LINE": "[ERROR] printed after the handshake",
                    }
                )
            ],
            engine_addr="unix:/nonexistent/engine.sock",
        )
        before = supervisor.snapshot("good")
        assert before.state == ProcessState.STOPPED
        assert [c.name for c in before.connections] == ["host"]
        assert supervisor.channel("good") is None
        async with supervisor:
            snapshot = supervisor.snapshot("good")
            assert snapshot.state == ProcessState.SERVING
            assert supervisor.serving("good")
            assert snapshot.pid is not None and is_alive(snapshot.pid)
            assert snapshot.contract_version == 1
            assert snapshot.attempts == 0 and snapshot.last_error == ""
            assert snapshot.info is not None and snapshot.info.name == "fixture-good"
            host = snapshot.connections[0]
            assert (host.name, host.kind, host.state) == (
                "host",
                "host-channel",
                Connectivity.READY,
            )
            # Probe said CONNECTING; then WatchEvents reports READY.
            ready = await until(
                supervisor,
                "good",
                lambda s: any(
                    c.name == "ledger" and c.state == Connectivity.READY for c in s.connections
                ),
            )
            assert [c.name for c in ready.connections] == ["host", "ledger"]
            channel = supervisor.channel("good")
            assert channel is not None
            info = await adaptor_pb2_grpc.LedgerAdaptorStub(channel).GetInfo(
                adaptor_pb2.GetInfoRequest(), timeout=10
            )
            assert info.asset_code == "XYZ"
            pid = snapshot.pid
        after = supervisor.snapshot("good")
        assert after.state == ProcessState.STOPPED
        assert after.last_error == ""  # it honoured the Shutdown request: no signal was needed
        assert after.pid is None
        assert after.connections[0].state == Connectivity.SHUTDOWN
        assert not is_alive(pid)
        assert events(marker) == [f"start {pid}", "shutdown-rpc", "stopped"]
        assert supervisor.channel("good") is None

    asyncio.run(go())
    adaptor_logs = [r for r in caplog.records if r.name == "ilp_host.adaptor.good"]
    serving = next(r for r in adaptor_logs if r.getMessage().startswith("fixture serving"))
    assert serving.levelno == logging.INFO
    assert serving.__dict__["stream"] == "stderr"
    assert "address" in serving.__dict__["fields"]
    warn = next(r for r in adaptor_logs if "go-plugin style" in r.getMessage())
    assert warn.levelno == logging.WARNING
    late = next(r for r in adaptor_logs if "printed after the handshake" in r.getMessage())
    assert late.levelno == logging.ERROR and late.__dict__["stream"] == "stdout"
    assert any("starting up..." in r.getMessage() for r in caplog.records)


def test_grpc_stdio_is_drained_into_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ilp_host.adaptor")
    line = '{"@level": "error", "@message": "via stdio", "k": 1}'

    async def go() -> None:
        async with Supervisor([spec(env={"FIXTURE_STDIO": line})]) as supervisor:
            await wait_until_async(  # log capture has no event to wait on
                lambda: len(_stdio_records(caplog)) >= 2, "both stdio records", timeout=DEADLINE
            )
            assert supervisor.serving("good")

    asyncio.run(go())
    records = _stdio_records(caplog)
    assert sorted(r.__dict__["stream"] for r in records) == ["stderr", "stdout"]
    assert all(r.levelno == logging.ERROR and r.__dict__["fields"] == {"k": 1} for r in records)


def _stdio_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.getMessage().startswith("via stdio")]


def test_environment_and_private_socket_directory(tmp_path: Path) -> None:
    """The adaptor sees the contract's variables and a 0700 socket directory of its own."""
    dump = tmp_path / "env.txt"
    script = tmp_path / "dump_env.py"
    script.write_text(
        "import os, runpy, sys, stat\n"
        f"d = os.environ['PLUGIN_UNIX_SOCKET_DIR']\n"
        f"with open({str(dump)!r}, 'w') as f:\n"
        "    for k in sorted(os.environ):\n"
        "        f.write(f'{k}={os.environ[k]}\\n')\n"
        "    f.write(f'MODE={stat.S_IMODE(os.stat(d).st_mode):o}\\n')\n"
        f"sys.argv = [{str(FIXTURES / 'good.py')!r}]\n"
        "runpy.run_path(sys.argv[0], run_name='__main__')\n"
    )

    async def go() -> None:
        specs = [spec(command=(sys.executable, str(script)), env={"LEDGER_URL": "x://y"})]
        async with Supervisor(specs, engine_addr="unix:/e.sock") as supervisor:
            assert supervisor.serving("good")

    asyncio.run(go())
    env = dict(line.split("=", 1) for line in dump.read_text().splitlines())
    assert env["ILP_SETTLEMENT_ADAPTOR"] == "5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d"
    assert env["PLUGIN_PROTOCOL_VERSIONS"] == "1"
    assert env["ILP_ADAPTOR_TRANSPORT"] == "unix"
    assert env["ILP_ADAPTOR_NAME"] == "good"
    assert env["ILP_HOST_ENGINE_ADDR"] == "unix:/e.sock"
    assert env["LEDGER_URL"] == "x://y"
    assert env["MODE"] == "700"
    assert "PLUGIN_CLIENT_CERT" not in env and "PLUGIN_MIN_PORT" not in env
    assert env["PATH"] == os.environ["PATH"]  # the host's own environment is passed on
    assert not Path(env["PLUGIN_UNIX_SOCKET_DIR"]).exists()  # removed at stop


def test_tcp_with_automatic_mutual_tls() -> None:
    async def go() -> None:
        async with Supervisor([spec(transport="tcp")]) as supervisor:
            snapshot = supervisor.snapshot("good")
            assert snapshot.state == ProcessState.SERVING, snapshot.last_error
            channel = supervisor.channel("good")
            assert channel is not None
            stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
            answer = await stub.Probe(adaptor_pb2.ProbeRequest(), timeout=10)
            assert answer.ready.value

    asyncio.run(go())


def test_crash_goes_through_backoff_and_serves_again() -> None:
    async def go() -> None:
        async with Supervisor([spec(env={"FIXTURE_CRASH_AFTER": "0.5"})]) as supervisor:
            first = supervisor.snapshot("good")
            assert first.state == ProcessState.SERVING
            seen: list[AdaptorSnapshot] = []

            def second_serving(snapshot: AdaptorSnapshot) -> bool:
                seen.append(snapshot)
                # pid None: the process is gone, though the runner may not have noticed yet.
                return snapshot.state == ProcessState.SERVING and snapshot.pid not in (
                    None,
                    first.pid,
                )

            again = await until(supervisor, "good", second_serving)
            states = [s.state for s in seen]
            crashed = next(s for s in seen if s.state == ProcessState.CRASHED)
            assert crashed.last_error.startswith("exited with code 3 while serving")
            assert "panic: fixture crashes on purpose" in crashed.last_error
            backoff = next(s for s in seen if s.state == ProcessState.BACKOFF)
            assert backoff.attempts == 1
            order = [
                ProcessState.CRASHED,
                ProcessState.BACKOFF,
                ProcessState.STARTING,
                ProcessState.HANDSHAKING,
                ProcessState.SERVING,
            ]
            positions = [states.index(state, states.index(ProcessState.CRASHED)) for state in order]
            assert positions == sorted(positions)
            assert again.attempts == 0 and again.last_error == ""
            assert first.pid is not None and not is_alive(first.pid)

    asyncio.run(go())


def test_get_info_unavailable_at_start_is_asked_again_not_a_crash(marker: Path) -> None:
    """An adaptor whose ledger has not answered yet cannot say its asset: UNAVAILABLE."""

    async def go() -> None:
        env = {"FIXTURE_GETINFO_UNAVAILABLE": "3", "FIXTURE_MARKER": str(marker)}
        async with Supervisor([spec(env=env)]) as supervisor:
            serving = supervisor.snapshot("good")
            assert serving.state == ProcessState.SERVING
            assert serving.info is not None and serving.info.asset_code == "XYZ"
            assert serving.attempts == 0 and serving.last_error == ""
        started = [e for e in events(marker) if e.startswith("start ")]
        assert len(started) == 1, "a single process: no restart"
        assert events(marker).count("getinfo-unavailable") == 3

    asyncio.run(go())


def test_failed_starts_count_attempts() -> None:
    exits = (sys.executable, str(FIXTURES / "exits_at_once.py"))

    async def go() -> None:
        specs = [spec(command=exits, backoff_initial=0.05, backoff_max=0.2)]
        async with Supervisor(specs) as supervisor:
            attempts: list[int] = []

            def third(snapshot: AdaptorSnapshot) -> bool:
                if snapshot.state == ProcessState.BACKOFF:
                    attempts.append(snapshot.attempts)
                return snapshot.attempts >= 3 and snapshot.state == ProcessState.BACKOFF

            await until(supervisor, "good", third)
            assert attempts[-3:] == [attempts[-3], attempts[-3] + 1, attempts[-3] + 2]
            assert (
                "exited with code 3 before the handshake" in supervisor.snapshot("good").last_error
            )
        stopped = supervisor.snapshot("good")
        assert stopped.state == ProcessState.STOPPED
        assert stopped.attempts == 0  # stopped on purpose: the count starts over
        assert "exited with code 3" in stopped.last_error

    asyncio.run(go())


def test_kill_9_of_a_serving_adaptor_restarts_it() -> None:
    async def go() -> None:
        async with Supervisor([spec()]) as supervisor:
            pid = supervisor.snapshot("good").pid
            assert pid is not None
            os.kill(pid, signal.SIGKILL)
            crashed = await until(supervisor, "good", lambda s: s.state == ProcessState.CRASHED)
            assert crashed.last_error.startswith("was killed by SIGKILL while serving")
            again = await until(
                supervisor,
                "good",
                lambda s: s.state == ProcessState.SERVING and s.pid not in (None, pid),
            )
            assert again.pid is not None and is_alive(again.pid)
            assert supervisor.channel("good") is not None

    asyncio.run(go())


def test_failing_health_checks_restart_it() -> None:
    async def go() -> None:
        specs = [
            spec(
                env={"FIXTURE_UNHEALTHY_ON_USR1": "1"},
                health_interval=0.2,
                health_timeout=5.0,
                failure_threshold=2,
            )
        ]
        async with Supervisor(specs) as supervisor:
            pid = supervisor.snapshot("good").pid
            assert pid is not None
            os.kill(pid, signal.SIGUSR1)
            crashed = await until(supervisor, "good", lambda s: s.state == ProcessState.CRASHED)
            assert crashed.last_error == (
                "2 health checks in a row failed: health service 'plugin' is NOT_SERVING"
            )
            await until(supervisor, "good", lambda s: s.state == ProcessState.SERVING)
            await wait_dead(pid)  # the unhealthy process was stopped, not left behind

    asyncio.run(go())


def test_stop_uses_sigterm_when_shutdown_is_ignored(marker: Path) -> None:
    async def go() -> None:
        env = {"FIXTURE_MARKER": str(marker), "FIXTURE_IGNORE_SHUTDOWN": "1"}
        async with Supervisor([spec(env=env, shutdown_grace=0.5)]) as supervisor:
            pid = supervisor.snapshot("good").pid
        stopped = supervisor.snapshot("good")
        assert stopped.state == ProcessState.STOPPED
        assert stopped.last_error == "did not stop after the Shutdown request: stopped by SIGTERM"
        assert pid is not None and not is_alive(pid)
        assert events(marker)[1:] == ["shutdown-rpc", "sigterm", "stopped"]

    asyncio.run(go())


def test_stop_kills_the_whole_group_when_sigterm_is_ignored(marker: Path, tmp_path: Path) -> None:
    child_file = tmp_path / "child.pid"

    async def go() -> None:
        env = {
            "FIXTURE_MARKER": str(marker),
            "FIXTURE_IGNORE_SHUTDOWN": "1",
            "FIXTURE_IGNORE_SIGTERM": "1",
            "FIXTURE_CHILD": str(child_file),
        }
        specs = [spec(env=env, shutdown_grace=0.3, term_grace=0.5)]
        async with Supervisor(specs) as supervisor:
            pid = supervisor.snapshot("good").pid
            child = int(child_file.read_text())
            assert pid is not None and is_alive(pid) and is_alive(child)
        stopped = supervisor.snapshot("good")
        assert stopped.state == ProcessState.STOPPED
        assert stopped.last_error == "did not stop after the Shutdown request: killed with SIGKILL"
        assert not is_alive(pid)
        assert not is_alive(child)  # the grandchild of the host went with the group
        assert events(marker)[1:] == ["shutdown-rpc"]

    asyncio.run(go())


def test_restart_serves_a_new_process(marker: Path) -> None:
    async def go() -> None:
        async with Supervisor([spec(env={"FIXTURE_MARKER": str(marker)})]) as supervisor:
            old = supervisor.snapshot("good")
            states: list[ProcessState] = []
            watching = asyncio.Event()

            async def record() -> None:
                async for snapshot in supervisor.watch("good"):
                    watching.set()
                    if not states or states[-1] != snapshot.state:  # other changes too
                        states.append(snapshot.state)

            recorder = asyncio.create_task(record())
            await watching.wait()
            new = await supervisor.restart("good")
            assert new.state == ProcessState.SERVING
            assert new.pid not in (None, old.pid)
            assert old.pid is not None and not is_alive(old.pid)
        await recorder  # the watch ended with the supervisor
        assert states[:1] == [ProcessState.SERVING]
        assert states[1:6] == [
            ProcessState.STOPPING,
            ProcessState.STOPPED,
            ProcessState.STARTING,
            ProcessState.HANDSHAKING,
            ProcessState.SERVING,
        ]
        assert states[-1] == ProcessState.STOPPED
        assert events(marker).count("shutdown-rpc") == 2

    asyncio.run(go())


def test_restart_cuts_a_long_backoff_short() -> None:
    exits = (sys.executable, str(FIXTURES / "exits_at_once.py"))

    async def go() -> None:
        specs = [spec(command=exits, backoff_initial=300, backoff_max=300)]
        async with Supervisor(specs) as supervisor:
            await until(supervisor, "good", lambda s: s.state == ProcessState.BACKOFF)
            again = await supervisor.restart("good")  # would otherwise wait 300 s
            assert again.state == ProcessState.CRASHED
            assert again.attempts == 0  # the backoff was reset
            assert "exited with code 3" in again.last_error
            assert again.pid is None

    asyncio.run(go())


def test_api_errors() -> None:
    async def go() -> None:
        supervisor = Supervisor([spec()])
        for call in (supervisor.snapshot, supervisor.serving, supervisor.channel, supervisor.watch):
            with pytest.raises(KeyError):
                call("nope")  # type: ignore[operator]
        with pytest.raises(KeyError):
            await supervisor.restart("nope")
        with pytest.raises(SupervisorStopped):
            await supervisor.restart("good")  # not started
        await supervisor.start()
        with pytest.raises(RuntimeError):
            await supervisor.start()
        await supervisor.stop()
        await supervisor.stop()  # idempotent
        with pytest.raises(SupervisorStopped):
            await supervisor.restart("good")
        with pytest.raises(SupervisorStopped):
            await supervisor.start()  # not reusable
        # A watch after the stop gives the final state and ends.
        assert [s.state async for s in supervisor.watch()] == [ProcessState.STOPPED]
        with pytest.raises(ValueError, match="unique"):
            Supervisor([spec(), spec()])

    asyncio.run(go())


def test_incoming_settlements_are_followed_beside_the_supervisor_and_retried() -> None:
    async def go() -> None:
        seen: list[tuple[str, str, str]] = []
        failed_once = asyncio.Event()
        three = asyncio.Event()

        async def credit(adaptor: str, settlement: adaptor_pb2.IncomingSettlement) -> None:
            seen.append((adaptor, settlement.settlement_id, settlement.amount.value))
            if len(seen) >= 3:
                three.set()
            if not failed_once.is_set():
                failed_once.set()
                raise RuntimeError("store unavailable")  # tried again, before the next one

        env = {"FIXTURE_INCOMING": "s1:alice:500,s2:bob:7"}
        async with Supervisor([spec(env=env)]) as supervisor:
            channel = supervisor.channel("good")
            assert channel is not None
            following = asyncio.create_task(follow_incoming(channel, "good", credit))
            try:
                async with asyncio.timeout(DEADLINE):
                    await three.wait()
            finally:
                following.cancel()
                await asyncio.gather(following, return_exceptions=True)
            assert supervisor.serving("good")
        assert seen[:3] == [("good", "s1", "500"), ("good", "s1", "500"), ("good", "s2", "7")]

    asyncio.run(go())


def test_several_adaptors_in_configuration_order() -> None:
    hangs = (sys.executable, str(FIXTURES / "hangs.py"))

    async def go() -> None:
        specs = [
            spec("b"),
            spec("a", command=hangs, start_timeout=1.0, backoff_initial=60, backoff_max=60),
        ]
        async with Supervisor(specs) as supervisor:
            names = [s.name for s in supervisor.snapshots()]
            assert names == ["b", "a"]
            assert supervisor.serving("b") and not supervisor.serving("a")
            assert [s.name async for s in _take(supervisor.watch(), 2)] == ["b", "a"]

    asyncio.run(go())


async def _take(
    iterator: AsyncIterator[AdaptorSnapshot], count: int
) -> AsyncIterator[AdaptorSnapshot]:
    async with contextlib.aclosing(iterator) as items:
        async for item in items:
            yield item
            count -= 1
            if count == 0:
                return


def test_memory_python_adaptor_under_the_supervisor() -> None:
    async def go() -> None:
        specs = [
            spec("memory", command=(sys.executable, str(MEMORY))),
            spec("memory-tcp", command=(sys.executable, str(MEMORY)), transport="tcp"),
        ]
        async with Supervisor(specs) as supervisor:
            for name in ("memory", "memory-tcp"):
                snapshot = supervisor.snapshot(name)
                assert snapshot.state == ProcessState.SERVING, snapshot.last_error
                assert snapshot.info is not None and snapshot.info.name == "memory-python"
                channel = supervisor.channel(name)
                assert channel is not None
                balance = await adaptor_pb2_grpc.LedgerAdaptorStub(channel).GetBalance(
                    adaptor_pb2.GetBalanceRequest(), timeout=10
                )
                assert balance.balance.value == "100000000"
                error = await failure(
                    adaptor_pb2_grpc.LedgerAdaptorStub(channel).SetupAccount(
                        adaptor_pb2.SetupAccountRequest(account_id=""), timeout=10
                    )
                )
                assert error.code == grpc.StatusCode.INVALID_ARGUMENT
            pids = [s.pid for s in supervisor.snapshots()]
        for snapshot in supervisor.snapshots():
            assert snapshot.state == ProcessState.STOPPED
            assert snapshot.last_error == ""  # the SDK honours Shutdown
        assert all(pid is not None and not is_alive(pid) for pid in pids)

    asyncio.run(go())


@pytest.fixture
def socket_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="ilp"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


HOST_SCRIPT = """
import asyncio, sys
from pathlib import Path
from host.supervisor import AdaptorSpec, Supervisor

async def main() -> None:
    spec = AdaptorSpec("good", (sys.executable, sys.argv[1]))
    supervisor = Supervisor([spec], socket_root=Path(sys.argv[2]))
    await supervisor.start()
    print(supervisor.snapshot("good").pid, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


def test_a_host_killed_with_sigkill_leaves_no_adaptor(socket_root: Path) -> None:
    async def go() -> None:
        host = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            HOST_SCRIPT,
            GOOD[1],
            str(socket_root),
            cwd=REPO,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert host.stdout is not None
            async with asyncio.timeout(DEADLINE):
                line = await host.stdout.readline()
            pid = int(line)
            assert is_alive(pid)
        finally:
            host.kill()
            await host.wait()
        await wait_dead(pid)  # the parent-death signal did it: nobody else was told

    asyncio.run(go())
    assert stat.S_IMODE(socket_root.stat().st_mode) == 0o700


def test_stop_during_a_slow_start_interrupts_it() -> None:
    hangs = (sys.executable, str(FIXTURES / "hangs.py"))

    async def go() -> None:
        supervisor = Supervisor([spec(command=hangs, start_timeout=300)])
        starting = asyncio.create_task(supervisor.start())
        snapshot = await until(supervisor, "good", lambda s: s.pid is not None)
        assert snapshot.state == ProcessState.STARTING
        await supervisor.stop()
        await starting  # start() returns: the first attempt ended with the stop
        stopped = supervisor.snapshot("good")
        assert stopped.state == ProcessState.STOPPED
        assert snapshot.pid is not None and not is_alive(snapshot.pid)

    asyncio.run(go())


def test_cancellation_is_a_stop() -> None:
    async def go() -> None:
        supervisor = Supervisor([spec()])
        entered = asyncio.Event()

        async def host() -> None:
            async with supervisor:
                entered.set()
                await asyncio.Event().wait()

        task = asyncio.create_task(host())
        await entered.wait()
        pid = supervisor.snapshot("good").pid
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert supervisor.snapshot("good").state == ProcessState.STOPPED
        assert pid is not None and not is_alive(pid)

    asyncio.run(go())
