"""The [connector] / [[peer]] / [[route]] tables: a good document, and every refusal naming
its key."""

from __future__ import annotations

import tomllib
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from host.config import ConfigError, load_config
from host.connector import (
    ConnectorConfig,
    ConnectorConfigError,
    ExpiryPolicy,
    PeerConfig,
    RouteConfig,
    parse_connector_config,
)
from host.connector.config import ServerTlsFiles

GOOD = """
[connector]
address = "test.alice"
host = "0.0.0.0"
port = 7768
tls_cert = "tls/ilp.crt"
tls_key = "tls/ilp.key"
expiry_margin = 0.5
max_hold = 20

[[peer]]
id = "bob"
url = "http://bob.example:7768/ilp"
address = "test.bob"
incoming_token = "bob-to-alice-secret"
outgoing_token = "alice-to-bob-secret"

[[peer]]
id = "carol.eu"
url = "https://[::1]:8443/"
address = "g.carol"
incoming_token = "carol-to-alice-secret"
outgoing_token = "alice-to-carol-secret"

[[route]]
prefix = "test.dave"
peer = "bob"

[[route]]
prefix = ""
peer = "carol.eu"
"""


def document(text: str = GOOD) -> dict[str, Any]:
    return tomllib.loads(text)


def test_a_good_document() -> None:
    config = parse_connector_config(document())
    assert config == ConnectorConfig(
        address="test.alice",
        port=7768,
        host="0.0.0.0",
        peers=(
            PeerConfig(
                "bob",
                "http://bob.example:7768/ilp",
                "test.bob",
                "bob-to-alice-secret",
                "alice-to-bob-secret",
            ),
            PeerConfig(
                "carol.eu",
                "https://[::1]:8443/",
                "g.carol",
                "carol-to-alice-secret",
                "alice-to-carol-secret",
            ),
        ),
        routes=(RouteConfig("test.dave", "bob"), RouteConfig("", "carol.eu")),
        expiry=ExpiryPolicy(
            margin=timedelta(seconds=0.5),
            safety_margin=timedelta(seconds=1),
            max_hold=timedelta(seconds=20),
        ),
        settle_timeout=30.0,
        tls=ServerTlsFiles(Path("tls/ilp.crt"), Path("tls/ilp.key")),
    )
    assert "secret" not in repr(config)  # tokens stay out of logs


def test_no_connector_tables_is_none_and_defaults_apply() -> None:
    assert parse_connector_config({"host": {}, "adaptor": []}) is None
    minimal = parse_connector_config({"connector": {"address": "test.a", "port": 0}})
    assert minimal == ConnectorConfig(address="test.a", port=0)


def test_reconciliation_every_interval_or_only_on_demand() -> None:
    assert parse_connector_config(document()).reconcile_interval == 60.0  # the default
    for seconds in (5, 0.5, 0):  # 0: only on demand
        config = parse_connector_config(edit("connector.reconcile_interval", seconds))
        assert config is not None and config.reconcile_interval == seconds


