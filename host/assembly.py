"""The parts of each deployment mode, assembled: one typed object per mode, nothing optional
that the mode always has (see docs/architecture.md).

- :func:`assemble_run` (``ilp-host run``, proposal 1): the engine in the connector's process,
  its ClearingPort and SettlementMessagesPort by plain calls (:class:`Together`); without any
  account, the adaptors alone (:class:`AdaptorsOnly`).
- :func:`assemble_engine` (``ilp-host engine``, proposal 2): the engine, bound to a connector
  process through the Connector API (:class:`EngineAlone`).
- :func:`assemble_connector` (``ilp-host connector``, proposal 2): the connector with its own
  durable clearing file, serving the Connector API to an engine (:class:`ConnectorAlone`).

Each assembler opens its parts in order and registers each one's teardown on the given exit
stack; nothing listens for packets yet (host.app starts them in order). Each part is built
with all it needs: nothing is patched on after construction.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import grpc

from host.admin.connector_admin import BalanceReader
from host.binding import EngineBinding, EngineServicer, PeerMessenger
from host.config import HostConfig
from host.connector.api import ConnectorApi, EngineRelay, serve_connector_api
from host.connector.config import DEFAULT_DATABASE, ConnectorConfig
from host.connector.connector import Connector
from host.connector.durable_clearing import AccountLimits, DurableClearing
from host.connector.ports import UnknownPeer
from host.connector.reconciliation import Reconciler
from host.credentials import ServerTls
from host.engine import AdaptorRegistry, Engine, EngineError
from host.engine.store import Store
from host.pb.ilphost.admin.v1 import admin_pb2
from host.remote_connector import RemoteConnector, channel_to
from host.store import StoreError
from host.store.opening import describe_database, is_database_url, open_store
from sdk.pb.ilphost.engine.v1 import engine_pb2_grpc

log = logging.getLogger("ilp_host")

#: The Engine service for the adaptors, in the state directory.
ENGINE_SOCKET = "engine.sock"


class AssemblyError(RuntimeError):
    """A part cannot be opened (database, socket, Connector API address); the message says
    which and why."""


@dataclass(frozen=True)
class LinkTls:
    """The TLS of the ILP-over-HTTP links, made of ``[connector]``'s files: the server's
    (None: plain HTTP, on loopback only) and what ``https`` peers are checked against (None:
    the system's trusted roots)."""

    server: ssl.SSLContext | None = None
    peers: ssl.SSLContext | None = None


#: Plain HTTP, and the system's trusted roots for ``https`` peers.
PLAIN_LINKS: Final = LinkTls()


@dataclass(frozen=True)
class EngineSide:
    """The engine and what binds it to the adaptors."""

    store: Store
    engine: Engine
    binding: EngineBinding
    #: The Engine service the adaptors call (ILP_HOST_ENGINE_ADDR).
    address: str


@dataclass(frozen=True)
class AdaptorsOnly:
    """``ilp-host run`` without accounts: the adaptors' supervision, no engine."""


@dataclass(frozen=True)
class Together:
    """``ilp-host run`` (proposal 1): the engine, and the connector over it when peered."""

    engine: EngineSide
    #: None without ``[connector]``: the engine settles, nothing carries packets.
    connector: Connector | None
    #: With the connector: reconciliation with its peers (host.connector.reconciliation).
    reconciler: Reconciler | None

    def balance(self) -> BalanceReader:
        """A peer's clearing balance for the admin API: the engine's."""
        return partial(_engine_balance, self.engine.engine)

    def engine_link(self) -> admin_pb2.EngineLink:
        """Where the engine runs, for the admin API: here, in this process."""
        return admin_pb2.EngineLink()


@dataclass(frozen=True)
class EngineAlone:
    """``ilp-host engine`` (proposal 2): the engine and its link to the connector process."""

    engine: EngineSide
    link: RemoteConnector


@dataclass(frozen=True)
class ConnectorAlone:
    """``ilp-host connector`` (proposal 2): the connector, its clearing file and the relay
    through which the engine process answers ``peer.settle`` messages."""

    connector: Connector
    clearing: DurableClearing
    relay: EngineRelay
    reconciler: Reconciler

    def balance(self) -> BalanceReader:
        """A peer's clearing balance for the admin API: the connector's own."""
        return partial(_clearing_balance, self.clearing)

    def engine_link(self) -> admin_pb2.EngineLink:
        """Where the engine runs and how far it follows, for the admin API."""
        link = admin_pb2.EngineLink(
            external=True,
            connected=self.relay.connected,
            unacknowledged=self.clearing.last_cursor - self.clearing.acknowledged,
            last_cursor=self.clearing.last_cursor,
        )
        if self.relay.since is not None:
            link.since.FromDatetime(self.relay.since)
        return link


#: What one process runs besides the supervisor, the admin API and health.
Parts = AdaptorsOnly | Together | EngineAlone | ConnectorAlone


async def assemble_run(
    config: HostConfig, stack: contextlib.AsyncExitStack, links: LinkTls = PLAIN_LINKS
) -> AdaptorsOnly | Together:
    """Proposal 1: the engine's store, the engine, the connector (not yet listening), the
    Engine service."""
    if config.database is None:
        return AdaptorsOnly()
    store, engine, binding = await _open_engine(
        config, stack, on_clearing_effect=None, connector_in_step=None
    )
    connector = None
    reconciler = None
    if config.connector is not None:
        connector = Connector.from_config(
            config.connector,
            binding.clearing(),
            binding.settlement_messages(),
            assets=assets(config),
            books=engine.clearing_book,
            server_tls=links.server,
            peer_tls=links.peers,
        )
        stack.push_async_callback(connector.stop)
        reconciler = _reconciler(connector, config.connector)
    address = await _serve_engine(config, stack, connector)
    return Together(EngineSide(store, engine, binding, address), connector, reconciler)


async def assemble_engine(
    config: HostConfig,
    stack: contextlib.AsyncExitStack,
    connector_address: str,
    tls: ServerTls | None,
) -> EngineAlone:
    """Proposal 2, engine side: the store, the engine (journaling its clearing effects), the
    link to the connector process (not yet following it), the Engine service."""
    if not connector_address.startswith("unix:") and tls is None:
        raise AssemblyError(
            f"the Connector API at {connector_address} is on TCP: the engine needs "
            "connector.api_tls_cert and connector.api_token_file in the config to "
            "reach it (TLS and the bearer token)"
        )
    # Set by the engine after each clearing effect it journals; the link then pushes them.
    effects = asyncio.Event()
    # Set by the link while the engine has applied its connector's log: the engine credits
    # incoming settlements only then.
    in_step = asyncio.Event()
    store, engine, binding = await _open_engine(
        config, stack, on_clearing_effect=effects.set, connector_in_step=in_step
    )
    channel = channel_to(connector_address, tls)
    stack.push_async_callback(channel.close, None)
    peering = config.connector
    link = RemoteConnector(
        engine,
        store,
        channel,
        binding.settlement_messages(),
        effects=effects,
        address=connector_address,
        send_timeout=peering.settle_timeout if peering is not None else 30.0,
        in_step=in_step,
    )
    address = await _serve_engine(config, stack, link)
    return EngineAlone(EngineSide(store, engine, binding, address), link)


async def assemble_connector(
    config: HostConfig,
    stack: contextlib.AsyncExitStack,
    tls: ServerTls | None,
    links: LinkTls = PLAIN_LINKS,
) -> ConnectorAlone:
    """Proposal 2, connector side: the clearing file, the connector (not yet listening),
    the Connector API (serving at once: the engine may connect before packets flow)."""
    peering = config.connector
    assert peering is not None  # checked by host.config.for_role
    limits = {
        account.id: AccountLimits(
            account.asset_scale, account.policy.min_balance, account.policy.max_balance
        )
        for account in config.accounts
    }
    books = peering.database or DEFAULT_DATABASE
    database = books if is_database_url(books) else config.state_dir / books
    try:
        clearing = await DurableClearing.open(database, limits)
    except StoreError as exc:
        raise AssemblyError(
            f"cannot open the connector's clearing books {describe_database(database)}: {exc}"
        ) from exc
    stack.push_async_callback(clearing.close)
    relay = EngineRelay(timeout=peering.settle_timeout)
    connector = Connector.from_config(
        peering,
        clearing,
        relay,
        assets=assets(config),
        books=clearing.clearing_book,
        server_tls=links.server,
        peer_tls=links.peers,
    )
    stack.push_async_callback(connector.stop)
    address = peering.api
    if address.startswith("unix:"):
        socket = config.state_dir / address.removeprefix("unix:")
        with contextlib.suppress(FileNotFoundError):
            socket.unlink()  # left by a connector that died; we hold the state lock
        address = f"unix:{socket}"
    try:
        server = await serve_connector_api(ConnectorApi(clearing, relay, connector), address, tls)
    except (RuntimeError, ValueError, OSError) as exc:
        raise AssemblyError(f"cannot serve the Connector API on {address}: {exc}") from exc
    stack.push_async_callback(server.stop, 1.0)
    log.info(
        "Connector API on %s%s (ilp-host engine --connector %s)",
        address,
        " (TLS, bearer token)" if tls is not None else "",
        address,
    )
    return ConnectorAlone(connector, clearing, relay, _reconciler(connector, peering))


def _reconciler(connector: Connector, peering: ConnectorConfig) -> Reconciler:
    """Reconciliation with every configured peer (host.connector.reconciliation)."""
    return Reconciler(
        connector, [peer.id for peer in peering.peers], interval=peering.reconcile_interval
    )


def assets(config: HostConfig) -> dict[str, tuple[str, int]]:
    """Each account's asset, for the ILDCP answers to children."""
    return {account.id: (account.asset_code, account.asset_scale) for account in config.accounts}


async def _engine_balance(engine: Engine, account_id: str) -> tuple[int, int] | None:
    try:
        account = (await engine.get_account(account_id)).account
    except EngineError:
        return None
    return account.balance, account.asset_scale


async def _clearing_balance(clearing: DurableClearing, account_id: str) -> tuple[int, int] | None:
    try:
        return await clearing.balance(account_id), clearing.limits(account_id).asset_scale
    except UnknownPeer:
        return None


async def _open_engine(
    config: HostConfig,
    stack: contextlib.AsyncExitStack,
    *,
    on_clearing_effect: Callable[[], None] | None,
    connector_in_step: asyncio.Event | None,
) -> tuple[Store, Engine, EngineBinding]:
    """The engine's store (opened and migrated), the engine, and its binding to the adaptors.
    ``on_clearing_effect``, ``connector_in_step``: proposal 2, the engine journals what it
    does to a balance, and credits incoming settlements once in step with its connector."""
    assert config.database is not None
    try:
        store = await open_store(config.database)
    except StoreError as exc:
        raise AssemblyError(
            f"cannot open the engine database {describe_database(config.database)}: {exc}"
        ) from exc
    stack.push_async_callback(store.close)
    engine = Engine(
        store,
        AdaptorRegistry(),
        lease=config.outbox_lease,
        journal_clearing=on_clearing_effect is not None,
        on_clearing_effect=on_clearing_effect,
        connector_in_step=connector_in_step,
    )
    return store, engine, EngineBinding(engine, config.accounts)


async def _serve_engine(
    config: HostConfig,
    stack: contextlib.AsyncExitStack,
    messenger: PeerMessenger | None,
) -> str:
    """Serve the Engine service to the adaptors on a private socket; its address."""
    server = grpc.aio.server()
    engine_pb2_grpc.add_EngineServicer_to_server(EngineServicer(config.accounts, messenger), server)
    socket = config.state_dir / ENGINE_SOCKET
    with contextlib.suppress(FileNotFoundError):
        socket.unlink()  # left by a host that died; we hold the state lock
    if server.add_insecure_port(f"unix:{socket}") == 0:
        raise AssemblyError(f"cannot listen on the engine socket {socket}")
    os.chmod(socket, 0o600)
    await server.start()
    stack.push_async_callback(server.stop, 1.0)
    return f"unix:{socket}"
