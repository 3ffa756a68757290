"""What ``ilp-host run``, ``connector`` and ``engine`` run: the parts, the admin API, signals.

Three modes, one engine (see docs/architecture.md):

- ``run`` (proposal 1): the connector and the engine in one process; the engine is the
  connector's ClearingPort and SettlementMessagesPort, by plain calls.
- ``connector`` (proposal 2): the connector alone, with its own durable clearing ledger
  (host.connector.ledger), serving the Connector API (host.connector.api) to an engine.
- ``engine`` (proposal 2): the engine and the adaptors' supervision, bound to a connector
  process through the Connector API (host.connector_link).

Start-up, in order: the state directory (each directory the host creates is 0700) and its
lock (one host per state directory); the engine's store, opened and migrated (0600); the
Engine service for the adaptors; the admin API on its socket (so that ``ilp-host status`` can
watch the adaptors start); the adaptors; the configured accounts of every adaptor that serves,
created in the engine; and only then the connector, which accepts packets from that moment on.
A packet for an account that is still not there (its adaptor did not serve within its start
timeout, plus ACCOUNTS_SLACK) gets a T00 Reject saying so.

:class:`Host` runs it, shaped like temporalio's worker (``worker/_worker.py``): every
long-running task of the host (the supervision of the adaptors, the health follower, the
engine's binding to the adaptors, its outbox, the link to a connector process, housekeeping)
runs in one group. The first to fail, or to end while the host runs, stops the host: health
reports NOT_SERVING first, the cause is logged once, everything stops gracefully and the exit
status is 1. A host never runs on with a dead part.

Shutdown on SIGTERM or SIGINT, in order: health reports NOT_SERVING and restarts are refused,
the connector stops taking packets, the engine's tasks end, the adaptors stop gracefully
(Shutdown RPC, SIGTERM, SIGKILL as configured), then the admin listeners close and the socket
is removed. A second signal during shutdown exits at once. The adaptors then die with the
host: the supervisor starts them with a parent-death signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import grpc

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
from host.credentials import (
    CredentialsError,
    ServerTls,
    read_client_tls,
    read_server_tls,
)
from host.engine import AdaptorRegistry, Engine, EngineError
from host.engine.store import Store
from host.lifecycle import ProcessState
from host.metrics import HostMetrics, serve_metrics
from host.pb.ilphost.admin.v1 import admin_pb2
from host.store import StoreError
from host.store.opening import describe_database, open_store
from host.supervisor import Supervisor
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
#: Beyond the adaptors' start timeout, how long the start waits for the accounts, seconds.
ACCOUNTS_SLACK = 10.0
#: What one process runs (see the module docstring).
Mode = Literal["run", "connector", "engine"]


class HostError(RuntimeError):
    """The host cannot run (state directory taken, admin address unusable, ...)."""


def prepare_state_dir(state_dir: Path) -> None:
    """Create the state directory and any missing parent, each private (0700).

    Only the directories created here: an existing one keeps its owner's mode (a warning if
    other users can enter the state directory itself).
    """
    missing = []
    for directory in (state_dir, *state_dir.parents):
        if directory.exists():
            break
        missing.append(directory)
    try:
        for directory in reversed(missing):
            try:
                directory.mkdir(mode=0o700)
            except FileExistsError:
                # Another host of the same tree (a parent and its child started together)
                # made it first: its maker set its mode.
                continue
            directory.chmod(0o700)  # whatever the umask
        if not state_dir.is_dir():
            raise NotADirectoryError(f"{state_dir} is not a directory")
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
        tls = read_server_tls(admin.tls_cert, admin.tls_key, admin.token_file, prefix="admin.")
    except CredentialsError as exc:
        raise ConfigError(f"{source}: {exc}") from exc
    host, port = admin.tcp
    return TcpListener(host, port, tls)


def api_tls(config: HostConfig, mode: Mode) -> ServerTls | None:
    """The Connector API's credentials: the server's (connector) or the client's (engine)."""
    peering = config.connector
    if peering is None or peering.api_credentials is None:
        return None
    files = peering.api_credentials
    try:
        if mode == "connector":
            return read_server_tls(
                files.tls_cert, files.tls_key, files.token_file, prefix="connector.api_"
            )
        return read_client_tls(files.tls_cert, files.token_file, prefix="connector.api_")
    except CredentialsError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc


