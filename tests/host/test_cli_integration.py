"""`ilp-host run`, `status` and `health` for real: a host subprocess running the memory adaptor.

One host (module fixture) serves the admin API on its unix socket and on TLS TCP with a
token; the tests drive it through the CLI (subprocesses) and through grpc.aio clients. Stopping
(SIGTERM, a second signal) is tested on hosts of their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from queue import Empty, Queue
from typing import IO, Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from sdk.mtls import generate_certificate
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[2]
MEMORY_ADAPTOR = REPO / "adaptors" / "memory-python" / "adaptor.py"
#: The supervisor's hand-written test adaptor, which can ignore Shutdown and SIGTERM.
STUBBORN_ADAPTOR = REPO / "tests" / "fixtures" / "adaptors" / "good.py"
DEADLINE = 60.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not MEMORY_ADAPTOR.exists(), reason="the memory adaptor is not written yet"),
]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead too; it only waits for its parent to reap it.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] != "Z"
    except (FileNotFoundError, IndexError):
        return not Path("/proc").exists()


def ilp_host(*args: str, timeout: float = DEADLINE) -> subprocess.CompletedProcess[str]:
    """Run the CLI to completion."""
    return subprocess.run(
        [sys.executable, "-m", "host.cli", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


class Host:
    """An `ilp-host run` subprocess with its config in a short private directory."""

    def __init__(
        self,
        extra_admin: str = "",
        command: tuple[str, ...] = ("python", str(MEMORY_ADAPTOR)),
        env: str = '{ ILP_ADAPTOR_ASSET_CODE = "EUR" }',
        timeouts: str = "",
    ) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="ilp"))
        self.config = self.dir / "host.toml"
        self.socket = self.dir / "state" / "admin.sock"
        self.config.write_text(
            f"""
