"""The connector's tables of the host configuration: ``[connector]``, ``[[peer]]``, ``[[route]]``.

:func:`parse_connector_config` takes the parsed TOML document (a dict) and returns a frozen
:class:`ConnectorConfig`, or None when the document has none of the three tables. The tables
are typed on host.config_schema (:class:`ConnectorTables`, which the host's whole document
extends); every problem is a :class:`ConnectorConfigError` naming the key, e.g.
``peer[0].url: must be an http(s) URL, got "ftp://b.example"``; unknown keys are refused.
Pure: no I/O. Example::

    [connector]
    address = "test.alice"      # this host's ILP address
    host = "127.0.0.1"          # where the ILP-over-HTTP server listens
    port = 7768                 # 0 picks a free port
    # tls_cert = "tls/ilp.crt"  # HTTPS: required unless host is a loopback address
    # tls_key = "tls/ilp.key"   # mode 0600
    # peer_ca = "tls/peers.pem" # https peers' certificates are checked against these CAs
    #                           # (PEM) instead of the system's trusted roots
    # expiry_margin = 1.0       # seconds kept off each forwarded Prepare's expiry
    # safety_margin = 1.0       # least time left to forward a Prepare with
    # max_hold = 30.0           # latest expiry of a forwarded Prepare, from now
    # settle_timeout = 30.0     # how long a peer.settle message may take
    # route_broadcast_interval = 30.0  # seconds between CCP route updates (heartbeats)
    # reconcile_interval = 60.0 # seconds between reconciliations with each peer; 0: only
    #                           # on demand (`ilp-host reconcile PEER`)
    # api = "unix:connector.sock"   # `ilp-host connector`: where the Connector API listens
    #                               # (unix:PATH, relative to its state directory, or
    #                               # HOST:PORT with the three keys below)
    # api_tls_cert = "tls/connector.crt"   # required with a TCP api: the engine trusts it
    # api_tls_key = "tls/connector.key"    # mode 0600
    # api_token_file = "tls/connector.token"  # mode 0600: the engine presents it
    # database = "connector.db"   # `ilp-host connector`: its clearing books, a file in its
    #                             # state directory, or a PostgreSQL URL that several
    #                             # connector instances behind one address share
    #                             # ("postgresql://ilp@db/ilp"; docs/operations.md)

    [[peer]]
    id = "bob"                  # the account id in the settlement engine
    url = "http://bob.example:7768/"
    address = "test.bob"        # implicitly a route to this peer
    incoming_token = "..."      # what bob presents to us
    outgoing_token = "..."      # what we present to bob
    # relation = "peer"         # "parent", "child" or "peer" (docs/peering.md)
    # accept_bare_token = false # also accept the token without "Bearer " (ilp-plugin-http's
    #                           # legacy secretToken style)
    # send_routes = true        # CCP: advertise our routes to this peer
    # receive_routes = true     # CCP: learn this peer's routes

A ``child`` has no ``address``: it is ours plus ``"." + address_segment`` (default: its id),
and it learns it from us by ILDCP. For a parent or a peer ``address`` is optional: when given
it is a route to that peer; without it the routes come by route broadcast. The (first)
parent is the default route, and when ``[connector] address`` is left out this host learns
its own address from that parent at start.

    [[route]]
    prefix = "test.carol"       # longest prefix wins; "" is the default route
    peer = "bob"
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal, Self
from urllib.parse import urlsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import Field, PlainValidator, model_validator

from host.config_schema import (
    AccountId,
    Boolean,
    Problem,
    Table,
    Text,
    is_loopback,
    refuse,
    show,
    text,
    validate,
    whole_number,
)
from host.connector.expiry import ExpiryPolicy
from host.connector.reconciliation import DEFAULT_INTERVAL as DEFAULT_RECONCILE_INTERVAL
from host.connector.routing import RouteError, check_prefix
from host.ilp import address
from host.store.opening import is_database_url

#: A bearer token: visible ASCII, no spaces (it goes in an HTTP header).
_TOKEN: Final = re.compile(r"[\x21-\x7e]{8,512}")

#: Where ``ilp-host connector`` serves the Connector API unless ``connector.api`` says.
DEFAULT_API = "unix:connector.sock"
#: Where ``ilp-host connector`` keeps its clearing books unless ``connector.database`` says.
DEFAULT_DATABASE = "connector.db"
#: How a peer stands to this host (ilp-connector's account relations, RFC 0031).
Relation = Literal["parent", "child", "peer"]
RELATIONS: Final[tuple[Relation, ...]] = ("parent", "child", "peer")
#: An address segment (interledger/rfcs 0015).
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~-]{1,128}")


class ConnectorConfigError(Problem):
    """A connector configuration the host refuses; ``key`` says where, ``problem`` what."""


@dataclass(frozen=True)
class PeerConfig:
    """One peer: its account id, where to reach it, its address and the two bearer tokens.

    ``address`` is None for a child (its address derives from ours: :meth:`child_address`)
    and for a parent configured without one.
    """

    id: str
    url: str
    address: str | None
    incoming_token: str = field(repr=False)
    outgoing_token: str = field(repr=False)
    relation: Relation = "peer"
    address_segment: str = ""
    accept_bare_token: bool = False
    send_routes: bool = True
    receive_routes: bool = True

    def child_address(self, own: str) -> str:
        """A child's address under this host's address ``own``."""
        return f"{own}.{self.address_segment or self.id}"


@dataclass(frozen=True)
class RouteConfig:
    """A static route: destinations under ``prefix`` go to ``peer``."""

    prefix: str
    peer: str


@dataclass(frozen=True)
class ApiCredentials:
    """The files of a Connector API on TCP (absolute paths): its TLS certificate (what the
    engine trusts) and key, and the bearer token the engine must present."""

    tls_cert: Path
    tls_key: Path
    token_file: Path


@dataclass(frozen=True)
class ServerTlsFiles:
    """The ILP-over-HTTP server's certificate (chain, PEM) and private key (absolute paths)."""

    cert: Path
    key: Path


