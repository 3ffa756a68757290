"""``serve``: run an ``Adaptor`` as a process of the settlement host (go-plugin's contract).

In order: check the magic cookie, negotiate the contract version, listen (unix socket in a
fresh 0700 directory, or TCP on 127.0.0.1 within the host's port range), with automatic mutual
TLS when the host sent its certificate; serve the adaptor, health, controller, stdio and
reflection on one grpc.aio server; run the adaptor's ``start()``; print the handshake line;
then serve until the host asks to stop (``Shutdown`` RPC or SIGTERM) or the host goes away
(parent-death signal, and a poll of the parent pid), and stop gracefully. SIGINT is ignored,
as go-plugin plugins do: a Ctrl-C in the operator's terminal reaches the whole process group
and the host decides the order of shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import IO, Any, Final, NoReturn

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from sdk import contract, handshake, mtls
from sdk.adaptor import Adaptor
from sdk.health import HealthServicer
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc
from sdk.pb.plugin import (
    grpc_controller_pb2,
    grpc_controller_pb2_grpc,
    grpc_stdio_pb2,
    grpc_stdio_pb2_grpc,
)
from sdk.stdio import Log, StdioServicer, StdoutSink, capture_stdout, install_hclog

#: Seconds in-flight RPCs get to finish once a stop is requested.
DEFAULT_GRACE: Final = 5.0
#: Seconds what still runs once the adaptor stopped gets to end by itself before the process
#: exits (grpc ends each RPC's own tasks a few loop turns after its server stopped).
LEFTOVER_GRACE: Final = 1.0
#: How often the parent pid is checked (the portable fallback of the parent-death signal).
PARENT_POLL_SECONDS: Final = 1.0
#: A unix socket path must fit sockaddr_un (108 bytes on Linux, 104 on macOS), with margin.
MAX_SOCKET_PATH: Final = 100
SOCKET_NAME: Final = "adaptor.sock"

NOT_STARTED_BY_HOST: Final = (
    "This program is a ledger adaptor for the Interledger settlement host. It is started by "
    "the host (for example `ilp-host run -c host.toml`), which loads it and talks to it over "
    "gRPC; it is not meant to be run by hand."
)

_log = Log("sdk")
# grpc_health's type stubs predate its asyncio servicer.


class LaunchError(Exception):
    """The environment the adaptor was started in does not allow it to serve (exit 1)."""


# --- the launch environment (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Launch:
    """What the host asked for through the environment."""

    app_version: int
    transport: str = "unix"
    socket_dir: str | None = None
    port_range: tuple[int, int] | None = None
    client_cert_pem: bytes | None = None

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], supported: tuple[int, ...]) -> Launch:
        """Read and check the environment; LaunchError says what is wrong and what to do."""
        if environ.get(contract.MAGIC_COOKIE_KEY) != contract.MAGIC_COOKIE_VALUE:
            raise LaunchError(NOT_STARTED_BY_HOST)
        offered = environ.get(contract.ENV_PROTOCOL_VERSIONS)
        version = handshake.negotiate(offered, supported)
        if version is None:
            raise LaunchError(
                "no contract version in common: the host offers "
                f"{handshake.parse_versions(offered)} ({contract.ENV_PROTOCOL_VERSIONS}="
                f"{offered!r}), this adaptor speaks {sorted(set(supported))}; "
                "upgrade the older of the two"
            )
        transport = environ.get(contract.ENV_TRANSPORT) or "unix"
        if transport not in ("unix", "tcp"):
            raise LaunchError(f"{contract.ENV_TRANSPORT}={transport!r}: expected unix or tcp")
        cert = environ.get(contract.ENV_CLIENT_CERT) or None
        cert_pem = cert.encode() if cert else None
        if cert_pem is not None:
            try:
                mtls.check_pem_certificate(cert_pem, contract.ENV_CLIENT_CERT)
            except ValueError as exc:
                raise LaunchError(str(exc)) from exc
        return cls(
            app_version=version,
            transport=transport,
            socket_dir=environ.get(contract.ENV_UNIX_SOCKET_DIR) or None,
            port_range=_port_range(environ),
            client_cert_pem=cert_pem,
        )


def _port_range(environ: Mapping[str, str]) -> tuple[int, int] | None:
    low, high = environ.get(contract.ENV_MIN_PORT), environ.get(contract.ENV_MAX_PORT)
    if not low or not high:
        return None
    try:
        first, last = int(low), int(high)
    except ValueError:
        raise LaunchError(
            f"{contract.ENV_MIN_PORT}={low!r} and {contract.ENV_MAX_PORT}={high!r} "
            "must be port numbers"
        ) from None
    if not 0 < first <= last <= 65535:
        raise LaunchError(f"port range {first}-{last} is empty or outside 1..65535")
    return first, last


# --- the gRPC server ---------------------------------------------------------------------------


class _Controller(grpc_controller_pb2_grpc.GRPCControllerServicer):
    """``plugin.GRPCController``: Shutdown answers, then the server stops gracefully."""

    def __init__(self, server: AdaptorServer) -> None:
        self._server = server

    async def Shutdown(
        self, request: grpc_controller_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> grpc_controller_pb2.Empty:
        self._server.request_stop("Shutdown RPC")
        return grpc_controller_pb2.Empty()


def _service_name(descriptor: Any, name: str) -> str:
    return str(descriptor.services_by_name[name].full_name)


class AdaptorServer:
    """One grpc.aio server with everything an adaptor serves.

    LedgerAdaptor (the adaptor), grpc.health.v1 (``""`` and ``"plugin"`` SERVING),
    plugin.GRPCController, plugin.GRPCStdio when given a stdout sink, and reflection over all
    of them. ``sdk.serve`` and ``sdk.testing`` both use it.
    """

    def __init__(self, adaptor: Adaptor, *, stdout: StdoutSink | None = None) -> None:
        self.adaptor = adaptor
        self.stop_reason = ""
        self._stdout = stdout
        self._stop_requested = asyncio.Event()
        self._stopped = False
        # No SO_REUSEPORT: two adaptors must never share a port by accident.
        self._server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
        self._health = HealthServicer()
        adaptor_pb2_grpc.add_LedgerAdaptorServicer_to_server(adaptor, self._server)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._server)
        grpc_controller_pb2_grpc.add_GRPCControllerServicer_to_server(
            _Controller(self), self._server
        )
        services = [
            _service_name(adaptor_pb2.DESCRIPTOR, "LedgerAdaptor"),
            _service_name(health_pb2.DESCRIPTOR, "Health"),
            _service_name(grpc_controller_pb2.DESCRIPTOR, "GRPCController"),
        ]
        if stdout is not None:
            grpc_stdio_pb2_grpc.add_GRPCStdioServicer_to_server(StdioServicer(stdout), self._server)
            services.append(_service_name(grpc_stdio_pb2.DESCRIPTOR, "GRPCStdio"))
        services.append(reflection.SERVICE_NAME)
        reflection.enable_server_reflection(services, self._server)

    def listen(self, address: str, credentials: grpc.ServerCredentials | None = None) -> int:
        """Bind ``address`` (a gRPC address); the port bound. RuntimeError if it cannot."""
        if credentials is None:
            return self._server.add_insecure_port(address)
        return self._server.add_secure_port(address, credentials)

    async def start(self) -> None:
        """Start serving and report SERVING under the go-plugin health name."""
        await self._server.start()
        await self._health.set(contract.HEALTH_SERVICE, health_pb2.HealthCheckResponse.SERVING)

    @property
    def stop_requested(self) -> bool:
        """Whether someone asked the adaptor to stop."""
        return self._stop_requested.is_set()

    def request_stop(self, reason: str) -> None:
        """Ask for a graceful stop; the first reason is kept."""
        if not self._stop_requested.is_set():
            self.stop_reason = reason
            self._stop_requested.set()

    async def wait_stop_requested(self) -> str:
        """Wait until a stop is requested; the reason."""
        await self._stop_requested.wait()
        return self.stop_reason

    async def stop(self, grace: float | None, *, run_hook: bool = True) -> None:
        """Stop gracefully (idempotent): NOT_SERVING, the adaptor's stop(), drain, close."""
        if self._stopped:
            return
        self._stopped = True
        await self._health.enter_graceful_shutdown()
        try:
            if run_hook:
                await self.adaptor.stop()
        except Exception:
            _log.exception("the adaptor's stop() failed")
        finally:
            if self._stdout is not None:
                self._stdout.finish()
            await self._server.stop(grace)


