"""What ``ilp-host run``, ``connector`` and ``engine`` run: the parts, the admin API, signals.

Three modes, one engine (see docs/architecture.md):

- ``run`` (proposal 1): the connector and the engine in one process; the engine is the
  connector's ClearingPort and SettlementMessagesPort, by plain calls.
- ``connector`` (proposal 2): the connector alone, with its own durable clearing ledger
  (host.connector.ledger), serving the Connector API (host.connector.api) to an engine.
- ``engine`` (proposal 2): the engine and the adaptors' supervision, bound to a connector
  process through the Connector API (host.connector_link).

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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Literal

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from host.admin.auth import read_token
from host.admin.connector_admin import BalanceReader, ConnectorAdminService
from host.admin.engine_admin import EngineAdminService
from host.admin.server import AdminServer, TcpListener
from host.binding import EngineBinding, EngineServicer, PeerMessenger
from host.config import CONNECTOR_DATABASE, AdminConfig, ConfigError, HostConfig
from host.connector.api import ConnectorApi, EngineRelay, serve_connector_api
from host.connector.ledger import AccountLimits, ConnectorLedger
from host.connector.ports import UnknownPeer
from host.connector.switch import AddressUnknown, Connector
from host.connector_link import ConnectorLink, channel_to
from host.engine import Engine, EngineError, SettlementPort
from host.store import Store, StoreError
from host.store.opening import describe_database, open_store
from host.supervisor import Supervisor
from sdk.pb.ilphost.admin.v1 import admin_pb2
from sdk.pb.ilphost.engine.v1 import engine_pb2_grpc

log = logging.getLogger("ilp_host")

LOCK_FILE = "host.lock"
#: The Engine service for the adaptors, in the state directory.
ENGINE_SOCKET = "engine.sock"
#: Exit status after a second signal: the graceful stop was cut short.
EXIT_IMMEDIATE = 1
#: How long idempotency keys are kept, and how often older ones are forgotten, seconds.
KEY_RETENTION = 24 * 3600.0
HOUSEKEEPING_INTERVAL = 3600.0
#: What one process runs (see the module docstring).
Mode = Literal["run", "connector", "engine"]


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


async def run_host(
    config: HostConfig, *, mode: Mode = "run", connector_address: str | None = None
) -> int:
    """Run ``mode`` of ``config`` until SIGTERM or SIGINT; the process exit status.

    For the two processes of a split host, ``config`` is already the role's
    (host.config.for_role); ``connector_address`` is the Connector API an engine binds to.
    """
    if mode == "engine" and connector_address is None:
        raise HostError("ilp-host engine needs the address of the connector's Connector API")
    prepare_state_dir(config.state_dir)
    with state_lock(config.state_dir):
        return await _run_locked(config, mode, connector_address)


@dataclass
class _Parts:
    """What a host runs besides the supervisor: each part is None when not configured."""

    store: Store | None = None
    engine: Engine | None = None
    binding: EngineBinding | None = None
    engine_server: grpc.aio.Server | None = None
    connector: Connector | None = None
    #: Proposal 2, engine side: the link to the connector process.
    link: ConnectorLink | None = None
    #: Proposal 2, connector side: its own clearing ledger.
    ledger: ConnectorLedger | None = None
    #: For the connector's admin API: a peer's clearing balance, and where the engine runs.
    balance: BalanceReader | None = None
    engine_link: Callable[[], admin_pb2.EngineLink] = admin_pb2.EngineLink
    tasks: list[asyncio.Task[None]] = field(default_factory=list)


async def _open_parts(
    config: HostConfig, stack: contextlib.AsyncExitStack, mode: Mode, connector_address: str | None
) -> _Parts:
    """Open what ``mode`` runs besides the supervisor: the engine's store, the engine, the
    Engine service for adaptors, the connector or the link to it; each one's teardown is
    registered on ``stack`` (closed in reverse order)."""
    if mode == "connector":
        return await _open_connector(config, stack)
    parts = _Parts()
    if config.database is None:
        return parts
    try:
        parts.store = await open_store(config.database)
    except StoreError as exc:
        raise HostError(
            f"cannot open the engine database {describe_database(config.database)}: {exc}"
        ) from exc
    stack.push_async_callback(parts.store.close)
    ports: dict[str, SettlementPort] = {}
    parts.engine = Engine(parts.store, ports, journal_clearing=mode == "engine")
    parts.binding = EngineBinding(parts.engine, ports, config.accounts)
    peering = config.connector
    messenger: PeerMessenger | None = None
    if mode == "engine":
        assert connector_address is not None
        channel = channel_to(connector_address)
        stack.push_async_callback(channel.close, None)
        parts.link = ConnectorLink(
            parts.engine,
            parts.store,
            channel,
            parts.binding.settlement_messages(),
            address=connector_address,
            send_timeout=peering.settle_timeout if peering is not None else 30.0,
        )
        messenger = parts.link
    elif peering is not None:
        parts.connector = Connector.from_config(
            peering, parts.engine, parts.binding.settlement_messages(), assets=_assets(config)
        )
        messenger = parts.connector
        parts.balance = partial(_engine_balance, parts.engine)
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServicer_to_server(EngineServicer(config.accounts, messenger), server)
    socket = config.state_dir / ENGINE_SOCKET
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()  # left by a host that died; we hold the state lock
    if server.add_insecure_port(f"unix:{socket}") == 0:
        raise HostError(f"cannot listen on the engine socket {socket}")
    os.chmod(socket, 0o600)
    await server.start()
    parts.engine_server = server
    stack.push_async_callback(server.stop, 1.0)
    if parts.connector is not None:
        await _start_connector(parts.connector, config, stack)
    return parts


async def _open_connector(config: HostConfig, stack: contextlib.AsyncExitStack) -> _Parts:
    """Proposal 2, connector side: the clearing ledger, the connector and the Connector API."""
    peering = config.connector
    assert peering is not None  # checked by host.config.for_role
    limits = {
        account.id: AccountLimits(
            account.asset_scale, account.policy.min_balance, account.policy.max_balance
        )
        for account in config.accounts
    }
    path = config.state_dir / CONNECTOR_DATABASE
    try:
        ledger = await ConnectorLedger.open(path, limits)
    except StoreError as exc:
        raise HostError(f"cannot open the connector's ledger {path}: {exc}") from exc
    stack.push_async_callback(ledger.close)
    relay = EngineRelay(timeout=peering.settle_timeout)
    connector = Connector.from_config(peering, ledger, relay, assets=_assets(config))
    address = peering.api
    if address.startswith("unix:"):
        socket = config.state_dir / address.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()  # left by a connector that died; we hold the state lock
        address = f"unix:{socket}"
    try:
        server = await serve_connector_api(ConnectorApi(ledger, relay, connector), address)
    except (RuntimeError, ValueError, OSError) as exc:
        raise HostError(f"cannot serve the Connector API on {address}: {exc}") from exc
    stack.push_async_callback(server.stop, 1.0)
    log.info("Connector API on %s (ilp-host engine --connector %s)", address, address)
    await _start_connector(connector, config, stack)
    return _Parts(
        connector=connector,
        ledger=ledger,
        balance=partial(_ledger_balance, ledger),
        engine_link=partial(_engine_link, ledger, relay),
    )


async def _engine_balance(engine: Engine, account_id: str) -> tuple[int, int] | None:
    try:
        account = (await engine.get_account(account_id)).account
    except EngineError:
        return None
    return account.balance, account.asset_scale


async def _ledger_balance(ledger: ConnectorLedger, account_id: str) -> tuple[int, int] | None:
    try:
        return await ledger.balance(account_id), ledger.limits(account_id).asset_scale
    except UnknownPeer:
        return None


def _engine_link(ledger: ConnectorLedger, relay: EngineRelay) -> admin_pb2.EngineLink:
    link = admin_pb2.EngineLink(
        external=True,
        connected=relay.connected,
        unacknowledged=ledger.last_cursor - ledger.acknowledged,
        last_cursor=ledger.last_cursor,
    )
    if relay.since is not None:
        link.since.FromDatetime(relay.since)
    return link


async def _start_connector(
    connector: Connector, config: HostConfig, stack: contextlib.AsyncExitStack
) -> None:
    peering = config.connector
    assert peering is not None
    try:
        await connector.start()
    except OSError as exc:
        raise HostError(
            f"cannot listen for ILP-over-HTTP on {peering.host}:{peering.port}: {exc}"
        ) from exc
    except AddressUnknown as exc:
        raise HostError(str(exc)) from exc
    stack.push_async_callback(connector.stop)
    log.info("connector %s listening on %s", connector.address, connector.url)


def _assets(config: HostConfig) -> dict[str, tuple[str, int]]:
    """Each account's asset, for the ILDCP answers to children."""
    return {account.id: (account.asset_code, account.asset_scale) for account in config.accounts}


