"""sdk.serve's process contract, with real adaptor subprocesses: stop paths, refusals, stdio,
TCP with automatic mutual TLS, and exit when the parent dies."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
import tempfile
from pathlib import Path
from typing import IO

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from grpc_health.v1 import health_pb2, health_pb2_grpc

from sdk import contract, mtls
from sdk.handshake import parse
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.plugin import grpc_controller_pb2
from sdk.testing import adaptor_environ, run_adaptor
from tests.grpc_status import failure
from tests.polling import wait_until_async

ROOT = Path(__file__).resolve().parents[2]
MEMORY = [sys.executable, str(ROOT / "adaptors" / "memory-python" / "adaptor.py")]
HOOKS = [sys.executable, str(Path(__file__).with_name("hooks_adaptor.py"))]
DEADLINE = 60.0


def log_messages(stderr: bytes) -> list[str]:
    return [json.loads(line)["@message"] for line in stderr.decode().splitlines()]


async def finished(argv: list[str], env: dict[str, str]) -> tuple[int, bytes, bytes]:
    """Run a program that is expected to exit on its own: status, stdout, stderr."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(DEADLINE):
        out, err = await process.communicate()
    return await process.wait(), out, err


def test_shutdown_rpc_stops_gracefully_with_exit_0() -> None:
    async def main() -> None:
        async with asyncio.timeout(DEADLINE), run_adaptor(HOOKS) as adaptor:
            await adaptor.client.controller.Shutdown(grpc_controller_pb2.Empty())
            assert await adaptor.wait() == 0
        messages = log_messages(bytes(adaptor.stderr))
        assert messages.index("start hook ran") < messages.index("adaptor serving")
        assert messages[-3:] == ["adaptor stopping", "stop hook ran", "adaptor stopped"]

    asyncio.run(main())


def test_sigterm_stops_gracefully_and_sigint_is_ignored() -> None:
    async def main() -> None:
        async with asyncio.timeout(DEADLINE), run_adaptor(HOOKS) as adaptor:
            adaptor.process.send_signal(signal.SIGINT)
            await adaptor.wait_for_output("ignoring SIGINT", stream="stderr")
            reply = await adaptor.client.health.Check(
                health_pb2.HealthCheckRequest(service=contract.HEALTH_SERVICE)
            )
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            assert adaptor.process.returncode is None

            adaptor.process.send_signal(signal.SIGTERM)
            assert await adaptor.wait() == 0
        stderr = [json.loads(line) for line in adaptor.stderr.decode().splitlines()]
        stopping = next(e for e in stderr if e["@message"] == "adaptor stopping")
        assert stopping["reason"] == "SIGTERM"
        assert "stop hook ran" in [e["@message"] for e in stderr]

    asyncio.run(main())


def test_started_by_hand_exits_1_with_an_explanation() -> None:
    env = adaptor_environ()
    del env[contract.MAGIC_COOKIE_KEY]
    status, out, err = asyncio.run(finished(MEMORY, env))
    assert status == 1
    assert out == b""
    text = err.decode()
    assert "ledger adaptor for the Interledger settlement host" in text
    assert "ilp-host run" in text

    env[contract.MAGIC_COOKIE_KEY] = "wrong"
    status, out, _ = asyncio.run(finished(MEMORY, env))
    assert (status, out) == (1, b"")


def test_no_common_contract_version_exits_1_naming_both_lists() -> None:
    env = adaptor_environ({contract.ENV_PROTOCOL_VERSIONS: "7,8"})
    status, out, err = asyncio.run(finished(MEMORY, env))
    assert (status, out) == (1, b"")
    assert "[7, 8]" in err.decode() and "[1]" in err.decode()


def test_highest_common_version_is_chosen() -> None:
    async def main() -> None:
        env = {contract.ENV_PROTOCOL_VERSIONS: "1,2,3", "HOOKS_VERSIONS": "1,2"}
        process = await asyncio.create_subprocess_exec(
            *HOOKS, env=adaptor_environ(env), stdout=asyncio.subprocess.PIPE
        )
        assert process.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = (await process.stdout.readline()).decode()
            assert parse(line, [1, 2, 3]).app_version == 2
            process.terminate()
            await process.communicate()
            assert await process.wait() == 0

    asyncio.run(main())