@dataclass(frozen=True)
class ConnectorConfig:
    """The whole, checked connector configuration."""

    address: str | None
    port: int
    host: str = "127.0.0.1"
    peers: tuple[PeerConfig, ...] = ()
    routes: tuple[RouteConfig, ...] = ()
    expiry: ExpiryPolicy = field(default_factory=ExpiryPolicy)
    settle_timeout: float = 30.0
    #: The Connector API's address: "unix:PATH" (relative paths: to the connector's state
    #: directory; the socket is 0600 in a 0700 directory) or "HOST:PORT", where TLS and a
    #: bearer token (``api_credentials``) are required: the API moves balances.
    api: str = DEFAULT_API
    #: Seconds between route updates to each peer (CCP heartbeat); routes are held down for
    #: 1.5 times as long.
    route_broadcast_interval: float = 30.0
    api_credentials: ApiCredentials | None = None
    #: Seconds between reconciliations with each peer (host.connector.reconciliation); 0:
    #: only on demand.
    reconcile_interval: float = DEFAULT_RECONCILE_INTERVAL
    #: ``ilp-host connector``'s clearing books: an SQLite file name (relative: to its state
    #: directory) or a PostgreSQL URL (host.store.opening.is_database_url); None when not
    #: configured (:data:`DEFAULT_DATABASE`). ``ilp-host run`` keeps them in the engine's store.
    database: str | None = None
    #: HTTPS for the ILP-over-HTTP server; None: plain HTTP, only on a loopback ``host``.
    tls: ServerTlsFiles | None = None
    #: The CAs (PEM) that https peers' certificates are checked against; None: the system's.
    peer_ca: Path | None = None


# -- the tables' values --------------------------------------------------------------------------


def _ilp_address(value: object) -> str:
    given = text(value)
    if not address.is_valid(given):
        raise refuse(f'must be an ILP address like "test.alice" ({address.why_invalid(given)})')
    if address.is_peer_address(given):
        raise refuse("must not be a peer.* address (those are link-local)")
    return given


def _seconds(minimum: float) -> PlainValidator:
    def check(value: object) -> float:
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)  # nan and inf are not durations
        ):
            raise refuse(f"must be a number of seconds, got {show(value)}")
        if value < minimum:
            raise refuse(f"must be at least {minimum}, got {show(value)}")
        return float(value)

    return PlainValidator(check)