[host]
state_dir = "state"
[admin]
{extra_admin}
[[adaptor]]
name = "memory"
command = {json.dumps(list(command))}
env = {env}
[adaptor.health]
interval = 0.5
timeout = 5.0
failure_threshold = 2
[adaptor.restart]
initial = 0.1
max = 1.0
[adaptor.timeouts]
start = 30.0
{timeouts}
""",
            encoding="utf-8",
        )
        self.stderr_path = self.dir / "stderr.log"
        self._stderr: IO[bytes] = self.stderr_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "run", "-c", str(self.config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=self._stderr,
        )

    @property
    def stderr(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def check_running(self) -> None:
        if self.process.poll() is not None:
            raise AssertionError(f"ilp-host run exited {self.process.returncode}:\n{self.stderr}")

    def health(self, service: str = "") -> int:
        self.check_running()
        if not self.socket.exists():
            return -1
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(service=service), timeout=10
                )
            except grpc.RpcError:
                return -1
        return int(reply.status)

    def wait_serving(self, service: str = "") -> None:
        wait_until(lambda: self.health(service) == SERVING, f"health {service!r} SERVING")

    def adaptor(self) -> admin_pb2.Adaptor:
        with grpc.insecure_channel(f"unix:{self.socket}") as channel:
            stub = admin_pb2_grpc.HostAdminStub(channel)
            reply = stub.GetAdaptor(admin_pb2.GetAdaptorRequest(name="memory"), timeout=10)
        return reply.adaptor

    def stop(self, signum: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=DEADLINE)
        finally:
            self._stderr.close()

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self._stderr.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[Host, dict[str, str]]]:
    """A serving host with a TLS TCP admin listener too; yields it and the TCP client files."""
    files_dir = Path(tempfile.mkdtemp(prefix="ilp"))
    certificate = generate_certificate()
    (files_dir / "cert.pem").write_bytes(certificate.cert_pem)
    (files_dir / "key.pem").write_bytes(certificate.key_pem)
    (files_dir / "token").write_text("s3cret-token\n")
    for secret in ("key.pem", "token"):
        (files_dir / secret).chmod(0o600)
    port = free_port()
    tcp = {
        "address": f"127.0.0.1:{port}",
        "ca": str(files_dir / "cert.pem"),
        "token": str(files_dir / "token"),
    }
    extra_admin = (
        f'tcp = "{tcp["address"]}"\n'
        f'tls_cert = "{files_dir / "cert.pem"}"\n'
        f'tls_key = "{files_dir / "key.pem"}"\n'
        f'token_file = "{files_dir / "token"}"\n'
    )
    running = Host(extra_admin=extra_admin)
    try:
        running.wait_serving()
        yield running, tcp
        pids = {running.adaptor().pid}
        assert running.stop() == 0, running.stderr
    finally:
        running.close()
        shutil.rmtree(files_dir, ignore_errors=True)
    wait_until(lambda: not any(alive(pid) for pid in pids), "the adaptor to be gone")


# -- status and health through the CLI --------------------------------------------------------


def test_status_table(host: tuple[Host, dict[str, str]]) -> None:
    running, _ = host
    running.wait_serving()
    result = ilp_host("status", "-c", str(running.config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "NAME",
        "KIND",
        "STATE",
        "SINCE",
        "PID",
        "ATTEMPTS",
        "LAST",
        "ERROR",
    ]
    row = lines[1].split()
    assert row[:3] == ["memory", "adaptor", "SERVING"]
    assert int(row[4]) == running.adaptor().pid
    connections = {line.split()[0]: line.split() for line in lines[2:]}
    assert connections["host"][1:3] == ["host-channel", "READY"]


def test_status_json(host: tuple[Host, dict[str, str]]) -> None:
    running, _ = host
    running.wait_serving()
    result = ilp_host("status", "-c", str(running.config), "--json")
    assert result.returncode == 0, result.stderr
    [adaptor] = json.loads(result.stdout)["adaptors"]
    assert adaptor["name"] == "memory"
    assert adaptor["state"] == "PROCESS_STATE_SERVING"
    assert adaptor["pid"] == running.adaptor().pid
    # The .proto's field names, as grpcurl prints them (not protobuf's camelCase JSON).
    assert adaptor["info"]["asset_code"] == "EUR"
    assert "contract_version" in adaptor and "contractVersion" not in adaptor
    assert {c["name"] for c in adaptor["connections"]} >= {"host"}


def test_a_reader_that_closes_the_pipe_early_gets_no_traceback(
    host: tuple[Host, dict[str, str]],
) -> None:
    running, _ = host
    running.wait_serving()
    for args in (("status",), ("status", "--json")):
        done = subprocess.run(
            f"{sys.executable} -m host.cli {' '.join(args)} -c {running.config} | head -1",
            shell=True,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=DEADLINE,
            check=False,
        )
        assert done.returncode == 0
        assert done.stdout.strip(), "head printed the first line"
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr, done.stderr


def test_health_exit_codes(host: tuple[Host, dict[str, str]]) -> None:
    running, _ = host
    running.wait_serving()
    overall = ilp_host("health", "-c", str(running.config))
    assert (overall.returncode, overall.stdout.strip()) == (0, "host: SERVING")
    named = ilp_host("health", "memory", "--admin", f"unix:{running.socket}")
    assert (named.returncode, named.stdout.strip()) == (0, "memory: SERVING")
    unknown = ilp_host("health", "nope", "-c", str(running.config))
    assert unknown.returncode == 4
    assert "nope: unknown service" in unknown.stderr


def test_tcp_admin_needs_the_token(host: tuple[Host, dict[str, str]]) -> None:
    running, tcp = host
    running.wait_serving()
    base = ("--admin", tcp["address"], "--ca", tcp["ca"], "--server-name", "localhost")
    refused = ilp_host("status", *base)
    assert refused.returncode == 1
    assert "UNAUTHENTICATED" in refused.stderr or "bearer token" in refused.stderr
    allowed = ilp_host("status", *base, "--token-file", tcp["token"], "--json")
    assert allowed.returncode == 0, allowed.stderr
    assert json.loads(allowed.stdout)["adaptors"][0]["name"] == "memory"

    ca = Path(tcp["ca"]).read_bytes()

    async def without_token() -> grpc.StatusCode:
        credentials = grpc.ssl_channel_credentials(ca)
        options = [("grpc.ssl_target_name_override", "localhost")]
        async with grpc.aio.secure_channel(tcp["address"], credentials, options) as channel:
            stub = admin_pb2_grpc.HostAdminStub(channel)
            try:
                await stub.ListAdaptors(admin_pb2.ListAdaptorsRequest(), timeout=10)
            except grpc.aio.AioRpcError as exc:
                return exc.code()
        return grpc.StatusCode.OK

    assert asyncio.run(without_token()) == grpc.StatusCode.UNAUTHENTICATED


# -- crash, restart and the watches ------------------------------------------------------------


async def _read(stream: Any, what: str) -> Any:
    message = await asyncio.wait_for(stream.read(), DEADLINE)
    if message == grpc.aio.EOF:
        raise AssertionError(f"stream ended while waiting for {what}")
    return message


def test_kill_restart_and_health_watch(host: tuple[Host, dict[str, str]]) -> None:
    running, _ = host
    running.wait_serving("memory")

    async def test() -> None:
        async with grpc.aio.insecure_channel(f"unix:{running.socket}") as channel:
            admin = admin_pb2_grpc.HostAdminStub(channel)
            health = health_pb2_grpc.HealthStub(channel)
            watch = health.Watch(health_pb2.HealthCheckRequest(service="memory"))
            assert (await _read(watch, "SERVING")).status == SERVING
            before = (await admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="memory"))).adaptor
            os.kill(before.pid, signal.SIGKILL)
            assert (await _read(watch, "NOT_SERVING after kill -9")).status == NOT_SERVING
            assert (await _read(watch, "SERVING after the restart")).status == SERVING
            after = (await admin.GetAdaptor(admin_pb2.GetAdaptorRequest(name="memory"))).adaptor
            assert after.pid != before.pid
            assert after.state == admin_pb2.PROCESS_STATE_SERVING
            watch.cancel()

    asyncio.run(test())


def test_restart_adaptor_rpc_and_watch_adaptors(host: tuple[Host, dict[str, str]]) -> None:
    running, _ = host
    running.wait_serving("memory")

    async def test() -> None:
        async with grpc.aio.insecure_channel(f"unix:{running.socket}") as channel:
            admin = admin_pb2_grpc.HostAdminStub(channel)
            watch = admin.WatchAdaptors(admin_pb2.WatchAdaptorsRequest(name="memory"))
            current = (await _read(watch, "the current state")).adaptor
            assert current.state == admin_pb2.PROCESS_STATE_SERVING
            reply = await admin.RestartAdaptor(
                admin_pb2.RestartAdaptorRequest(name="memory"), timeout=DEADLINE
            )
            assert reply.adaptor.state == admin_pb2.PROCESS_STATE_SERVING, (
                f"{reply}\n{running.stderr}"
            )
            assert reply.adaptor.pid not in (0, current.pid)
            seen = []
            while not seen or seen[-1] != (admin_pb2.PROCESS_STATE_SERVING, reply.adaptor.pid):
                change = (await _read(watch, "the restart's changes")).adaptor
                seen.append((change.state, change.pid))
            assert (admin_pb2.PROCESS_STATE_STOPPING, current.pid) in seen
            watch.cancel()

    asyncio.run(test())
    assert alive(running.adaptor().pid)  # the new process is the live one


def _lines(stream: IO[str]) -> Queue[str]:
    lines: Queue[str] = Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: Queue[str], containing: str) -> str:
    end = time.monotonic() + DEADLINE
    while time.monotonic() < end:
        try:
            line = lines.get(timeout=max(0.0, end - time.monotonic()))
        except Empty:
            break
        if containing in line:
            return line
    raise AssertionError(f"no output line containing {containing!r}")


def test_status_watch_prints_changes(host: tuple[Host, dict[str, str]]) -> None:
    """...and stops on SIGINT even when started with SIGINT ignored, as a script's background
    job is (it ignored the signal and waited for ever)."""
    running, _ = host
    running.wait_serving("memory")
    command = [sys.executable, "-m", "host.cli", "status", "--watch", "-c", str(running.config)]
    watcher = subprocess.Popen(
        ["bash", "-c", 'trap "" INT; exec "$@"', "watch", *command],
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert watcher.stdout is not None
        lines = _lines(watcher.stdout)
        assert _next_line(lines, "memory").split()[:3] == ["memory", "adaptor", "SERVING"]
        os.kill(running.adaptor().pid, signal.SIGKILL)
        assert "memory: SERVING -> " in _next_line(lines, "memory: SERVING -> ")
        _next_line(lines, "-> SERVING")
        watcher.send_signal(signal.SIGINT)
        assert watcher.wait(timeout=DEADLINE) == 0
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
        for stream in (watcher.stdout, watcher.stderr):
            if stream is not None:
                stream.close()


# -- failures and stopping ---------------------------------------------------------------------


def test_host_not_running() -> None:
    directory = Path(tempfile.mkdtemp(prefix="ilp"))
    try:
        config = directory / "host.toml"
        config.write_text('[host]\nstate_dir = "state"\n')
        for command, status in (("status", 1), ("health", 3)):
            result = ilp_host(command, "-c", str(config))
            assert result.returncode == status
            assert f"no admin socket at {directory / 'state' / 'admin.sock'}" in result.stderr
            assert "is the host running (`ilp-host run`, or `ilp-host connector`" in result.stderr
        # A socket file left behind by a dead host: still a clear message.
        (directory / "state").mkdir()
        with socket.socket(socket.AF_UNIX) as stale:
            stale.bind(str(directory / "state" / "admin.sock"))
        result = ilp_host("health", "-c", str(config))
        assert result.returncode == 3  # no answer: not the NOT_SERVING of a running host (4)
        assert "cannot reach the host's admin API" in result.stderr
    finally:
        shutil.rmtree(directory)


def test_bad_config_exits_2(tmp_path: Path) -> None:
    config = tmp_path / "host.toml"
    config.write_text(
        '[[adaptor]]\nname = "m"\ncommand = ["x"]\n[adaptor.health]\ninterval = "fast"\n'
    )
    result = ilp_host("run", "-c", str(config))
    assert result.returncode == 2
    assert f'{config}: adaptor[0].health.interval: must be a positive number, got "fast"' in (
        result.stderr
    )
    assert ilp_host("run", "-c", str(tmp_path / "missing.toml")).returncode == 2
    assert ilp_host("status", "--no-such-flag").returncode == 2


def test_run_refuses_a_connector_database_at_start(tmp_path: Path) -> None:
    """`ilp-host run` keeps the packets in the engine's store: a [connector] database is the
    split host's, and refused in one line before anything starts (it was ignored)."""
    config = tmp_path / "host.toml"
    config.write_text(
        '[[adaptor]]\nname = "m"\ncommand = ["x"]\n'
        '[[account]]\nid = "bob"\nadaptor = "m"\nasset_code = "USD"\nasset_scale = 6\n'
        '[connector]\naddress = "test.alice"\nport = 0\ndatabase = "books.db"\n'
        '[[peer]]\nid = "bob"\nurl = "http://127.0.0.1:9/"\naddress = "test.bob"\n'
        'incoming_token = "token-from-bob"\noutgoing_token = "token-to-bob-1"\n'
    )
    result = ilp_host("run", "-c", str(config))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"ilp-host: {config}: connector.database: `ilp-host run` keeps the packets' books in "
        f"the engine's store ([engine] database, {tmp_path / 'var' / 'engine.db'}), not in "
        "'books.db': remove connector.database, or run the split host (`ilp-host connector` "
        "+ `ilp-host engine`)"
    ]
    assert not (tmp_path / "var").exists(), "nothing started"


