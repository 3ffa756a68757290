"""Real connectors on real sockets for the connector tests: a few hosts peered in one process.

Every host gets a TCP socket bound on 127.0.0.1 port 0 *before* any connector is built, so all
peer URLs are known up front without racing for ports. A host can be left unstarted: its
socket is bound but not listening, so connecting to it is refused (an unreachable peer) until
:meth:`Net.start` starts it on that same socket.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from host.connector import (
    Connector,
    ExpiryPolicy,
    InMemoryClearing,
    LocalHandler,
    MessageRefused,
    PeerConfig,
    RouteConfig,
)
from host.connector.api import ConnectorApi, EngineRelay, PeerMessenger, serve_connector_api
from host.connector.config import Relation
from host.connector.durable_clearing import AccountLimits, DurableClearing
from host.connector.local import exercise_prepare
from host.connector.ports import WithoutJournal
from host.connector.reconciliation import BookReader
from host.ilp import Prepare

#: Long enough on a loaded 2-core machine; tests never wait for it unless they mean to.
LIFETIME = timedelta(seconds=30)


def token(sender: str, receiver: str) -> str:
    """The bearer token ``sender`` presents to ``receiver``."""
    return f"token-{sender}-to-{receiver}"


def address_of(name: str) -> str:
    """The ILP address of host ``name``."""
    return f"test.{name}"


def prepare_to(destination: str, amount: int, *, lifetime: timedelta = LIFETIME) -> Prepare:
    """An exercise Prepare the LocalReceiver at ``destination`` fulfills."""
    return exercise_prepare(destination, amount, datetime.now(UTC) + lifetime)


class RecordingMessages:
    """A SettlementMessagesPort that records messages and answers ``reply(data)``."""

    def __init__(self, reply: Callable[[str, bytes], bytes] | None = None) -> None:
        self.received: list[tuple[str, bytes]] = []
        self._reply = reply or (lambda account, data: b"ack:" + data)

    async def receive(self, account_id: str, data: bytes) -> bytes:
        self.received.append((account_id, data))
        return self._reply(account_id, data)


def refuse(code: str, text: str) -> Callable[[str, bytes], bytes]:
    """A reply function that refuses every message with ``code``."""

    def reply(account_id: str, data: bytes) -> bytes:
        raise MessageRefused(text, code)

    return reply


@dataclass
class Host:
    """One connector with its in-memory engine ports."""

    name: str
    connector: Connector
    clearing: InMemoryClearing
    messages: RecordingMessages
    sock: socket.socket
    started: bool = False


@dataclass(frozen=True)
class Https:
    """HTTPS on every link: what each host serves with, what it checks its peers against."""

    server: ssl.SSLContext
    peers: ssl.SSLContext


@dataclass
class Net:
    """Hosts peered along ``links``; ``hosts[name]``."""

    hosts: dict[str, Host] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Host:
        return self.hosts[name]

    async def start(self, name: str) -> None:
        host = self.hosts[name]
        await host.connector.start()
        host.started = True


@contextlib.asynccontextmanager
async def network(
    links: Sequence[tuple[str, str]],
    *,
    routes: Mapping[str, Sequence[tuple[str, str]]] | None = None,
    limits: Mapping[str, dict[str, tuple[int, int]]] | None = None,
    local_handlers: Mapping[str, LocalHandler] | None = None,
    messages: Mapping[str, RecordingMessages] | None = None,
    expiry: ExpiryPolicy | None = None,
    url_overrides: Mapping[tuple[str, str], str] | None = None,
    token_overrides: Mapping[tuple[str, str], str] | None = None,
    not_started: Sequence[str] = (),
    exchange_routes: bool = False,
    relations: Mapping[tuple[str, str], Relation] | None = None,
    route_interval: float = 30.0,
    without_journal: Sequence[str] = (),
    books: Mapping[str, BookReader] | None = None,
    https: Https | None = None,
) -> AsyncIterator[Net]:
    """Hosts named in ``links`` (pairs peered both ways), started unless in ``not_started``.

    ``routes[host]`` are (prefix, peer) routes of that host; ``limits[host][peer]`` the
    (min, max) clearing limits host keeps for peer; ``url_overrides[(host, peer)]`` replaces
    the URL host uses for peer, ``token_overrides[(host, peer)]`` the token it presents.
    ``relations[(host, peer)]`` is how host sees peer ("peer" when absent); a host that is
    some host's child has no configured address (it learns it by ILDCP). Route broadcast runs
    only with ``exchange_routes`` (every ``route_interval`` seconds), so that other tests see
    only their own packets on the links. The hosts in ``without_journal`` keep no in-flight
    journal (host.connector.ports.WithoutJournal).
    ``books[host]`` lets that host answer peer.reconcile. With ``https`` every host serves
    HTTPS and its peers' URLs are ``https://127.0.0.1:PORT/ilp``.
    """
    relation_of = dict(relations or {})
    children = {peer for (_, peer), relation in relation_of.items() if relation == "child"}
    names = sorted({name for pair in links for name in pair})
    socks: dict[str, socket.socket] = {}
    scheme = "http" if https is None else "https"
    net = Net()
    try:
        for name in names:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            socks[name] = sock
            sock.bind(("127.0.0.1", 0))
        for name in names:
            neighbours = [b if a == name else a for a, b in links if name in (a, b)]
            peers = [
                PeerConfig(
                    id=peer,
                    url=(url_overrides or {}).get(
                        (name, peer),
                        f"{scheme}://127.0.0.1:{socks[peer].getsockname()[1]}/ilp",
                    ),
                    address=None
                    if relation_of.get((name, peer), "peer") == "child" or peer in children
                    else address_of(peer),
                    incoming_token=token(peer, name),
                    outgoing_token=(token_overrides or {}).get((name, peer), token(name, peer)),
                    relation=relation_of.get((name, peer), "peer"),
                    send_routes=exchange_routes,
                    receive_routes=exchange_routes,
                )
                for peer in neighbours
            ]
            clearing = InMemoryClearing((limits or {}).get(name))
            recorder = (messages or {}).get(name) or RecordingMessages()
            connector = Connector(
                None if name in children else address_of(name),
                peers,
                [RouteConfig(p, peer) for p, peer in (routes or {}).get(name, ())],
                WithoutJournal(clearing) if name in without_journal else clearing,
                recorder,
                sock=socks[name],
                expiry_policy=expiry,
                local_handler=(local_handlers or {}).get(name),
                assets={peer: ("XTS", 9) for peer in neighbours},
                route_broadcast_interval=route_interval,
                ildcp_timeout=5.0,
                books=(books or {}).get(name),
                server_tls=https.server if https is not None else None,
                peer_tls=https.peers if https is not None else None,
            )
            net.hosts[name] = Host(name, connector, clearing, recorder, socks[name])
        # Together: a child's start waits for its parent's ILDCP answer.
        await asyncio.gather(*(net.start(name) for name in names if name not in not_started))
        yield net
    finally:
        await asyncio.gather(
            *(host.connector.stop() for host in net.hosts.values()), return_exceptions=True
        )
        for sock in socks.values():
            sock.close()


@dataclass
class ServedApi:
    """A connector's clearing file (a real SQLite file) and its Connector API on a unix socket."""

    directory: Path
    clearing: DurableClearing
    relay: EngineRelay
    address: str


def with_served_api(
    scenario: Callable[[ServedApi], Awaitable[None]],
    messenger: PeerMessenger,
    limits: Mapping[str, AccountLimits],
) -> None:
    """Run ``scenario`` against a Connector API served in a fresh temporary directory."""

    async def main(directory: Path) -> None:
        clearing = await DurableClearing.open(directory / "connector.db", limits)
        relay = EngineRelay(timeout=5)
        address = f"unix:{directory / 'api.sock'}"
        server = await serve_connector_api(ConnectorApi(clearing, relay, messenger), address)
        try:
            await scenario(ServedApi(directory, clearing, relay, address))
        finally:
            await server.stop(None)
            await clearing.close()

    directory = Path(tempfile.mkdtemp(prefix="ilp"))  # short: unix socket paths
    try:
        asyncio.run(main(directory))
    finally:
        shutil.rmtree(directory, ignore_errors=True)