# --- the process -------------------------------------------------------------------------------


def _socket_directory(parent: str | None) -> str:
    """A fresh directory (mode 0700) for the socket; LaunchError if unusable or too deep."""
    try:
        directory = tempfile.mkdtemp(prefix="ilp", dir=parent)
    except OSError as exc:
        raise LaunchError(
            f"cannot create the socket directory in {parent or tempfile.gettempdir()}: {exc}"
        ) from exc
    path = os.path.join(directory, SOCKET_NAME)
    if len(path.encode()) >= MAX_SOCKET_PATH:
        shutil.rmtree(directory, ignore_errors=True)
        raise LaunchError(
            f"socket path {path!r} is too long for a unix socket (at most {MAX_SOCKET_PATH - 1} "
            f"bytes); point {contract.ENV_UNIX_SOCKET_DIR} at a shorter directory"
        )
    return directory


def _listen_tcp(
    server: AdaptorServer, launch: Launch, credentials: grpc.ServerCredentials | None
) -> str:
    ports = range(launch.port_range[0], launch.port_range[1] + 1) if launch.port_range else [0]
    for port in ports:
        try:
            bound = server.listen(f"127.0.0.1:{port}", credentials)
        except RuntimeError:
            continue
        return f"127.0.0.1:{bound}"
    raise LaunchError(f"no free TCP port on 127.0.0.1 in {ports[0]}-{ports[-1]}")