def test_sigterm_stops_the_host_and_its_adaptor() -> None:
    running = Host()
    watcher: subprocess.Popen[str] | None = None
    try:
        running.wait_serving()
        pid = running.adaptor().pid
        assert alive(pid)
        watcher = subprocess.Popen(
            [sys.executable, "-m", "host.cli", "status", "--watch", "-c", str(running.config)],
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert watcher.stdout is not None
        _next_line(_lines(watcher.stdout), "memory")
        assert running.stop(signal.SIGTERM) == 0, running.stderr
        # The watch ends with the host, and says so with its exit status.
        assert watcher.wait(timeout=DEADLINE) == 1
        assert watcher.stderr is not None
        assert "the host closed the watch" in watcher.stderr.read()
        assert not running.socket.exists()
        wait_until(lambda: not alive(pid), "the adaptor to exit")
        assert "stopping the adaptors" in running.stderr
    finally:
        if watcher is not None:
            if watcher.poll() is None:
                watcher.kill()
            watcher.wait()
            for stream in (watcher.stdout, watcher.stderr):
                if stream is not None:
                    stream.close()
        running.close()


def test_second_host_on_the_same_state_dir_is_refused() -> None:
    running = Host()
    try:
        running.wait_serving()
        result = ilp_host("run", "-c", str(running.config))
        assert result.returncode == 1
        assert "another ilp-host" in result.stderr
        running.wait_serving()  # the first one is unaffected
        assert running.stop(signal.SIGINT) == 0, running.stderr
    finally:
        running.close()


@pytest.mark.skipif(not STUBBORN_ADAPTOR.exists(), reason="no fixture adaptor")
def test_second_signal_exits_at_once_and_the_adaptor_dies_with_the_host() -> None:
    # An adaptor that ignores both Shutdown and SIGTERM, with graces far beyond the test's
    # deadline: only the second signal can end the host in time.
    running = Host(
        command=("python", str(STUBBORN_ADAPTOR)),
        env='{ FIXTURE_IGNORE_SHUTDOWN = "1", FIXTURE_IGNORE_SIGTERM = "1" }',
        timeouts="shutdown_grace = 300.0\nterm_grace = 300.0",
    )
    try:
        running.wait_serving()
        pid = running.adaptor().pid
        running.process.send_signal(signal.SIGTERM)
        wait_until(
            lambda: running.adaptor().state == admin_pb2.PROCESS_STATE_STOPPING,
            "the graceful stop to begin",
        )
        assert running.health() == NOT_SERVING  # the admin API stays up while stopping
        assert running.stop(signal.SIGTERM) == 1, running.stderr
        assert "received again: exiting now" in running.stderr
        assert not running.socket.exists()
        wait_until(lambda: not alive(pid), "the adaptor to die with the host")
    finally:
        running.close()
