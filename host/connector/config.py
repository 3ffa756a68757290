"""The connector's tables of the host configuration: ``[connector]``, ``[[peer]]``, ``[[route]]``.

:func:`parse_connector_config` takes the parsed TOML document (a dict) and returns a frozen
:class:`ConnectorConfig`, or None when the document has none of the three tables. Every
problem is a :class:`ConnectorConfigError` naming the key, e.g.
``peer[0].url: must be an http(s) URL, got "ftp://b.example"``; unknown keys are refused.
Pure: no I/O. Example::

    [connector]
    address = "test.alice"      # this host's ILP address
    host = "127.0.0.1"          # where the ILP-over-HTTP server listens
    port = 7768                 # 0 picks a free port
    # expiry_margin = 1.0       # seconds kept off each forwarded Prepare's expiry
    # safety_margin = 1.0       # least time left to forward a Prepare with
    # max_hold = 30.0           # latest expiry of a forwarded Prepare, from now
    # settle_timeout = 30.0     # how long a peer.settle message may take
    # route_broadcast_interval = 30.0  # seconds between CCP route updates (heartbeats)
    # api = "unix:connector.sock"   # `ilp-host connector`: where the Connector API listens
    #                               # (unix:PATH, relative to its state directory, or
    #                               # HOST:PORT with the three keys below)
    # api_tls_cert = "tls/connector.crt"   # required with a TCP api: the engine trusts it
    # api_tls_key = "tls/connector.key"    # mode 0600
    # api_token_file = "tls/connector.token"  # mode 0600: the engine presents it

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

import difflib
import json
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from host.connector.expiry import ExpiryPolicy
from host.connector.routing import RouteError, check_prefix
from host.ilp import address
from sdk import contract

#: An account id, as the settlement engine accepts it.
#: A bearer token: visible ASCII, no spaces (it goes in an HTTP header).
_TOKEN: Final = re.compile(r"[\x21-\x7e]{8,512}")

#: What a Connector API on TCP requires: TLS, and the bearer token the engine presents.
_API_CREDENTIAL_KEYS: Final = ("api_tls_cert", "api_tls_key", "api_token_file")
_CONNECTOR_KEYS: Final = (
    *("address", "host", "port"),
    *("expiry_margin", "safety_margin", "max_hold", "settle_timeout", "api"),
    "route_broadcast_interval",
    *_API_CREDENTIAL_KEYS,
)
#: Where ``ilp-host connector`` serves the Connector API unless ``connector.api`` says.
DEFAULT_API = "unix:connector.sock"
_PEER_KEYS: Final = (
    *("id", "url", "address", "incoming_token", "outgoing_token", "relation"),
    *("address_segment", "accept_bare_token", "send_routes", "receive_routes"),
)
_REQUIRED_PEER_KEYS: Final = ("id", "url", "incoming_token", "outgoing_token")
#: How a peer stands to this host (ilp-connector's account relations, RFC 0031).
Relation = Literal["parent", "child", "peer"]
RELATIONS: Final[tuple[Relation, ...]] = ("parent", "child", "peer")
#: An address segment (interledger/rfcs 0015).
_SEGMENT: Final = re.compile(r"[A-Za-z0-9_~-]{1,128}")
_ROUTE_KEYS: Final = ("prefix", "peer")


class ConnectorConfigError(ValueError):
    """A connector configuration the host refuses; ``key`` says where."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


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


def parse_connector_config(
    document: Mapping[str, Any], base_dir: Path = Path(".")
) -> ConnectorConfig | None:
    """The connector configuration of a parsed TOML document, or None if it has none.

    Relative paths (the Connector API's credentials) are taken from ``base_dir``."""
    if not any(name in document for name in ("connector", "peer", "route")):
        return None
    if "connector" not in document:
        name = "peer" if "peer" in document else "route"
        raise ConnectorConfigError(
            name, "needs a [connector] table (this host's ILP address and port)"
        )
    table = _table("connector", document["connector"])
    _known_keys("connector", table, _CONNECTOR_KEYS)
    own = _ilp_address("connector.address", table["address"]) if "address" in table else None
    if "port" not in table:
        raise ConnectorConfigError(
            "connector.port", "missing (the TCP port peers POST packets to; 0 picks a free one)"
        )
    port = table["port"]
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConnectorConfigError("connector.port", f"must be 0 to 65535, got {_show(port)}")
    host = _string("connector.host", table.get("host", "127.0.0.1"))
    defaults = ExpiryPolicy()
    margin = _seconds("connector.expiry_margin", table, defaults.margin, minimum=0)
    safety = _seconds("connector.safety_margin", table, defaults.safety_margin, minimum=0)
    max_hold = _seconds("connector.max_hold", table, defaults.max_hold, minimum=0)
    if max_hold <= safety:
        raise ConnectorConfigError(
            "connector.max_hold",
            f"must exceed connector.safety_margin ({safety.total_seconds()}), "
            f"got {max_hold.total_seconds()}",
        )
    settle_timeout = _seconds("connector.settle_timeout", table, timedelta(seconds=30), minimum=0)
    if settle_timeout <= timedelta(0):
        raise ConnectorConfigError("connector.settle_timeout", "must be a positive number")
    api = _api_address(table.get("api", DEFAULT_API))
    credentials = _api_credentials(table, api, base_dir)
    interval = _seconds(
        "connector.route_broadcast_interval", table, timedelta(seconds=30), minimum=0.1
    )
    peers = _peers(document.get("peer", []), own)
    if own is None and not any(peer.relation == "parent" for peer in peers):
        raise ConnectorConfigError(
            "connector.address",
            "missing (this host's ILP address; it may be left out only when a [[peer]] has "
            'relation = "parent", from which the host then learns it by ILDCP)',
        )
    routes = _routes(document.get("route", []), {peer.id for peer in peers})
    return ConnectorConfig(
        address=own,
        port=port,
        host=host,
        peers=peers,
        routes=routes,
        expiry=ExpiryPolicy(margin=margin, safety_margin=safety, max_hold=max_hold),
        settle_timeout=settle_timeout.total_seconds(),
        api=api,
        api_credentials=credentials,
        route_broadcast_interval=interval.total_seconds(),
    )