def test_failing_start_hook_exits_1_before_the_handshake() -> None:
    status, out, err = asyncio.run(finished(HOOKS, adaptor_environ({"HOOKS_FAIL_START": "1"})))
    assert (status, out) == (1, b"")
    failure = json.loads(err.decode().splitlines()[-1])
    assert failure["@level"] == "error"
    assert "ledger unreachable" in failure["error"]

    status, out, err = asyncio.run(finished(HOOKS, adaptor_environ({"HOOKS_BAD_CONFIG": "1"})))
    assert (status, out) == (1, b"")
    assert "HOOKS_BAD_CONFIG is set" in err.decode()


def test_stdio_stream_carries_what_the_adaptor_prints() -> None:
    async def main() -> None:
        async with asyncio.timeout(DEADLINE), run_adaptor(HOOKS) as adaptor:
            stub = adaptor.client.adaptor
            await stub.Probe(adaptor_pb2.ProbeRequest())
            await stub.Probe(adaptor_pb2.ProbeRequest())
            await adaptor.wait_for_output("probe 2")
        assert adaptor.stdio.decode() == "printed during start\nprobe 1\nprobe 2\n"
        # The real stdout carried the handshake line and nothing else.
        assert adaptor.stdout == b""

    asyncio.run(main())


def test_a_stop_with_the_stdio_stream_open_logs_no_error() -> None:
    """Stopping is not an error. grpc ends each RPC's own tasks a few loop turns after its
    server stopped (a StreamStdio stream the stop ended, say), and logs their cancellation as
    an ERROR with a CancelledError traceback: the process lets what still runs end by itself
    before its loop closes. HOOKS_LATE_TASK leaves such a task on purpose, so that the test
    does not depend on the timing of grpc's; a grace of 0 cancels the open stream at once."""
    env = {"HOOKS_GRACE": "0", "HOOKS_LATE_TASK": "1"}

    async def main() -> list[dict[str, object]]:
        async with asyncio.timeout(DEADLINE), run_adaptor(HOOKS, env=env) as adaptor:
            await adaptor.client.adaptor.Probe(adaptor_pb2.ProbeRequest())
            await adaptor.wait_for_output("probe 1")  # the stream is open and drained
            await adaptor.client.controller.Shutdown(grpc_controller_pb2.Empty())
            assert await adaptor.wait() == 0
        return [json.loads(line) for line in adaptor.stderr.decode().splitlines()]

    for _ in range(3):  # grpc's tasks' timing varies; each round is a fresh process
        lines = asyncio.run(main())
        messages = [line["@message"] for line in lines]
        assert messages[-3:] == ["stop hook ran", "adaptor stopped", "late task ended"]
        assert [line for line in lines if line["@level"] == "error"] == []


def free_port_range(width: int = 20) -> tuple[int, int]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    low = min(port, 65535 - width)
    return low, low + width


def test_tcp_with_automatic_mutual_tls() -> None:
    low, high = free_port_range()
    env = {contract.ENV_MIN_PORT: str(low), contract.ENV_MAX_PORT: str(high)}

    async def refused(target: str, credentials: grpc.ChannelCredentials | None) -> None:
        if credentials is None:
            channel = grpc.aio.insecure_channel(target)
        else:
            channel = grpc.aio.secure_channel(target, credentials, options=mtls.CHANNEL_OPTIONS)
        async with channel:
            caught = await failure(
                health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=10
                )
            )
            assert caught.code == grpc.StatusCode.UNAVAILABLE

    async def main() -> None:
        async with (
            asyncio.timeout(DEADLINE),
            run_adaptor(MEMORY, env=env, transport="tcp", use_mtls=True) as adaptor,
        ):
            hs = adaptor.handshake
            assert hs.network == "tcp"
            host, port = hs.address.rsplit(":", 1)
            assert host == "127.0.0.1" and low <= int(port) <= high
            assert hs.server_cert_der is not None
            cert = x509.load_der_x509_certificate(hs.server_cert_der)
            assert cert.subject.rfc4514_string() == "CN=localhost"
            assert isinstance(cert.public_key(), ec.EllipticCurvePublicKey)

            info = await adaptor.client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())
            assert info.name == "memory-python"

            server_pem = mtls.der_to_pem(hs.server_cert_der)
            # No client certificate, an untrusted one, or no TLS at all: all refused.
            await refused(hs.address, grpc.ssl_channel_credentials(root_certificates=server_pem))
            stranger = mtls.generate_certificate()
            await refused(hs.address, mtls.channel_credentials(stranger, server_pem))
            await refused(hs.address, None)
        assert adaptor.process.returncode == 0

    asyncio.run(main())