def _api_address(value: object) -> str:
    """``connector.api``: unix:PATH or HOST:PORT."""
    given = text(value)
    if given.startswith("unix:"):
        if not given.removeprefix("unix:"):
            raise refuse("unix: needs a socket path")
        return given
    _host, sep, port = given.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise refuse(f"must be unix:PATH or HOST:PORT, got {show(value)}")
    return given


def _database(value: object) -> str:
    """``connector.database``: a PostgreSQL URL, or a file name (anything without a scheme)."""
    given = text(value)
    if is_database_url(given):
        try:
            conninfo_to_dict(given)
        except psycopg.ProgrammingError as exc:
            raise refuse(f"is not a valid PostgreSQL URL: {str(exc).strip()}") from None
        return given
    if "://" in given:
        scheme = given.split("://", 1)[0]
        raise refuse(
            f'must be a PostgreSQL URL ("postgresql://...") or a file name, got a {scheme}:// URL'
        )
    if not given.strip():
        raise refuse("must be a PostgreSQL URL or a file name, got an empty string")
    return given


def _url(value: object) -> str:
    given = text(value)
    try:
        parts = urlsplit(given)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise refuse(f"must be an http(s) URL, got {show(given)}")
    return given


def _token(value: object) -> str:
    given = text(value)
    if not _TOKEN.fullmatch(given):
        raise refuse(
            f"must be 8 to 512 visible ASCII characters without spaces ({len(given)} given)"
        )
    return given


def _relation(value: object) -> Relation:
    for relation in RELATIONS:
        if value == relation:
            return relation
    raise refuse(f'must be "parent", "child" or "peer", got {show(value)}')


def _route_prefix(value: object) -> str:
    if not isinstance(value, str):  # "" is the default route
        raise refuse(f"must be a string, got {show(value)}")
    try:
        return check_prefix(value)
    except RouteError as exc:
        raise refuse(str(exc)) from None


_IlpAddress = Annotated[str | None, PlainValidator(_ilp_address)]
_ExpirySeconds = Annotated[float, _seconds(0)]
_Token = Annotated[str, PlainValidator(_token), Field(repr=False)]
_DEFAULT_EXPIRY: Final = ExpiryPolicy()


# -- the tables ----------------------------------------------------------------------------------