def _set_parent_death_signal() -> bool:
    """Linux: have the kernel send SIGTERM when the parent dies; False elsewhere."""
    if not sys.platform.startswith("linux"):
        return False
    pr_set_pdeathsig = 1
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0) != 0:
        _log.warn("prctl(PR_SET_PDEATHSIG) failed", errno=ctypes.get_errno())
        return False
    return True


async def _watch_parent(parent: int, server: AdaptorServer) -> None:
    # A poll on purpose: no event announces a new parent where PR_SET_PDEATHSIG is missing.
    while os.getppid() == parent:  # noqa: ASYNC110
        await asyncio.sleep(PARENT_POLL_SECONDS)
    server.request_stop("parent process exited")


@contextlib.contextmanager
def _stop_signals(server: AdaptorServer) -> Iterator[None]:
    """SIGTERM stops gracefully; SIGINT is counted and ignored."""
    loop = asyncio.get_running_loop()
    installed: list[signal.Signals] = []
    interrupts = 0

    def on_interrupt() -> None:
        nonlocal interrupts
        interrupts += 1
        _log.info("ignoring SIGINT: the host decides when the adaptor stops", count=interrupts)

    handlers = {signal.SIGTERM: lambda: server.request_stop("SIGTERM"), signal.SIGINT: on_interrupt}
    for signum, handler in handlers.items():
        try:
            loop.add_signal_handler(signum, handler)
        except (NotImplementedError, RuntimeError, ValueError):
            # Not the main thread, or no signals on this platform: Shutdown still works.
            _log.debug("cannot handle signal here", signal=signum.name)
            continue
        installed.append(signum)
    try:
        yield
    finally:
        for signum in installed:
            loop.remove_signal_handler(signum)


@dataclass(frozen=True)
class _Listening:
    """Where the server listens, with what certificate, and what to clean up after."""

    address: str
    certificate: mtls.Certificate | None
    socket_dir: str | None


