"""What ``ilp-host run``, ``connector`` and ``engine`` run: the parts, the admin API, signals.

Three modes, one engine (see docs/architecture.md), each assembled by host.assembly into a
typed object with exactly its parts:

- ``run`` (proposal 1): the connector and the engine in one process; the engine is the
  connector's ClearingPort and SettlementMessagesPort, by plain calls.
- ``connector`` (proposal 2): the connector alone, with its own durable clearing file
  (host.connector.durable_clearing), serving the Connector API (host.connector.api) to an engine.
- ``engine`` (proposal 2): the engine and the adaptors' supervision, bound to a connector
  process through the Connector API (host.remote_connector).

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
from pathlib import Path
from typing import Any, Literal

from host.admin.connector_admin import ConnectorAdminService
from host.admin.engine_admin import EngineAdminService
from host.admin.server import AdminServer, TcpListener
from host.assembly import (
    PLAIN_LINKS,
    AdaptorsOnly,
    AssemblyError,
    ConnectorAlone,
    EngineAlone,
    EngineSide,
    LinkTls,
    Parts,
    Together,
    assemble_connector,
    assemble_engine,
    assemble_run,
)
from host.config import AdminConfig, ConfigError, HostConfig
from host.connector.connector import AddressUnknown, Connector
from host.credentials import (
    CredentialsError,
    ServerTls,
    https_client_context,
    https_server_context,
    read_client_tls,
    read_server_tls,
)
from host.lifecycle import ProcessState
from host.metrics import HostMetrics, serve_metrics
from host.store import StoreError
from host.supervisor import Supervisor

log = logging.getLogger("ilp_host")

LOCK_FILE = "host.lock"
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


def link_tls(config: HostConfig, mode: Mode) -> LinkTls:
    """The ILP-over-HTTP links' TLS, from ``[connector]``'s files (ConfigError if one is
    unusable); none for the engine of a split host, which has no links."""
    peering = config.connector
    if peering is None or mode == "engine":
        return PLAIN_LINKS
    try:
        server = None
        if peering.tls is not None:
            server = https_server_context(peering.tls.cert, peering.tls.key, prefix="connector.")
        peers = None
        if peering.peer_ca is not None:
            peers = https_client_context(peering.peer_ca, key="connector.peer_ca")
    except CredentialsError as exc:
        raise ConfigError(f"{config.source}: {exc}") from exc
    return LinkTls(server, peers)


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
        links = link_tls(config, self.mode)
        async with contextlib.AsyncExitStack() as stack:
            try:
                parts = await self._assemble(stack, tls, links)
            except AssemblyError as exc:
                raise HostError(str(exc)) from exc
            engine = _engine_of(parts)
            supervisor = Supervisor(
                config.adaptors, engine_addr=engine.address if engine is not None else None
            )
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
        self, supervisor: Supervisor, parts: Parts, tcp: TcpListener | None
    ) -> AdminServer:
        config = self.config
        engine = _engine_of(parts)
        connector_admin = None
        peering = config.connector
        if isinstance(parts, Together | ConnectorAlone) and parts.connector is not None:
            assert peering is not None  # a connector is assembled from it
            connector_admin = ConnectorAdminService(
                parts.connector,
                {peer.id: (peer.address or "", peer.url) for peer in peering.peers},
                parts.balance(),
                parts.engine_link,
                parts.reconciler,
            )
        return AdminServer(
            supervisor,
            config.admin.socket,
            engine=EngineAdminService(engine.engine) if engine is not None else None,
            connector=connector_admin,
            tcp=tcp,
            link=parts.link if isinstance(parts, EngineAlone) else None,
        )

    async def _assemble(
        self, stack: contextlib.AsyncExitStack, tls: ServerTls | None, links: LinkTls
    ) -> Parts:
        """The parts of this mode (host.assembly), each one's teardown registered on ``stack``."""
        if self.mode == "connector":
            return await assemble_connector(self.config, stack, tls, links)
        if self.mode == "engine":
            assert self._connector_address is not None  # checked by __init__
            return await assemble_engine(self.config, stack, self._connector_address, tls)
        return await assemble_run(self.config, stack, links)

    # -- the run loop ---------------------------------------------------------------------------

    async def _supervise(self, supervisor: Supervisor, admin: AdminServer, parts: Parts) -> int:
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
        parts: Parts,
        spawn: Callable[[str, Coroutine[Any, Any, None]], None],
    ) -> None:
        """The start-up order of the module docstring, from the adaptors on."""
        spawn("health", _follow_health(admin))
        if isinstance(parts, ConnectorAlone):
            # ilp-host connector: its clearing file is open and the Connector API serves already.
            await self._listen(parts.connector)
            spawn("housekeeping", _housekeeping(parts))
            if parts.reconciler.periodic:
                spawn("reconciliation", parts.reconciler.run())
            return
        await supervisor.start()
        spawn("adaptor supervision", _supervision(supervisor))
        if self._metrics is not None:
            spawn("metrics", self._metrics.follow_adaptors(supervisor))
        states = ", ".join(f"{s.name} {s.state.name}" for s in supervisor.snapshots())
        log.info("adaptors started (%s)", states or "none")
        if not isinstance(parts, AdaptorsOnly):
            await self._start_engine(supervisor, parts.engine, spawn)
        if isinstance(parts, EngineAlone):
            spawn("connector link", parts.link.run())
        elif isinstance(parts, Together) and parts.connector is not None:
            await self._listen(parts.connector)
            if parts.reconciler is not None and parts.reconciler.periodic:
                spawn("reconciliation", parts.reconciler.run())
        spawn("housekeeping", _housekeeping(parts))
        log.info("host serving; running until SIGTERM or SIGINT")

    async def _start_engine(
        self,
        supervisor: Supervisor,
        side: EngineSide,
        spawn: Callable[[str, Coroutine[Any, Any, None]], None],
    ) -> None:
        """Bind the engine to the adaptors, wait (bounded) for the accounts, then resume the
        outbox."""
        spawn("engine binding", side.binding.follow(supervisor))
        serving = {s.name for s in supervisor.snapshots() if s.state == ProcessState.SERVING}
        limit = max((spec.start_timeout for spec in self.config.adaptors), default=0.0)
        limit += ACCOUNTS_SLACK
        try:
            # Bounded: an adaptor that stops serving right after its start creates its
            # accounts only once it is back, and the other accounts' packets must not
            # wait for that.
            async with asyncio.timeout(limit):
                await side.binding.accounts_created(serving)
        except TimeoutError:
            log.warning(
                "not every account exists after %g s (an adaptor is not serving): the "
                "connector takes packets now; those for the missing accounts get T00 "
                "until their adaptor serves",
                limit,
            )
        resumed = await side.engine.reconcile()
        if resumed:
            log.info("resumed %d unfinished settlement(s) from before the last stop", resumed)
        spawn("engine outbox", side.engine.run_outbox())

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
        parts: Parts,
        tasks: dict[asyncio.Task[None], str],
    ) -> None:
        """The graceful stop, shielded from a second cancellation of the run."""
        await admin.begin_shutdown()
        connector = _connector_of(parts)
        if connector is not None:
            await connector.stop()  # no new packets while the adaptors stop
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