def _api_address(value: object) -> str:
    """``connector.api``: unix:PATH or HOST:PORT."""
    text = _string("connector.api", value)
    if text.startswith("unix:"):
        if not text.removeprefix("unix:"):
            raise ConnectorConfigError("connector.api", "unix: needs a socket path")
        return text
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not port.isdigit() or not 0 < int(port) <= 65535:
        raise ConnectorConfigError(
            "connector.api", f"must be unix:PATH or HOST:PORT, got {_show(value)}"
        )
    return text


def _api_credentials(table: Mapping[str, Any], api: str, base_dir: Path) -> ApiCredentials | None:
    """The TLS files and token of a TCP ``connector.api``: required there, refused elsewhere.

    Loopback is no exception: every local user can connect to a loopback port, and the API
    moves balances (an ApplyBalanceDelta makes the engine pay on the ledger).
    """
    if api.startswith("unix:"):
        for key in _API_CREDENTIAL_KEYS:
            if key in table:
                raise ConnectorConfigError(
                    f"connector.{key}",
                    "only applies with a TCP connector.api (a unix socket is reached through "
                    "its file mode, 0600)",
                )
        return None
    paths = []
    for key in _API_CREDENTIAL_KEYS:
        if key not in table:
            raise ConnectorConfigError(
                f"connector.{key}",
                f"required with a TCP connector.api ({api}): the Connector API moves balances, "
                "so on TCP it needs TLS and a bearer token (or use a unix: socket)",
            )
        paths.append(Path(os.path.normpath(base_dir / _string(f"connector.{key}", table[key]))))
    return ApiCredentials(*paths)


def _peers(raw: object, own: str | None) -> tuple[PeerConfig, ...]:
    if not isinstance(raw, list):
        raise ConnectorConfigError("peer", "must be an array of tables: write [[peer]]")
    peers: list[PeerConfig] = []
    ids: dict[str, str] = {}
    addresses: dict[str, str] = {}
    tokens: dict[str, str] = {}
    for index, item in enumerate(raw):
        key = f"peer[{index}]"
        table = _table(key, item)
        _known_keys(key, table, _PEER_KEYS)
        for name in _REQUIRED_PEER_KEYS:
            if name not in table:
                raise ConnectorConfigError(f"{key}.{name}", "missing")
        peer_id = _string(f"{key}.id", table["id"])
        # A peer's id is the id of its account: the contract's account grammar.
        if not contract.is_account_id(peer_id):
            raise ConnectorConfigError(
                f"{key}.id", f"must be {contract.ACCOUNT_ID_RULE}, got {_show(peer_id)}"
            )
        _unique(ids, peer_id, f"{key}.id", "peer id")
        url = _url(f"{key}.url", table["url"])
        relation = table.get("relation", "peer")
        if relation not in RELATIONS:
            raise ConnectorConfigError(
                f"{key}.relation", f'must be "parent", "child" or "peer", got {_show(relation)}'
            )
        segment = ""
        peer_address: str | None = None
        if relation == "child":
            if "address" in table:
                raise ConnectorConfigError(
                    f"{key}.address",
                    "a child has no configured address: it is this host's address + "
                    '"." + address_segment (default: the id), and the child learns it by ILDCP',
                )
            segment = _string(f"{key}.address_segment", table.get("address_segment", peer_id))
            if not _SEGMENT.fullmatch(segment):
                raise ConnectorConfigError(
                    f"{key}.address_segment",
                    f"must be an address segment (A-Z a-z 0-9 _ ~ -), got {_show(segment)}"
                    + ("" if "address_segment" in table else " (from the id: set one)"),
                )
        else:
            if "address_segment" in table:
                raise ConnectorConfigError(f"{key}.address_segment", "only applies to a child")
            if "address" in table:
                peer_address = _ilp_address(f"{key}.address", table["address"])
        if peer_address is not None:
            if peer_address == own:
                raise ConnectorConfigError(f"{key}.address", "is this host's own address")
            _unique(addresses, peer_address, f"{key}.address", "peer address")
        incoming = _token(f"{key}.incoming_token", table["incoming_token"])
        _unique(tokens, incoming, f"{key}.incoming_token", "incoming token")
        outgoing = _token(f"{key}.outgoing_token", table["outgoing_token"])
        flags = {
            name: _boolean(f"{key}.{name}", table.get(name, default))
            for name, default in (
                ("accept_bare_token", False),
                ("send_routes", True),
                ("receive_routes", True),
            )
        }
        peers.append(
            PeerConfig(
                peer_id,
                url,
                peer_address,
                incoming,
                outgoing,
                relation=relation,
                address_segment=segment,
                **flags,
            )
        )
    return tuple(peers)