class ConnectorTable(Table):
    """``[connector]``."""

    address: _IlpAddress = None
    host: Text = "127.0.0.1"
    port: Annotated[int, PlainValidator(whole_number(0, 65535, "0 to 65535"))] = Field(
        description="the TCP port peers POST packets to; 0 picks a free one"
    )
    expiry_margin: _ExpirySeconds = _DEFAULT_EXPIRY.margin.total_seconds()
    safety_margin: _ExpirySeconds = _DEFAULT_EXPIRY.safety_margin.total_seconds()
    max_hold: _ExpirySeconds = _DEFAULT_EXPIRY.max_hold.total_seconds()
    settle_timeout: _ExpirySeconds = 30.0
    api: Annotated[str, PlainValidator(_api_address)] = DEFAULT_API
    route_broadcast_interval: Annotated[float, _seconds(0.1)] = 30.0
    reconcile_interval: Annotated[float, _seconds(0)] = DEFAULT_RECONCILE_INTERVAL
    api_tls_cert: Text | None = None
    api_tls_key: Text | None = None
    api_token_file: Text | None = None
    database: Annotated[str | None, PlainValidator(_database)] = None
    tls_cert: Text | None = None
    tls_key: Text | None = None
    peer_ca: Text | None = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        self._server_tls()
        if self.max_hold <= self.safety_margin:
            raise refuse(
                f"must exceed connector.safety_margin ({self.safety_margin}), got {self.max_hold}",
                "max_hold",
            )
        if self.settle_timeout <= 0:
            raise refuse("must be a positive number", "settle_timeout")
        self._credential_files()
        return self

    def server_tls(self, base_dir: Path) -> ServerTlsFiles | None:
        """The ILP-over-HTTP server's TLS files, relative paths taken from ``base_dir``."""
        files = self._server_tls()
        if files is None:
            return None
        return ServerTlsFiles(*(_under(base_dir, name) for name in files))

    def _server_tls(self) -> tuple[str, str] | None:
        """``tls_cert`` and ``tls_key``: both or neither, and both off loopback.

        On a loopback ``host`` plain HTTP is allowed: what reaches it comes from this machine
        (peers on it, or a TLS-terminating proxy in front), and each request still carries
        its peer's bearer token. Anywhere else those tokens and the packets would cross the
        network in the clear.
        """
        if self.tls_cert is not None and self.tls_key is not None:
            return self.tls_cert, self.tls_key
        if self.tls_cert is not None or self.tls_key is not None:
            missing, given = (
                ("tls_key", "tls_cert") if self.tls_key is None else ("tls_cert", "tls_key")
            )
            raise refuse(f"required with connector.{given} (HTTPS needs both)", missing)
        if not is_loopback(self.host):
            raise refuse(
                f"{show(self.host)} is not a loopback address: serving ILP-over-HTTP beyond this "
                "machine needs connector.tls_cert and connector.tls_key (HTTPS: the peers' "
                "bearer tokens must not cross the network in the clear)",
                "host",
            )
        return None

    def api_credentials(self, base_dir: Path) -> ApiCredentials | None:
        """The Connector API's credentials, relative paths taken from ``base_dir``."""
        files = self._credential_files()
        if files is None:
            return None
        return ApiCredentials(*(_under(base_dir, name) for name in files))

    def _credential_files(self) -> tuple[str, str, str] | None:
        """The TLS files and token of a TCP ``api``: required there, refused elsewhere.

        Loopback is no exception: every local user can connect to a loopback port, and the
        API moves balances (an ApplyBalanceDelta makes the engine pay on the ledger).
        """
        files = {
            "api_tls_cert": self.api_tls_cert,
            "api_tls_key": self.api_tls_key,
            "api_token_file": self.api_token_file,
        }
        if self.api.startswith("unix:"):
            for name, value in files.items():
                if value is not None:
                    raise refuse(
                        "only applies with a TCP connector.api (a unix socket is reached "
                        "through its file mode, 0600)",
                        name,
                    )
            return None
        given = []
        for name, value in files.items():
            if value is None:
                raise refuse(
                    f"required with a TCP connector.api ({self.api}): the Connector API moves "
                    "balances, so on TCP it needs TLS and a bearer token (or use a unix: socket)",
                    name,
                )
            given.append(value)
        cert, key, token = given
        return cert, key, token


class PeerTable(Table):
    """One ``[[peer]]``."""

    # A peer's id is the id of its account.
    id: AccountId = Field(description="its account's id")
    url: Annotated[str, PlainValidator(_url)] = Field(description="where it takes packets")
    address: _IlpAddress = None
    incoming_token: _Token = Field(description="what the peer presents to us")
    outgoing_token: _Token = Field(description="what we present to the peer")
    relation: Annotated[Relation, PlainValidator(_relation)] = "peer"
    address_segment: Annotated[str, PlainValidator(text)] = ""
    accept_bare_token: Boolean = False
    send_routes: Boolean = True
    receive_routes: Boolean = True

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.relation != "child":
            if "address_segment" in self.model_fields_set:
                raise refuse("only applies to a child", "address_segment")
            return self
        if self.address is not None:
            raise refuse(
                "a child has no configured address: it is this host's address + "
                '"." + address_segment (default: the id), and the child learns it by ILDCP',
                "address",
            )
        segment = self.address_segment or self.id
        if not _SEGMENT.fullmatch(segment):
            raise refuse(
                f"must be an address segment (A-Z a-z 0-9 _ ~ -), got {show(segment)}"
                + ("" if self.address_segment else " (from the id: set one)"),
                "address_segment",
            )
        return self


class RouteTable(Table):
    """One ``[[route]]``."""

    prefix: Annotated[str, PlainValidator(_route_prefix)] = Field(
        description='the destinations it covers; "" is the default route'
    )
    peer: Text = Field(description="the id of the peer they go to")


class ConnectorTables(Table):
    """The connector's tables of a config file; the host's document extends it."""

    connector: ConnectorTable | None = None
    peer: tuple[PeerTable, ...] = ()
    route: tuple[RouteTable, ...] = ()


# -- the checked configuration -------------------------------------------------------------------


def _under(base_dir: Path, name: str) -> Path:
    """A file the tables name, a relative path taken from ``base_dir``, without ``.``/``..``."""
    return Path(os.path.normpath(base_dir / name))