def _engine_of(parts: Parts) -> EngineSide | None:
    return parts.engine if isinstance(parts, Together | EngineAlone) else None


def _connector_of(parts: Parts) -> Connector | None:
    return parts.connector if isinstance(parts, Together | ConnectorAlone) else None


async def _serve_metrics(
    config: HostConfig, stack: contextlib.AsyncExitStack, parts: Parts, supervisor: Supervisor
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
    engine = _engine_of(parts)
    alone = parts if isinstance(parts, ConnectorAlone) else None
    metrics.attach(
        engine=engine.engine if engine is not None else None,
        store=engine.store if engine is not None else None,
        connector=_connector_of(parts),
        clearing=alone.clearing if alone is not None else None,
        engine_link=alone.engine_link if alone is not None else None,
        link=parts.link if isinstance(parts, EngineAlone) else None,
        supervisor=supervisor,
        reconciler=parts.reconciler if isinstance(parts, Together | ConnectorAlone) else None,
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


async def _housekeeping(parts: Parts) -> None:
    """Forget idempotency keys past their retention (RFC 38: at least 24 hours), hourly: each
    packet records one per side, and without this the databases only grow.

    The first round comes an hour after the start, not at it: an engine back from a long stop
    first replays the connector's unacknowledged changes, whose keys must still be known.
    """
    while True:
        await asyncio.sleep(HOUSEKEEPING_INTERVAL)
        try:
            forgotten = 0
            engine = _engine_of(parts)
            # Instances sharing one database take turns: the leader forgets for all.
            if engine is not None and await engine.store.try_lead():
                forgotten += await engine.engine.forget_idempotency_keys(KEY_RETENTION)
            if isinstance(parts, ConnectorAlone):
                forgotten += await parts.clearing.forget_keys(KEY_RETENTION)
            if forgotten:
                log.info("forgot %d idempotency key(s) older than 24 h", forgotten)
        except StoreError as exc:
            log.warning("idempotency keys not forgotten this time: %s", exc)