async def _run_locked(config: HostConfig, mode: Mode, connector_address: str | None) -> int:
    tcp = tcp_listener(config.admin, config.source)
    async with contextlib.AsyncExitStack() as stack:
        parts = await _open_parts(config, stack, mode, connector_address)
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
            assert parts.balance is not None
            connector_admin = ConnectorAdminService(
                parts.connector,
                {peer.id: (peer.address or "", peer.url) for peer in config.connector.peers},
                parts.balance,
                parts.engine_link,
            )
        admin = AdminServer(
            supervisor,
            config.admin.socket,
            engine=engine_admin,
            connector=connector_admin,
            tcp=tcp,
            link=parts.link,
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
    if parts.link is not None:
        parts.tasks.append(asyncio.create_task(parts.link.run(), name="connector-link"))


async def _housekeeping(parts: _Parts) -> None:
    """Forget idempotency keys past their retention (RFC 38: at least 24 hours), hourly: each
    packet records one per side, and without this the databases only grow.

    The first round comes an hour after the start, not at it: an engine back from a long stop
    first replays the connector's unacknowledged changes, whose keys must still be known.
    """
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        try:
            forgotten = 0
            # Instances sharing one database take turns: the leader forgets for all.
            if (
                parts.engine is not None
                and parts.store is not None
                and await parts.store.try_lead()
            ):
                forgotten += await parts.engine.forget_idempotency_keys(KEY_RETENTION)
            if parts.ledger is not None:
                forgotten += await parts.ledger.forget_keys(KEY_RETENTION)
            if forgotten:
                log.info("forgot %d idempotency key(s) older than 24 h", forgotten)
        except StoreError as exc:
            log.warning("idempotency keys not forgotten this time: %s", exc)


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
            parts.tasks.append(asyncio.create_task(_housekeeping(parts), name="housekeeping"))
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
