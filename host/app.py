"""What ``ilp-host run`` runs: adaptors under a supervisor, the admin API, signal handling.

Start-up, in order: the state directory (created 0700) and its lock (one host per state
directory), the admin API on its socket (so that ``ilp-host status`` can watch the adaptors
start), then the supervisor. Shutdown on SIGTERM or SIGINT, in order: health reports
NOT_SERVING and restarts are refused, the adaptors stop gracefully (Shutdown RPC, SIGTERM,
SIGKILL as configured), then the admin listeners close and the socket is removed.

A second signal during shutdown exits at once. The adaptors then die with the host: the
supervisor starts them with a parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host.admin.auth import read_token
from host.admin.connector_admin import ConnectorAdminService
from host.admin.engine_admin import EngineAdminService
from host.admin.server import AdminServer, TcpListener
from host.binding import EngineBinding, EngineServicer
from host.config import AdminConfig, ConfigError, HostConfig
from host.connector.switch import Connector
from host.engine import Engine, SettlementPort
from host.store import StoreError
from host.store.sqlite import SqliteStore
from host.supervisor import Supervisor
from sdk.pb.ilphost.engine.v1 import engine_pb2_grpc

log = logging.getLogger("ilp_host")

LOCK_FILE = "host.lock"
#: The Engine service for the adaptors, in the state directory.
ENGINE_SOCKET = "engine.sock"
#: Exit status after a second signal: the graceful stop was cut short.
EXIT_IMMEDIATE = 1


class HostError(RuntimeError):
    """The host cannot run (state directory taken, admin address unusable, ...)."""


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory, private (0700) when we make it."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise HostError(f"cannot create the state directory {state_dir}: {exc}") from exc
    if state_dir.stat().st_mode & 0o077:
        log.warning("state directory %s is accessible to other users; chmod 700 it", state_dir)


@contextlib.contextmanager
def state_lock(state_dir: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``state_dir`` for the host's lifetime (released on exit,
    even on SIGKILL, because the kernel drops flock locks with the process)."""
    path = state_dir / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise HostError(
                f"another ilp-host (pid {holder}) is running with the state directory "
                f"{state_dir}; stop it first or use another host.state_dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def tcp_listener(admin: AdminConfig, source: str) -> TcpListener | None:
    """The TCP listener's settings with its TLS files and token read (ConfigError if not)."""
    if admin.tcp is None:
        return None
    assert admin.tls_cert and admin.tls_key and admin.token_file  # checked by load_config
    try:
        cert_chain = admin.tls_cert.read_bytes()
        private_key = admin.tls_key.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{source}: admin TLS: cannot read {exc.filename}: {exc.strerror}"
        ) from exc
    # gRPC reports a bad certificate only as "failed to bind": check both files here instead.
    try:
        x509.load_pem_x509_certificates(cert_chain)
    except ValueError as exc:
        raise ConfigError(
            f"{source}: admin.tls_cert: {admin.tls_cert} is not a PEM certificate"
        ) from exc
    try:
        serialization.load_pem_private_key(private_key, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{source}: admin.tls_key: {admin.tls_key} is not an unencrypted PEM private key"
        ) from exc
    try:
        token = read_token(admin.token_file)
    except ValueError as exc:
        raise ConfigError(f"{source}: admin.token_file: {exc}") from exc
    host, port = admin.tcp
    return TcpListener(host, port, cert_chain, private_key, token)