def edit(path: str, value: object) -> dict[str, Any]:
    """The good document with one value replaced (or removed, for value ...)."""
    doc = document()
    *parents, last = path.split(".")
    node: Any = doc
    for part in parents:
        node = node[int(part)] if part.isdigit() else node[part]
    if value is ...:
        del node[last]
    else:
        node[last] = value
    return doc


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        ("connector.address", ..., "connector.address: missing"),
        ("connector.address", "alice", 'connector.address: must be an ILP address like "test'),
        ("connector.address", "peer.settle", "connector.address: must not be a peer.* address"),
        ("connector.port", ..., "connector.port: missing"),
        ("connector.port", 70000, "connector.port: must be 0 to 65535, got 70000"),
        ("connector.port", "80", 'connector.port: must be 0 to 65535, got "80"'),
        ("connector.port", True, "connector.port: must be 0 to 65535, got true"),
        ("connector.host", "", "connector.host: must not be empty"),
        ("connector.tls_cert", ..., "connector.tls_cert: required with connector.tls_key"),
        ("connector.tls_key", ..., "connector.tls_key: required with connector.tls_cert"),
        ("connector.tls_key", 5, "connector.tls_key: must be a string, got 5"),
        ("connector.peer_ca", "", "connector.peer_ca: must not be empty"),
        ("connector.expiry_margin", -1, "connector.expiry_margin: must be at least 0"),
        ("connector.safety_margin", "1s", "connector.safety_margin: must be a number of seconds"),
        ("connector.max_hold", float("inf"), "connector.max_hold: must be a number of seconds"),
        ("connector.max_hold", 0.5, "connector.max_hold: must exceed connector.safety_margin"),
        ("connector.settle_timeout", 0, "connector.settle_timeout: must be a positive number"),
        ("connector.reconcile_interval", -1, "connector.reconcile_interval: must be at least 0"),
        ("connector.reconcile_interval", "1m", "connector.reconcile_interval: must be a number"),
        ("connector.adress", "x", "connector.adress: unknown key (did you mean 'address'?)"),
        ("connector.database", "mysql://db/ilp", "connector.database: must be a PostgreSQL URL"),
        ("connector.database", "postgresql://h/d?x=1", "connector.database: is not a valid Post"),
        ("connector.database", " ", "connector.database: must be a PostgreSQL URL or a file"),
        ("connector.database", 5, "connector.database: must be a string, got 5"),
        ("peer.0.url", "ftp://bob.example/", 'peer[0].url: must be an http(s) URL, got "ftp:'),
        ("peer.0.url", "http://", "peer[0].url: must be an http(s) URL"),
        ("peer.0.url", "http://bob:port/", "peer[0].url: must be an http(s) URL"),
        ("peer.0.url", 5, "peer[0].url: must be a string, got 5"),
        ("peer.1.id", "bob", 'peer[1].id: duplicate peer id "bob" (also peer[0].id)'),
        ("peer.1.id", "bob smith", "peer[1].id: must be 1 to 128 characters of [A-Za-z0-9._~-]"),
        ("peer.0.id", ..., "peer[0].id: missing"),
        ("peer.0.address", "test.alice", "peer[0].address: is this host's own address"),
        ("peer.1.address", "test.bob", 'peer[1].address: duplicate peer address "test.bob"'),
        ("peer.0.address", "peer.config", "peer[0].address: must not be a peer.* address"),
        ("peer.0.incoming_token", "short", "peer[0].incoming_token: must be 8 to 512 visible"),
        ("peer.0.outgoing_token", "has a space", "peer[0].outgoing_token: must be 8 to 512"),
        ("peer.1.incoming_token", "bob-to-alice-secret", "peer[1].incoming_token: duplicate"),
        ("peer.0.colour", "red", "peer[0].colour: unknown key"),
        ("route.0.peer", "dave", 'route[0].peer: no peer has id "dave" (bob, carol.eu)'),
        ("route.0.prefix", "peer.settle", "route[0].prefix: prefix 'peer.settle' cannot be"),
        ("route.0.prefix", "test.", "route[0].prefix: prefix 'test.' is not an ILP address"),
        ("route.1.prefix", "test.dave", 'route[1].prefix: duplicate route prefix "test.dave"'),
        ("route.0.peer", ..., "route[0].peer: missing"),
    ],
)
def test_every_refusal_names_its_key(path: str, value: object, message: str) -> None:
    with pytest.raises(ConnectorConfigError) as error:
        parse_connector_config(edit(path, value))
    assert str(error.value).startswith(message), str(error.value)
    assert error.value.key == message.partition(":")[0]


def test_a_duplicate_token_is_not_shown() -> None:
    with pytest.raises(ConnectorConfigError) as error:
        parse_connector_config(edit("peer.1.incoming_token", "bob-to-alice-secret"))
    assert "secret" not in str(error.value)


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"peer": []}, "peer: needs a [connector] table"),
        ({"route": []}, "route: needs a [connector] table"),
        ({"connector": "test.a"}, 'connector: must be a table, got "test.a"'),
        ({"connector": {"address": "test.a", "port": 1}, "peer": {}}, "peer: must be an array"),
        ({"connector": {"address": "test.a", "port": 1}, "route": 1}, "route: must be an array"),
        ({"connector": {"address": "test.a", "port": 1}, "peer": [3]}, "peer[0]: must be a table"),
    ],
)
def test_shape_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(ConnectorConfigError, match=message.replace("[", r"\[").replace("(", r"\(")):
        parse_connector_config(doc)