def _routes(raw: object, peer_ids: set[str]) -> tuple[RouteConfig, ...]:
    if not isinstance(raw, list):
        raise ConnectorConfigError("route", "must be an array of tables: write [[route]]")
    routes: list[RouteConfig] = []
    prefixes: dict[str, str] = {}
    for index, item in enumerate(raw):
        key = f"route[{index}]"
        table = _table(key, item)
        _known_keys(key, table, _ROUTE_KEYS)
        for name in _ROUTE_KEYS:
            if name not in table:
                raise ConnectorConfigError(f"{key}.{name}", "missing")
        prefix = table["prefix"]
        if not isinstance(prefix, str):
            raise ConnectorConfigError(f"{key}.prefix", f"must be a string, got {_show(prefix)}")
        try:
            check_prefix(prefix)
        except RouteError as exc:
            raise ConnectorConfigError(f"{key}.prefix", str(exc)) from None
        _unique(prefixes, prefix, f"{key}.prefix", "route prefix")
        peer = _string(f"{key}.peer", table["peer"])
        if peer not in peer_ids:
            known = ", ".join(sorted(peer_ids)) or "none configured"
            raise ConnectorConfigError(f"{key}.peer", f"no peer has id {_show(peer)} ({known})")
        routes.append(RouteConfig(prefix, peer))
    return tuple(routes)


# -- value checks --------------------------------------------------------------------------


def _unique(seen: dict[str, str], value: str, key: str, what: str) -> None:
    if value in seen:
        shown = "" if "token" in what else f" {_show(value)}"
        raise ConnectorConfigError(key, f"duplicate {what}{shown} (also {seen[value]})")
    seen[value] = key


def _known_keys(key: str, table: Mapping[str, object], known: tuple[str, ...]) -> None:
    for name in table:
        if name not in known:
            hint = difflib.get_close_matches(name, known, n=1)
            advice = f"did you mean {hint[0]!r}?" if hint else f"known: {', '.join(known)}"
            raise ConnectorConfigError(f"{key}.{name}", f"unknown key ({advice})")


def _table(key: str, value: object) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConnectorConfigError(key, f"must be a table, got {_show(value)}")
    return value


def _string(key: str, value: object) -> str:
    if not isinstance(value, str):
        raise ConnectorConfigError(key, f"must be a string, got {_show(value)}")
    if not value:
        raise ConnectorConfigError(key, "must not be empty")
    return value


def _ilp_address(key: str, value: object) -> str:
    text = _string(key, value)
    if not address.is_valid(text):
        raise ConnectorConfigError(
            key, f'must be an ILP address like "test.alice" ({address.why_invalid(text)})'
        )
    if address.is_peer_address(text):
        raise ConnectorConfigError(key, "must not be a peer.* address (those are link-local)")
    return text


def _boolean(key: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ConnectorConfigError(key, f"must be true or false, got {_show(value)}")
    return value


def _url(key: str, value: object) -> str:
    text = _string(key, value)
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018  (raises ValueError for a port that is not a number)
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConnectorConfigError(key, f"must be an http(s) URL, got {_show(text)}")
    return text


def _token(key: str, value: object) -> str:
    text = _string(key, value)
    if not _TOKEN.fullmatch(text):
        raise ConnectorConfigError(
            key, f"must be 8 to 512 visible ASCII characters without spaces ({len(text)} given)"
        )
    return text


def _seconds(key: str, table: Mapping[str, Any], default: timedelta, minimum: float) -> timedelta:
    value = table.get(key.rpartition(".")[2], default.total_seconds())
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ConnectorConfigError(key, f"must be a number of seconds, got {_show(value)}")
    if value < minimum:
        raise ConnectorConfigError(key, f"must be at least {minimum}, got {_show(value)}")
    return timedelta(seconds=value)


def _show(value: object) -> str:
    """A value as the TOML author wrote it (strings quoted), for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value[:80], ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "an array"
    return type(value).__name__