def test_tcp_without_tls_and_unix_with_tls() -> None:
    async def main() -> None:
        async with asyncio.timeout(DEADLINE):
            async with run_adaptor(MEMORY, transport="tcp") as adaptor:
                assert adaptor.handshake.server_cert_der is None
                await adaptor.client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())
            async with run_adaptor(MEMORY, use_mtls=True) as adaptor:
                assert adaptor.handshake.network == "unix"
                assert adaptor.handshake.server_cert_der is not None
                await adaptor.client.adaptor.GetInfo(adaptor_pb2.GetInfoRequest())

    asyncio.run(main())


def test_socket_dir_from_the_host_and_refusal_of_a_too_deep_one() -> None:
    short = tempfile.mkdtemp(prefix="ilp")
    deep = os.path.join(short, "d" * 90)
    os.mkdir(deep)
    try:

        async def main() -> None:
            env = {contract.ENV_UNIX_SOCKET_DIR: short}
            async with asyncio.timeout(DEADLINE), run_adaptor(MEMORY, env=env) as adaptor:
                assert os.path.dirname(os.path.dirname(adaptor.handshake.address)) == short

        asyncio.run(main())
        env = adaptor_environ({contract.ENV_UNIX_SOCKET_DIR: deep})
        status, out, err = asyncio.run(finished(MEMORY, env))
        assert (status, out) == (1, b"")
        assert "too long" in err.decode() and contract.ENV_UNIX_SOCKET_DIR in err.decode()
        assert os.listdir(deep) == []  # the directory it made was removed again
    finally:
        os.rmdir(deep)
        os.rmdir(short)


# The intermediate process: starts the adaptor, writes its pid to a file, waits.
INTERMEDIATE = """
import subprocess, sys
child = subprocess.Popen(sys.argv[2:])
with open(sys.argv[1], "w") as f:
    f.write(str(child.pid))
child.wait()
"""


def process_gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat_file:
            # A zombie has exited; its new parent just has not reaped it yet.
            return stat_file.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_adaptor_exits_when_its_parent_dies(tmp_path: Path) -> None:
    pid_file = tmp_path / "adaptor.pid"
    stderr_file = tmp_path / "adaptor.stderr"

    async def main(stderr: IO[bytes]) -> None:
        parent = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            INTERMEDIATE,
            str(pid_file),
            *MEMORY,
            env=adaptor_environ(),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
        assert parent.stdout is not None
        async with asyncio.timeout(DEADLINE):
            line = (await parent.stdout.readline()).decode()
            parse(line, contract.CONTRACT_VERSIONS)
            adaptor_pid = int(pid_file.read_text())
            assert not process_gone(adaptor_pid)

            parent.kill()
            await parent.wait()
            # The adaptor holds the other end of the stdout pipe: EOF means it has exited.
            assert await parent.stdout.read() == b""
            # It is not our child, so nothing announces its end: poll /proc.
            await wait_until_async(
                lambda: process_gone(adaptor_pid), "the adaptor to exit", interval=0.1
            )

    with open(stderr_file, "wb") as stderr:
        asyncio.run(main(stderr))
    logs = [json.loads(line) for line in stderr_file.read_bytes().decode().splitlines()]
    assert [e["@message"] for e in logs][-2:] == ["adaptor stopping", "adaptor stopped"]
    # SIGTERM from the kernel's parent-death signal; the pid poll is the fallback.
    assert logs[-2]["reason"] in ("SIGTERM", "parent process exited")