def test_a_tcp_connector_api_needs_tls_and_a_token() -> None:
    base = {"connector": {"address": "test.a", "port": 0, "api": "127.0.0.1:7790"}}
    with pytest.raises(ConnectorConfigError) as refused:
        parse_connector_config(base)
    assert refused.value.key == "connector.api_tls_cert"
    assert "TLS and a bearer token" in refused.value.problem
    files = {
        "api_tls_cert": "tls/c.crt",
        "api_tls_key": "tls/c.key",
        "api_token_file": "tls/c.token",
    }
    for missing in files:
        table = {**base["connector"], **{k: v for k, v in files.items() if k != missing}}
        with pytest.raises(ConnectorConfigError) as refused:
            parse_connector_config({"connector": table})
        assert refused.value.key == f"connector.{missing}"
    config = parse_connector_config(
        {"connector": {**base["connector"], **files}}, base_dir=Path("/srv/ilp")
    )
    assert config is not None and config.api_credentials is not None
    assert config.api_credentials.token_file == Path("/srv/ilp/tls/c.token")
    unix = {"address": "test.a", "port": 0, "api": "unix:c.sock", "api_token_file": "t"}
    with pytest.raises(ConnectorConfigError, match="only applies with a TCP"):
        parse_connector_config({"connector": unix})


@pytest.mark.parametrize(
    "database", ["connector.db", "books/clearing.db", "postgresql://ilp@db.internal:5432/ilp"]
)
def test_the_clearing_books_are_a_file_or_a_postgresql_url(database: str) -> None:
    config = parse_connector_config(edit("connector.database", database))
    assert config is not None and config.database == database
    default = parse_connector_config(document())
    assert default is not None and default.database is None  # connector.db


@pytest.mark.parametrize("host", ["127.0.0.1", "127.8.9.10", "::1", "localhost"])
def test_plain_http_on_a_loopback_host(host: str) -> None:
    config = parse_connector_config({"connector": {"address": "test.a", "port": 0, "host": host}})
    assert config is not None and config.tls is None and config.host == host


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.7", "alice.example"])
def test_off_loopback_the_server_needs_tls(host: str) -> None:
    table = {"address": "test.a", "port": 0, "host": host}
    with pytest.raises(ConnectorConfigError) as refused:
        parse_connector_config({"connector": table})
    assert refused.value.key == "connector.host"
    assert refused.value.problem == (
        f'"{host}" is not a loopback address: serving ILP-over-HTTP beyond this machine needs '
        "connector.tls_cert and connector.tls_key (HTTPS: the peers' bearer tokens must not "
        "cross the network in the clear)"
    )
    files = {"tls_cert": "tls/ilp.crt", "tls_key": "tls/ilp.key", "peer_ca": "tls/peers.pem"}
    config = parse_connector_config({"connector": {**table, **files}}, base_dir=Path("/srv/ilp"))
    assert config is not None
    assert config.tls == ServerTlsFiles(Path("/srv/ilp/tls/ilp.crt"), Path("/srv/ilp/tls/ilp.key"))
    assert config.peer_ca == Path("/srv/ilp/tls/peers.pem")


def test_the_https_example_of_docs_security_works_as_written() -> None:
    """docs/security.md's [connector] table is accepted, and without its TLS files it gets the
    refusal the doc quotes."""
    doc = (Path(__file__).resolve().parents[2] / "docs" / "security.md").read_text()
    section = doc.split("## HTTPS for the ILP-over-HTTP server", 1)[1]
    example, after = section.split("```toml\n", 1)[1].split("```\n", 1)
    quoted = after.split("```\n", 1)[1].split("```", 1)[0].strip()
    config = load_config(example, Path("/srv/ilp"), source="host.toml").connector
    assert config is not None and config.tls == ServerTlsFiles(
        Path("/srv/ilp/tls/ilp.crt"), Path("/srv/ilp/tls/ilp.key")
    )
    without = "\n".join(line for line in example.splitlines() if not line.startswith("tls_"))
    with pytest.raises(ConfigError) as refused:
        load_config(without, Path("/srv/ilp"), source="host.toml")
    assert str(refused.value) == quoted