class _Signals:
    """First SIGTERM/SIGINT: ``requested`` is set (graceful stop). Second: exit at once."""

    def __init__(self, socket: Path) -> None:
        self.requested = asyncio.Event()
        self._socket = socket
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self.requested.is_set():
            log.info("%s received: stopping gracefully (send it again to exit at once)", name)
            self.requested.set()
            return
        log.warning("%s received again: exiting now", name)
        with contextlib.suppress(OSError):
            self._socket.unlink()
        logging.shutdown()
        # Deliberately skips the rest of the graceful stop: that is what a second signal asks
        # for. Adaptors get SIGKILL from the kernel (parent-death signal).
        os._exit(EXIT_IMMEDIATE)

    def close(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.remove_signal_handler(signum)


async def run_host(config: HostConfig) -> int:
    """Run the host of ``config`` until SIGTERM or SIGINT; the process exit status."""
    prepare_state_dir(config.state_dir)
    with state_lock(config.state_dir):
        return await _run_locked(config)


@dataclass
class _Parts:
    """What a host runs besides the supervisor: each part is None when not configured."""

    store: SqliteStore | None = None
    engine: Engine | None = None
    binding: EngineBinding | None = None
    engine_server: grpc.aio.Server | None = None
    connector: Connector | None = None
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def _open_parts(config: HostConfig, stack: contextlib.AsyncExitStack) -> _Parts:
    """Open the engine's store, the engine, the Engine service for adaptors and the connector,
    registering each one's teardown on ``stack`` (closed in reverse order)."""
    parts = _Parts()
    if config.database is None:
        return parts
    try:
        parts.store = await SqliteStore.open(config.database)
    except StoreError as exc:
        raise HostError(f"cannot open the engine database {config.database}: {exc}") from exc
    stack.push_async_callback(parts.store.close)
    ports: dict[str, SettlementPort] = {}
    parts.engine = Engine(parts.store, ports)
    parts.binding = EngineBinding(parts.engine, ports, config.accounts)
    peering = config.connector
    if peering is not None:
        parts.connector = Connector.from_config(
            peering, parts.engine, parts.binding.settlement_messages()
        )
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServicer_to_server(
        EngineServicer(config.accounts, parts.connector), server
    )
    socket = config.state_dir / ENGINE_SOCKET
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()  # left by a host that died; we hold the state lock
    if server.add_insecure_port(f"unix:{socket}") == 0:
        raise HostError(f"cannot listen on the engine socket {socket}")
    os.chmod(socket, 0o600)
    await server.start()
    parts.engine_server = server
    stack.push_async_callback(server.stop, 1.0)
    if parts.connector is not None and peering is not None:
        try:
            await parts.connector.start()
        except OSError as exc:
            raise HostError(
                f"cannot listen for ILP-over-HTTP on {peering.host}:{peering.port}: {exc}"
            ) from exc
        stack.push_async_callback(parts.connector.stop)
        log.info("connector %s listening on %s", peering.address, parts.connector.url)
    return parts


async def _run_locked(config: HostConfig) -> int:
    tcp = tcp_listener(config.admin, config.source)
    async with contextlib.AsyncExitStack() as stack:
        parts = await _open_parts(config, stack)
        engine_addr = (
            f"unix:{config.state_dir / ENGINE_SOCKET}" if parts.engine_server is not None else None
        )
        supervisor = Supervisor(
            config.adaptors,
            engine_addr=engine_addr,
            on_incoming=parts.binding.on_incoming if parts.binding is not None else None,
        )
        engine_admin = EngineAdminService(parts.engine) if parts.engine is not None else None
        connector_admin = None
        if parts.connector is not None and config.connector is not None:
            connector_admin = ConnectorAdminService(
                parts.connector,
                {peer.id: (peer.address, peer.url) for peer in config.connector.peers},
            )
        admin = AdminServer(
            supervisor,
            config.admin.socket,
            engine=engine_admin,
            connector=connector_admin,
            tcp=tcp,
        )
        signals = _Signals(config.admin.socket)
        try:
            try:
                await admin.start()
            except RuntimeError as exc:
                raise HostError(str(exc)) from exc
            log.info(
                "admin API on %s (try: ilp-host status -c %s)",
                config.admin.socket_target,
                config.source,
            )
            if tcp is not None:
                log.info("admin API also on %s:%s (TLS, bearer token)", tcp.host, admin.tcp_port)
            status = await _supervise(supervisor, admin, signals, parts)
        finally:
            signals.close()
            await admin.stop()
    log.info("host stopped")
    return status


async def _run_engine(parts: _Parts, supervisor: Supervisor) -> None:
    """Bind the adaptors as they serve, resume the outbox, then carry it until cancelled."""
    assert parts.engine is not None and parts.binding is not None
    parts.tasks.append(asyncio.create_task(parts.binding.follow(supervisor), name="engine-binding"))
    resumed = await parts.engine.reconcile()
    if resumed:
        log.info("resumed %d unfinished settlement(s) from before the last stop", resumed)
    parts.tasks.append(asyncio.create_task(parts.engine.run_outbox(), name="engine-outbox"))


async def _stop_engine(parts: _Parts) -> None:
    for task in parts.tasks:
        task.cancel()
    await asyncio.gather(*parts.tasks, return_exceptions=True)
    parts.tasks.clear()


async def _supervise(
    supervisor: Supervisor, admin: AdminServer, signals: _Signals, parts: _Parts
) -> int:
    status = 0
    starting = asyncio.create_task(supervisor.start(), name="supervisor-start")
    stop_requested = asyncio.create_task(signals.requested.wait(), name="stop-requested")
    try:
        await asyncio.wait({starting, stop_requested}, return_when=asyncio.FIRST_COMPLETED)
        if starting.done() and starting.exception() is not None:
            log.error("the adaptors could not be started", exc_info=starting.exception())
            status = 1
        elif starting.done():
            states = ", ".join(f"{s.name} {s.state.name}" for s in supervisor.snapshots())
            log.info("adaptors started (%s); running until SIGTERM or SIGINT", states or "none")
            if parts.engine is not None:
                await _run_engine(parts, supervisor)
            await stop_requested
    finally:
        stop_requested.cancel()
        starting.cancel()  # a stop requested while adaptors are still starting
        await asyncio.wait({starting, stop_requested})
        await admin.begin_shutdown()
        if parts.connector is not None:
            await parts.connector.stop()  # no new packets while the adaptors stop
        await _stop_engine(parts)
        log.info("stopping the adaptors")
        try:
            await supervisor.stop()
        except Exception:
            log.exception("the adaptors' supervision failed")
            status = 1
    return status