class _Signals:
    """First SIGTERM/SIGINT: ``on_first`` (a graceful stop). Second: exit at once."""

    def __init__(self, socket: Path, on_first: Callable[[], None]) -> None:
        self._socket = socket
        self._on_first = on_first
        self._received_once = False
        self._loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            self._loop.add_signal_handler(signum, self._received, signum)

    def _received(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if not self._received_once:
            self._received_once = True
            log.info("%s received: stopping gracefully (send it again to exit at once)", name)
            self._on_first()
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
    return await Host(config, mode=mode, connector_address=connector_address).run()


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


class HostTaskEnded(RuntimeError):
    """A long-running task of the host returned although the host was not stopping."""


class Host:
    """One ``ilp-host run``, ``connector`` or ``engine`` process (see the module docstring).

    ``run()`` starts the parts in order, supervises every long-running task in one group and
    returns the exit status: 0 after a requested stop, 1 when a part failed. ``shutdown()``
    requests a graceful stop (idempotent; what SIGTERM does).
    """

    def __init__(
        self, config: HostConfig, *, mode: Mode = "run", connector_address: str | None = None
    ) -> None:
        if mode == "engine" and connector_address is None:
            raise HostError("ilp-host engine needs the address of the connector's Connector API")
        self.config = config
        self.mode = mode
        self._connector_address = connector_address
        self._stop_requested = asyncio.Event()
        #: /metrics (host.metrics), when [metrics] asks for it.
        self._metrics: HostMetrics | None = None

    def shutdown(self) -> None:
        """Request a graceful stop; ``run()`` then returns."""
        self._stop_requested.set()

    async def run(self) -> int:
        """Run until a stop is requested or a part fails; the exit status."""
        prepare_state_dir(self.config.state_dir)
        with state_lock(self.config.state_dir):
            return await self._run_locked()

    async def _run_locked(self) -> int:
        config = self.config
        tcp = tcp_listener(config.admin, config.source)
        tls = api_tls(config, self.mode)
        async with contextlib.AsyncExitStack() as stack:
            parts = await self._open_parts(stack, tls)
            engine_addr = (
                f"unix:{config.state_dir / ENGINE_SOCKET}"
                if parts.engine_server is not None
                else None
            )
            supervisor = Supervisor(config.adaptors, engine_addr=engine_addr)
            self._metrics = await _serve_metrics(config, stack, parts, supervisor)
            admin = self._admin_server(supervisor, parts, tcp)
            signals = _Signals(config.admin.socket, self.shutdown)
            try:
                try:
                    await admin.start(follow_health=False)
                except RuntimeError as exc:
                    raise HostError(str(exc)) from exc
                log.info(
                    "admin API on %s (try: ilp-host status -c %s)",
                    config.admin.socket_target,
                    config.source,
                )
                if tcp is not None:
                    log.info(
                        "admin API also on %s:%s (TLS, bearer token)", tcp.host, admin.tcp_port
                    )
                status = await self._supervise(supervisor, admin, parts)
            finally:
                signals.close()
                await admin.stop()
        log.info("host stopped" if status == 0 else "host stopped after a failure")
        return status

    def _admin_server(
        self, supervisor: Supervisor, parts: _Parts, tcp: TcpListener | None
    ) -> AdminServer:
        config = self.config
        connector_admin = None
        if parts.connector is not None and config.connector is not None:
            assert parts.balance is not None
            connector_admin = ConnectorAdminService(
                parts.connector,
                {peer.id: (peer.address or "", peer.url) for peer in config.connector.peers},
                parts.balance,
                parts.engine_link,
            )
        return AdminServer(
            supervisor,
            config.admin.socket,
            engine=EngineAdminService(parts.engine) if parts.engine is not None else None,
            connector=connector_admin,
            tcp=tcp,
            link=parts.link,
        )

    # -- the parts ------------------------------------------------------------------------------

    async def _open_parts(self, stack: contextlib.AsyncExitStack, tls: ServerTls | None) -> _Parts:
        """Open what the mode runs besides the supervisor, each one's teardown registered on
        ``stack``: the engine's store, the engine, the Engine service for adaptors, and the
        connector (not yet listening) or the link to it."""
        config = self.config
        if self.mode == "connector":
            return await self._open_connector(stack, tls)
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
        # Proposal 2: the engine journals what it does to a balance; the link pushes it.
        effects = asyncio.Event()
        parts.engine = Engine(
            parts.store,
            AdaptorRegistry(),
            journal_clearing=self.mode == "engine",
            on_clearing_effect=effects.set,
        )
        parts.binding = EngineBinding(parts.engine, config.accounts)
        peering = config.connector
        messenger: PeerMessenger | None = None
        if self.mode == "engine":
            address = self._connector_address
            assert address is not None
            if not address.startswith("unix:") and tls is None:
                raise HostError(
                    f"the Connector API at {address} is on TCP: the engine needs "
                    "connector.api_tls_cert and connector.api_token_file in the config to "
                    "reach it (TLS and the bearer token)"
                )
            channel = channel_to(address, tls)
            stack.push_async_callback(channel.close, None)
            parts.link = ConnectorLink(
                parts.engine,
                parts.store,
                channel,
                parts.binding.settlement_messages(),
                effects=effects,
                address=address,
                send_timeout=peering.settle_timeout if peering is not None else 30.0,
            )
            messenger = parts.link
        elif peering is not None:
            parts.connector = Connector.from_config(
                peering,
                parts.binding.clearing(),
                parts.binding.settlement_messages(),
                assets=_assets(self.config),
            )
            stack.push_async_callback(parts.connector.stop)
            messenger = parts.connector
            parts.balance = partial(_engine_balance, parts.engine)
        server = grpc.aio.server()
        engine_pb2_grpc.add_EngineServicer_to_server(
            EngineServicer(config.accounts, messenger), server
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
        return parts

    async def _open_connector(
        self, stack: contextlib.AsyncExitStack, tls: ServerTls | None
    ) -> _Parts:
        """Proposal 2, connector side: the clearing ledger, the Connector API, the connector."""
        config = self.config
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
        connector = Connector.from_config(peering, ledger, relay, assets=_assets(self.config))
        stack.push_async_callback(connector.stop)
        address = peering.api
        if address.startswith("unix:"):
            socket = config.state_dir / address.removeprefix("unix:")
            with contextlib.suppress(FileNotFoundError):
                socket.unlink()  # left by a connector that died; we hold the state lock
            address = f"unix:{socket}"
        try:
            server = await serve_connector_api(ConnectorApi(ledger, relay, connector), address, tls)
        except (RuntimeError, ValueError, OSError) as exc:
            raise HostError(f"cannot serve the Connector API on {address}: {exc}") from exc
        stack.push_async_callback(server.stop, 1.0)
        log.info(
            "Connector API on %s%s (ilp-host engine --connector %s)",
            address,
            " (TLS, bearer token)" if tls is not None else "",
            address,
        )
        return _Parts(
            connector=connector,
            ledger=ledger,
            balance=partial(_ledger_balance, ledger),
            engine_link=partial(_engine_link, ledger, relay),
        )

    # -- the run loop ---------------------------------------------------------------------------

    async def _supervise(self, supervisor: Supervisor, admin: AdminServer, parts: _Parts) -> int:
        """Start in order, then wait for a stop request or the first task to end; stop."""
        tasks: dict[asyncio.Task[None], str] = {}
        spawned = asyncio.Event()

        def spawn(name: str, work: Coroutine[Any, Any, None]) -> None:
            tasks[asyncio.create_task(work, name=name)] = name
            spawned.set()

        stop = asyncio.create_task(self._stop_requested.wait(), name="stop-requested")
        starting = asyncio.create_task(
            self._start(supervisor, admin, parts, spawn), name="host-start"
        )
        status = 0
        try:
            # Until a stop is requested or a task ends: a task may fail while the start still
            # waits for it (the binding, before the accounts exist), so watch new ones too.
            while not stop.done() and not any(task.done() for task in tasks):
                spawned.clear()
                more = asyncio.create_task(spawned.wait())
                watched = {stop, more, *tasks} | ({starting} if not starting.done() else set())
                await asyncio.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                more.cancel()
                if starting.done():
                    starting.result()  # a failed start raises here
            failed = [task for task in tasks if task.done()]
            if failed and not stop.done():
                status = 1
                await admin.begin_shutdown()  # health NOT_SERVING first
                _log_failure(failed[0], tasks[failed[0]])
        except HostError:
            await admin.begin_shutdown()
            raise
        except Exception as exc:
            status = 1
            await admin.begin_shutdown()
            log.error("the host could not start: %s", _describe(exc), exc_info=exc)
        finally:
            stop.cancel()
            if not starting.done():
                starting.cancel()  # a stop requested while the adaptors are still starting
            await asyncio.gather(starting, return_exceptions=True)
            await self._stop(supervisor, admin, parts, tasks)
        return status

    async def _start(
        self,
        supervisor: Supervisor,
        admin: AdminServer,
        parts: _Parts,
        spawn: Callable[[str, Coroutine[Any, Any, None]], None],
    ) -> None:
        """The start-up order of the module docstring, from the adaptors on."""
        spawn("health", _follow_health(admin))
        if parts.connector is not None and parts.engine is None:
            # ilp-host connector: its ledger is open and the Connector API serves already.
            await self._listen(parts.connector)
            spawn("housekeeping", _housekeeping(parts))
            return
        await supervisor.start()
        spawn("adaptor supervision", _supervision(supervisor))
        if self._metrics is not None:
            spawn("metrics", self._metrics.follow_adaptors(supervisor))
        states = ", ".join(f"{s.name} {s.state.name}" for s in supervisor.snapshots())
        log.info("adaptors started (%s)", states or "none")
        if parts.engine is not None and parts.binding is not None:
            spawn("engine binding", parts.binding.follow(supervisor))
            serving = {s.name for s in supervisor.snapshots() if s.state == ProcessState.SERVING}
            limit = max((spec.start_timeout for spec in self.config.adaptors), default=0.0)
            limit += ACCOUNTS_SLACK
            try:
                # Bounded: an adaptor that stops serving right after its start creates its
                # accounts only once it is back, and the other accounts' packets must not
                # wait for that.
                async with asyncio.timeout(limit):
                    await parts.binding.accounts_created(serving)
            except TimeoutError:
                log.warning(
                    "not every account exists after %g s (an adaptor is not serving): the "
                    "connector takes packets now; those for the missing accounts get T00 "
                    "until their adaptor serves",
                    limit,
                )
            resumed = await parts.engine.reconcile()
            if resumed:
                log.info("resumed %d unfinished settlement(s) from before the last stop", resumed)
            spawn("engine outbox", parts.engine.run_outbox())
            if parts.link is not None:
                spawn("connector link", parts.link.run())
        if parts.connector is not None:
            await self._listen(parts.connector)
        spawn("housekeeping", _housekeeping(parts))
        log.info("host serving; running until SIGTERM or SIGINT")

    async def _listen(self, connector: Connector) -> None:
        peering = self.config.connector
        assert peering is not None
        try:
            await connector.start()
        except OSError as exc:
            raise HostError(
                f"cannot listen for ILP-over-HTTP on {peering.host}:{peering.port}: {exc}"
            ) from exc
        except AddressUnknown as exc:
            raise HostError(str(exc)) from exc
        log.info("connector %s listening on %s", connector.address, connector.url)

    async def _stop(
        self,
        supervisor: Supervisor,
        admin: AdminServer,
        parts: _Parts,
        tasks: dict[asyncio.Task[None], str],
    ) -> None:
        """The graceful stop, shielded from a second cancellation of the run."""
        await admin.begin_shutdown()
        if parts.connector is not None:
            await parts.connector.stop()  # no new packets while the adaptors stop
        engine_tasks = [t for t, name in tasks.items() if name not in _LAST_TO_STOP]
        for task in engine_tasks:
            task.cancel()
        await asyncio.gather(*engine_tasks, return_exceptions=True)
        log.info("stopping the adaptors")
        try:
            await supervisor.stop()
        except Exception as exc:  # reported by the supervision task already, if it ran
            if not any(name == "adaptor supervision" for name in tasks.values()):
                log.error("the adaptors' supervision failed: %s", _describe(exc), exc_info=exc)
        for task in tasks:
            task.cancel()
        # Every task's end is retrieved here; the one that stopped the host was logged.
        await asyncio.gather(*tasks, return_exceptions=True)


#: Tasks that end by themselves once the supervisor stops: stopped after the adaptors.
_LAST_TO_STOP = frozenset({"adaptor supervision", "health"})


def _assets(config: HostConfig) -> dict[str, tuple[str, int]]:
    """Each account's asset, for the ILDCP answers to children."""
    return {account.id: (account.asset_code, account.asset_scale) for account in config.accounts}


async def _serve_metrics(
    config: HostConfig, stack: contextlib.AsyncExitStack, parts: _Parts, supervisor: Supervisor
) -> HostMetrics | None:
    """``/metrics`` (host.metrics) over the parts this mode runs, when ``[metrics]`` asks."""
    try:
        served = await serve_metrics(config, stack)
    except OSError as exc:
        assert config.metrics.listen is not None
        host, port = config.metrics.listen
        raise HostError(
            f"cannot serve metrics on {host}:{port} (metrics.listen): {exc.strerror or exc}"
        ) from exc
    if served is None:
        return None
    metrics, server = served
    metrics.attach(
        engine=parts.engine,
        store=parts.store,
        connector=parts.connector,
        ledger=parts.ledger,
        engine_link=parts.engine_link if parts.ledger is not None else None,
        link=parts.link,
        supervisor=supervisor,
    )
    log.info("metrics on %s", server.url)
    return metrics


async def _supervision(supervisor: Supervisor) -> None:
    await supervisor.wait()
    raise HostTaskEnded("the adaptors' supervision ended")


async def _follow_health(admin: AdminServer) -> None:
    await admin.health.follow()
    raise HostTaskEnded("health reporting ended")


def _log_failure(task: asyncio.Task[None], name: str) -> None:
    """The cause of the stop, logged once."""
    if task.cancelled():
        log.error("host task %r was cancelled: stopping the host", name)
        return
    error = task.exception()
    if error is None or isinstance(error, HostTaskEnded):
        log.error("host task %r ended while the host was running: stopping the host", name)
        return
    log.error("host task %r failed: %s; stopping the host", name, _describe(error), exc_info=error)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