def parse_connector_config(
    document: Mapping[str, Any], base_dir: Path = Path(".")
) -> ConnectorConfig | None:
    """The connector configuration of a parsed TOML document, or None if it has none.

    Relative paths (the TLS files and the Connector API's credentials) are taken from
    ``base_dir``."""
    tables = {name: document[name] for name in ConnectorTables.model_fields if name in document}
    try:
        return connector_config(validate(ConnectorTables, tables), base_dir)
    except Problem as exc:
        raise ConnectorConfigError(exc.key, exc.problem) from None


def connector_config(tables: ConnectorTables, base_dir: Path) -> ConnectorConfig | None:
    """The configuration of validated tables, checked across them; None if there are none."""
    given = tables.model_fields_set & set(ConnectorTables.model_fields)
    if not given:
        return None
    table = tables.connector
    if table is None:
        name = "peer" if "peer" in given else "route"
        raise ConnectorConfigError(
            name, "needs a [connector] table (this host's ILP address and port)"
        )
    peers = _peers(tables.peer, table.address)
    if table.address is None and not any(peer.relation == "parent" for peer in peers):
        raise ConnectorConfigError(
            "connector.address",
            "missing (this host's ILP address; it may be left out only when a [[peer]] has "
            'relation = "parent", from which the host then learns it by ILDCP)',
        )
    return ConnectorConfig(
        address=table.address,
        port=table.port,
        host=table.host,
        peers=peers,
        routes=_routes(tables.route, {peer.id for peer in peers}),
        expiry=ExpiryPolicy(
            margin=timedelta(seconds=table.expiry_margin),
            safety_margin=timedelta(seconds=table.safety_margin),
            max_hold=timedelta(seconds=table.max_hold),
        ),
        settle_timeout=table.settle_timeout,
        api=table.api,
        api_credentials=table.api_credentials(base_dir),
        route_broadcast_interval=table.route_broadcast_interval,
        reconcile_interval=table.reconcile_interval,
        database=table.database,
        tls=table.server_tls(base_dir),
        peer_ca=None if table.peer_ca is None else _under(base_dir, table.peer_ca),
    )


def _peers(tables: tuple[PeerTable, ...], own: str | None) -> tuple[PeerConfig, ...]:
    ids: dict[str, str] = {}
    addresses: dict[str, str] = {}
    tokens: dict[str, str] = {}
    peers: list[PeerConfig] = []
    for index, table in enumerate(tables):
        key = f"peer[{index}]"
        _unique(ids, table.id, f"{key}.id", "peer id")
        if table.address is not None:
            if table.address == own:
                raise ConnectorConfigError(f"{key}.address", "is this host's own address")
            _unique(addresses, table.address, f"{key}.address", "peer address")
        _unique(tokens, table.incoming_token, f"{key}.incoming_token", "incoming token")
        peers.append(
            PeerConfig(
                table.id,
                table.url,
                table.address,
                table.incoming_token,
                table.outgoing_token,
                relation=table.relation,
                address_segment=(table.address_segment or table.id)
                if table.relation == "child"
                else "",
                accept_bare_token=table.accept_bare_token,
                send_routes=table.send_routes,
                receive_routes=table.receive_routes,
            )
        )
    return tuple(peers)


def _routes(tables: tuple[RouteTable, ...], peer_ids: set[str]) -> tuple[RouteConfig, ...]:
    prefixes: dict[str, str] = {}
    for index, table in enumerate(tables):
        key = f"route[{index}]"
        _unique(prefixes, table.prefix, f"{key}.prefix", "route prefix")
        if table.peer not in peer_ids:
            known = ", ".join(sorted(peer_ids)) or "none configured"
            raise ConnectorConfigError(
                f"{key}.peer", f"no peer has id {show(table.peer)} ({known})"
            )
    return tuple(RouteConfig(table.prefix, table.peer) for table in tables)


def _unique(seen: dict[str, str], value: str, key: str, what: str) -> None:
    if value in seen:
        shown = "" if "token" in what else f" {show(value)}"
        raise ConnectorConfigError(key, f"duplicate {what}{shown} (also {seen[value]})")
    seen[value] = key