def _listen(server: AdaptorServer, launch: Launch) -> _Listening:
    certificate, credentials = None, None
    if launch.client_cert_pem is not None:
        certificate = mtls.generate_certificate()
        credentials = mtls.server_credentials(certificate, launch.client_cert_pem)
    if launch.transport == "tcp":
        return _Listening(_listen_tcp(server, launch, credentials), certificate, None)
    socket_dir = _socket_directory(launch.socket_dir)
    address = os.path.join(socket_dir, SOCKET_NAME)
    try:
        server.listen(f"unix:{address}", credentials)
    except RuntimeError as exc:
        shutil.rmtree(socket_dir, ignore_errors=True)
        raise LaunchError(f"cannot listen on unix socket {address}: {exc}") from exc
    return _Listening(address, certificate, socket_dir)


def _announce(stdout: IO[str], launch: Launch, listening: _Listening) -> None:
    """Print the handshake line: from now on the host may call."""
    certificate = listening.certificate
    line = handshake.Handshake(
        app_version=launch.app_version,
        network=launch.transport,
        address=listening.address,
        server_cert_der=certificate.cert_der if certificate else None,
    ).line()
    stdout.write(line + "\n")
    stdout.flush()
    _log.info(
        "adaptor serving",
        network=launch.transport,
        address=listening.address,
        contract_version=launch.app_version,
        mtls=certificate is not None,
    )


async def serve_async(
    adaptor: Adaptor, *, grace: float = DEFAULT_GRACE, environ: Mapping[str, str] | None = None
) -> None:
    """Serve ``adaptor`` until asked to stop; return after a graceful stop.

    Raises LaunchError when the environment does not allow serving (not started by a host, no
    common contract version, unusable transport settings); anything ``start()`` raises
    propagates. ``serve`` turns both into exit status 1.
    """
    launch = Launch.from_environ(
        os.environ if environ is None else environ, adaptor.contract_versions
    )
    parent = os.getppid()
    sink = StdoutSink()
    server = AdaptorServer(adaptor, stdout=sink)
    listening: _Listening | None = None
    watcher: asyncio.Task[None] | None = None
    try:
        with _stop_signals(server):
            # After the SIGTERM handler is in place, so the signal cannot kill us abruptly.
            if _set_parent_death_signal() and os.getppid() != parent:
                raise LaunchError("the host exited before the adaptor started")
            watcher = asyncio.create_task(_watch_parent(parent, server))
            listening = _listen(server, launch)
            await server.start()
            started = False
            # Captured from before start(): a print there must not corrupt the handshake line.
            with capture_stdout(sink) as real_stdout:
                try:
                    await adaptor.start()
                    started = True
                    if not server.stop_requested:
                        _announce(real_stdout, launch, listening)
                    reason = await server.wait_stop_requested()
                    _log.info("adaptor stopping", reason=reason)
                finally:
                    await server.stop(grace, run_hook=started)
            _log.info("adaptor stopped")
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await server.stop(None, run_hook=False)
        if listening is not None and listening.socket_dir is not None:
            shutil.rmtree(listening.socket_dir, ignore_errors=True)
        await _let_tasks_end()


async def _let_tasks_end() -> None:
    """Wait, at most LEFTOVER_GRACE seconds, for the loop's other tasks to end by themselves.

    asyncio.run cancels whatever still runs when serve_async returns, and grpc logs the
    cancellation of an RPC's task as an ERROR with a CancelledError traceback although the RPC
    is over: a StreamStdio stream that the stop ended leaves such a task for a few loop turns,
    longer under load. Shutdown is not an error.
    """
    others = asyncio.all_tasks() - {asyncio.current_task()}
    if others:
        await asyncio.wait(others, timeout=LEFTOVER_GRACE)


def serve(adaptor: Adaptor, *, grace: float = DEFAULT_GRACE) -> NoReturn:
    """Run ``adaptor`` as a host-launched process; exit 0 after a graceful stop, 1 on failure.

    The whole main program of a Python adaptor::

        if __name__ == "__main__":
            sdk.serve(MyAdaptor())
    """
    # Before the event loop exists, so that asyncio never installs its KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    install_hclog()
    try:
        asyncio.run(serve_async(adaptor, grace=grace))
    except LaunchError as exc:
        print(f"{type(adaptor).__name__}: {exc}", file=sys.stderr, flush=True)
        sys.exit(1)
    except Exception:
        _log.exception("adaptor failed")
        sys.exit(1)
    sys.exit(0)
