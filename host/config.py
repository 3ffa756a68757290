"""The host's configuration file (TOML): parsed and checked in full before anything starts.

``load_config(text, base_dir)`` is pure: it turns the text of a config file into a
:class:`HostConfig` whose adaptors are :class:`~host.supervisor.spec.AdaptorSpec` values, or
raises :class:`ConfigError` with a message that names the file, the key and what is wrong::

    host.toml: adaptor[1].health.interval: must be a positive number, got "fast"

Unknown keys are refused too (a typo must not pass silently). Path rules, applied here so that
the rest of the host only sees absolute paths:

- ``host.state_dir``, ``admin.tls_cert``, ``admin.tls_key``, ``admin.token_file`` and
  ``adaptor.cwd`` are relative to the directory of the config file;
- ``admin.socket`` is relative to the state directory, and so is ``engine.database`` unless it
  is a PostgreSQL URL (``postgresql://...``), which is kept as written;
- an adaptor's program (``command[0]``) is resolved against the config directory when it
  contains a ``/``; a bare name is looked up on PATH when started; ``"python"`` means the
  Python that runs the host (so an adaptor written with the SDK finds its packages);
- an adaptor runs in the config directory unless ``cwd`` says otherwise, so relative
  arguments of ``command`` are relative to the config file too.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import math
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, Final, Literal

from host.connector.config import (
    DEFAULT_API,
    ConnectorConfig,
    ConnectorConfigError,
    parse_connector_config,
)
from host.engine.model import Policy
from host.store.opening import is_database_url
from host.supervisor.spec import AdaptorSpec
from sdk import contract
from sdk.amount import AmountError, parse_signed

#: Longest unix socket path we accept, in bytes. The kernel limit (sun_path) is 108 on Linux
#: and 104 on macOS, terminating NUL included; staying well under keeps a config portable.
MAX_SOCKET_PATH_BYTES: Final = 100

DEFAULT_STATE_DIR: Final = "var"
DEFAULT_ADMIN_SOCKET: Final = "admin.sock"

_ADAPTOR_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# Variables the host itself sets for every adaptor: a config that sets them breaks the contract.
_RESERVED_ENV: Final = frozenset(
    {
        contract.MAGIC_COOKIE_KEY,
        contract.ENV_PROTOCOL_VERSIONS,
        contract.ENV_CLIENT_CERT,
        contract.ENV_MIN_PORT,
        contract.ENV_MAX_PORT,
        contract.ENV_UNIX_SOCKET_DIR,
        contract.ENV_TRANSPORT,
        contract.ENV_ENGINE_ADDR,
        contract.ENV_ADAPTOR_NAME,
    }
)


_ADAPTOR_KEYS: Final = (
    *("name", "command", "env", "cwd", "transport", "auto_mtls"),
    *("health", "restart", "timeouts"),
)


_ACCOUNT_KEYS: Final = (
    *("id", "adaptor", "asset_code", "asset_scale"),
    *("settle_threshold", "settle_to", "min_balance", "max_balance"),
)
#: With these defaults an account extends no credit either way, so its balance never falls
#: below 0 and it never settles by itself. That holds only while min_balance is 0: a negative
#: min_balance with the default settle_threshold of 0 would settle every debt at once, so an
#: account that sets min_balance < 0 must say its settle_threshold (checked in _accounts).
_POLICY_DEFAULTS: Final[dict[str, int]] = {
    "settle_threshold": 0,
    "settle_to": 0,
    "min_balance": 0,
    "max_balance": 0,
}


def _policy_problem(policy: Policy) -> str:
    """What is wrong with a policy under the sign convention, or "" (pure)."""
    if policy.max_balance < 0:
        return "max_balance must be >= 0 (the credit we extend to the peer)"
    if not policy.min_balance <= policy.settle_threshold <= policy.settle_to <= 0:
        return (
            "need min_balance <= settle_threshold <= settle_to <= 0 (a balance is what the "
            "peer owes us: we settle when we owe it settle_threshold or more)"
        )
    return ""


class ConfigError(ValueError):
    """A configuration the host refuses; the message says where and what is wrong."""


@dataclass(frozen=True)
class AdminConfig:
    """Where the admin API listens.

    The unix socket is always served (the local ``ilp-host`` CLI uses it). ``tcp`` adds a
    TLS listener whose callers must present the bearer token read from ``token_file``.
    """

    socket: Path
    tcp: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None

    @property
    def socket_target(self) -> str:
        """The gRPC target of the unix socket, e.g. ``unix:/srv/ilp/var/admin.sock``."""
        return f"unix:{self.socket}"


@dataclass(frozen=True)
class MetricsConfig:
    """Where ``/metrics`` is served (host.metrics); ``listen`` None: not at all (the default).

    ``listen`` serves ``ilp-host run`` and ``ilp-host connector``; the engine of a split host
    serves ``engine_listen`` (default: the next port). Off loopback, TLS and a bearer token are
    required, as for the admin API's TCP listener.
    """

    listen: tuple[str, int] | None = None
    engine_listen: tuple[str, int] | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class AccountSpec:
    """A configured peer account: which adaptor settles it, its asset and its policy.

    Amounts are at ``asset_scale``, with the sign convention of host.engine.model (a balance is
    what the peer owes us; we settle when it falls to ``settle_threshold``).
    """

    id: str
    adaptor: str
    asset_code: str
    asset_scale: int
    policy: Policy


@dataclass(frozen=True)
class HostConfig:
    """A whole, checked host configuration with absolute paths."""

    source: str
    base_dir: Path
    state_dir: Path
    admin: AdminConfig
    adaptors: tuple[AdaptorSpec, ...] = field(default=())
    accounts: tuple[AccountSpec, ...] = field(default=())
    #: The engine's database: an SQLite file, or a PostgreSQL URL (str) that several instances
    #: may share; None when no account is configured (no engine runs).
    database: Path | str | None = None
    #: The connector core (ILP-over-HTTP peering); None when not configured.
    connector: ConnectorConfig | None = None
    #: The /metrics listener; off unless configured.
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


#: The two processes of a split host (proposal 2): ``ilp-host connector`` and ``ilp-host engine``.
Role = Literal["connector", "engine"]
#: The connector's clearing ledger, in its state directory.
CONNECTOR_DATABASE = "connector.db"


def for_role(config: HostConfig, role: Role) -> HostConfig:
    """The configuration of one process of a split host: its own state directory.

    The connector and the engine of one config file run side by side, each with
    ``<state_dir>/<role>`` for its lock, its admin socket and its database; everything else is
    shared. The admin API's TCP listener (one port) stays with the engine, whose admin API is the
    one operators use most; the connector's admin API is on its unix socket.
    """
    if role == "connector" and config.connector is None:
        raise ConfigError(
            f"{config.source}: `ilp-host connector` needs a [connector] table and [[peer]]s"
        )
    if role == "engine" and not config.accounts:
        raise ConfigError(f"{config.source}: `ilp-host engine` needs at least one [[account]]")
    role_dir = config.state_dir / role
    admin = config.admin
    try:
        socket = role_dir / admin.socket.relative_to(config.state_dir)
    except ValueError:
        socket = admin.socket.with_name(f"{role}-{admin.socket.name}")
    if role == "engine":
        admin = replace(admin, socket=socket)
        assert config.database is not None  # accounts imply a database
        database: Path | str | None = config.database
        if isinstance(config.database, Path) and config.database.is_relative_to(config.state_dir):
            database = role_dir / config.database.relative_to(config.state_dir)
        adaptors = config.adaptors
    else:
        admin = AdminConfig(socket=socket)
        database = None
        adaptors = ()  # they belong to the engine
    metrics = config.metrics
    if role == "engine" and metrics.listen is not None:
        metrics = replace(metrics, listen=metrics.engine_listen)
    return replace(
        config,
        state_dir=role_dir,
        admin=admin,
        database=database,
        adaptors=adaptors,
        metrics=metrics,
    )


def connector_api_target(config: HostConfig) -> str:
    """The gRPC target of the Connector API that ``ilp-host connector`` serves for ``config``
    (the whole configuration, not a role's): what ``ilp-host engine`` connects to by default."""
    api = config.connector.api if config.connector is not None else DEFAULT_API
    if not api.startswith("unix:"):
        return api
    path = Path(api.removeprefix("unix:"))
    return f"unix:{_normal(config.state_dir / 'connector' / path)}"


def read_config(path: Path) -> HostConfig:
    """Read and check the config file at ``path`` (the only I/O of this module)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the config file: {exc}") from exc
    return load_config(text, path.resolve().parent, source=str(path))


def load_config(
    text: str,
    base_dir: Path,
    *,
    source: str = "host.toml",
    python: str = sys.executable,
) -> HostConfig:
    """Parse and check a config file's ``text``; relative paths are taken from ``base_dir``.

    ``source`` names the file in error messages; ``python`` is what ``"python"`` stands for
    as an adaptor's program.
    """
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source}: not valid TOML: {exc}") from exc
    return _Parser(source, _normal(base_dir.absolute()), python).config(document)


class _Parser:
    """Walks the parsed document; every check names its key through ``_fail``."""

    def __init__(self, source: str, base_dir: Path, python: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.python = python

    def _fail(self, key: str, problem: str) -> ConfigError:
        return ConfigError(
            f"{self.source}: {key}: {problem}" if key else f"{self.source}: {problem}"
        )

    # -- the document ----------------------------------------------------------------------

    def config(self, document: dict[str, Any]) -> HostConfig:
        self._known_keys(
            "",
            document,
            (
                "host",
                "admin",
                "adaptor",
                "engine",
                "account",
                "connector",
                "peer",
                "route",
                "metrics",
            ),
        )
        host = self._table("host", document.get("host", {}))
        self._known_keys("host", host, ("state_dir",))
        state_dir = self._path("host.state_dir", host.get("state_dir", DEFAULT_STATE_DIR))
        admin = self._admin(self._table("admin", document.get("admin", {})), state_dir)
        raw_adaptors = document.get("adaptor", [])
        if not isinstance(raw_adaptors, list):
            raise self._fail("adaptor", "must be an array of tables: write [[adaptor]]")
        adaptors = tuple(
            self._adaptor(f"adaptor[{index}]", raw) for index, raw in enumerate(raw_adaptors)
        )
        seen: dict[str, int] = {}
        for index, spec in enumerate(adaptors):
            if spec.name in seen:
                raise self._fail(
                    f"adaptor[{index}].name",
                    f"duplicate adaptor name {spec.name!r} (also adaptor[{seen[spec.name]}])",
                )
            seen[spec.name] = index
        accounts = self._accounts(document.get("account", []), set(seen))
        engine = self._table("engine", document.get("engine", {}))
        self._known_keys("engine", engine, ("database",))
        database: Path | str | None = None
        if accounts or engine:
            name = self._string("engine.database", engine.get("database", "engine.db"))
            database = name if is_database_url(name) else _normal(state_dir / name)
        try:
            connector = parse_connector_config(document, self.base_dir)
        except ConnectorConfigError as exc:
            raise self._fail("", str(exc)) from exc
        if connector is not None:
            peers = {peer.id for peer in connector.peers}
            account_ids = {account.id for account in accounts}
            for index, peer in enumerate(connector.peers):
                if peer.id not in account_ids:
                    raise self._fail(
                        f"peer[{index}].id",
                        f"no [[account]] with id {peer.id!r}: the engine keeps each peer's "
                        "clearing balance in its account",
                    )
            for index, account in enumerate(accounts):
                if account.id not in peers:
                    raise self._fail(
                        f"account[{index}].id",
                        f"no [[peer]] with id {account.id!r}: each account is a peer's",
                    )
        metrics = self._metrics(self._table("metrics", document.get("metrics", {})))
        return HostConfig(
            self.source,
            self.base_dir,
            state_dir,
            admin,
            adaptors,
            accounts,
            database,
            connector,
            metrics,
        )

    def _accounts(self, raw: object, adaptors: set[str]) -> tuple[AccountSpec, ...]:
        if not isinstance(raw, list):
            raise self._fail("account", "must be an array of tables: write [[account]]")
        accounts: list[AccountSpec] = []
        seen: dict[str, int] = {}
        for index, item in enumerate(raw):
            key = f"account[{index}]"
            table = self._table(key, item)
            self._known_keys(key, table, _ACCOUNT_KEYS)
            for required in ("id", "adaptor", "asset_code", "asset_scale"):
                if required not in table:
                    raise self._fail(f"{key}.{required}", "is required")
            account_id = self._string(f"{key}.id", table["id"])
            if not contract.is_account_id(account_id):
                raise self._fail(
                    f"{key}.id", f"must be {contract.ACCOUNT_ID_RULE}, got {_show(account_id)}"
                )
            if account_id in seen:
                raise self._fail(
                    f"{key}.id", f"duplicate account id (also account[{seen[account_id]}])"
                )
            seen[account_id] = index
            adaptor = self._string(f"{key}.adaptor", table["adaptor"])
            if adaptor not in adaptors:
                raise self._fail(f"{key}.adaptor", f"no [[adaptor]] named {adaptor!r}")
            scale = table["asset_scale"]
            if isinstance(scale, bool) or not isinstance(scale, int) or not 0 <= scale <= 255:
                raise self._fail(
                    f"{key}.asset_scale", f"must be a whole number 0..255, got {_show(scale)}"
                )
            values = {
                name: self._amount(f"{key}.{name}", table.get(name, default))
                for name, default in _POLICY_DEFAULTS.items()
            }
            policy = Policy(**values)
            if policy.min_balance < 0 and "settle_threshold" not in table:
                raise self._fail(
                    f"{key}.settle_threshold",
                    "required when min_balance is negative: the default 0 would settle every "
                    "debt to the peer at once (e.g. settle_threshold = min_balance settles only "
                    "once the whole credit line is used)",
                )
            problem = _policy_problem(policy)
            if problem:
                raise self._fail(key, problem)
            accounts.append(
                AccountSpec(
                    account_id,
                    adaptor,
                    self._string(f"{key}.asset_code", table["asset_code"]),
                    scale,
                    policy,
                )
            )
        return tuple(accounts)

    def _amount(self, key: str, value: object) -> int:
        """An integer amount: a TOML integer or a decimal string (for values beyond 64 bits)."""
        if isinstance(value, bool):
            raise self._fail(key, f"must be an integer or a decimal string, got {_show(value)}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return parse_signed(value, 0, key.rpartition(".")[2])
            except AmountError as exc:
                raise self._fail(key, str(exc)) from exc
        raise self._fail(key, f"must be an integer or a decimal string, got {_show(value)}")

    def _admin(self, admin: dict[str, Any], state_dir: Path) -> AdminConfig:
        self._known_keys("admin", admin, ("socket", "tcp", "tls_cert", "tls_key", "token_file"))
        socket = _normal(
            state_dir / self._string("admin.socket", admin.get("socket", DEFAULT_ADMIN_SOCKET))
        )
        if len(str(socket).encode()) >= MAX_SOCKET_PATH_BYTES:
            raise self._fail(
                "admin.socket",
                f"the socket path {str(socket)!r} is {len(str(socket).encode())} bytes; unix "
                f"sockets need under {MAX_SOCKET_PATH_BYTES}: use a shorter host.state_dir "
                "or an absolute admin.socket",
            )
        if "tcp" not in admin:
            for key in ("tls_cert", "tls_key", "token_file"):
                if key in admin:
                    raise self._fail(f"admin.{key}", "only applies with admin.tcp")
            return AdminConfig(socket=socket)
        tcp = self._address("admin.tcp", admin["tcp"])
        for key in ("tls_cert", "tls_key", "token_file"):
            if key not in admin:
                raise self._fail(
                    f"admin.{key}",
                    "required with admin.tcp (the TCP admin API needs TLS and a bearer token)",
                )
        return AdminConfig(
            socket=socket,
            tcp=tcp,
            tls_cert=self._path("admin.tls_cert", admin["tls_cert"]),
            tls_key=self._path("admin.tls_key", admin["tls_key"]),
            token_file=self._path("admin.token_file", admin["token_file"]),
        )

    def _metrics(self, metrics: dict[str, Any]) -> MetricsConfig:
        keys = ("listen", "engine_listen", "tls_cert", "tls_key", "token_file")
        self._known_keys("metrics", metrics, keys)
        if "listen" not in metrics:
            for key in keys[1:]:
                if key in metrics:
                    raise self._fail(f"metrics.{key}", "only applies with metrics.listen")
            return MetricsConfig()
        listen = self._address("metrics.listen", metrics["listen"])
        engine_listen = (
            self._address("metrics.engine_listen", metrics["engine_listen"])
            if "engine_listen" in metrics
            else (listen[0], listen[1] + 1 if 0 < listen[1] < 65535 else listen[1])
        )
        secured = [key for key in keys[2:] if key in metrics]
        if secured and len(secured) < 3:
            missing = next(key for key in keys[2:] if key not in metrics)
            raise self._fail(
                f"metrics.{missing}", "required with metrics.tls_cert, tls_key and token_file"
            )
        if not secured:
            for key, (host, _port) in (("listen", listen), ("engine_listen", engine_listen)):
                if not _is_loopback(host):
                    raise self._fail(
                        f"metrics.{key}",
                        f"{host} is not a loopback address: serving metrics beyond this "
                        "machine needs metrics.tls_cert, metrics.tls_key and metrics.token_file",
                    )
            return MetricsConfig(listen, engine_listen)
        return MetricsConfig(
            listen,
            engine_listen,
            self._path("metrics.tls_cert", metrics["tls_cert"]),
            self._path("metrics.tls_key", metrics["tls_key"]),
            self._path("metrics.token_file", metrics["token_file"]),
        )

    def _adaptor(self, key: str, raw: object) -> AdaptorSpec:
        adaptor = self._table(key, raw)
        self._known_keys(
            key,
            adaptor,
            _ADAPTOR_KEYS,
        )
        if "name" not in adaptor:
            raise self._fail(f"{key}.name", "missing (every adaptor needs a name)")
        name = self._string(f"{key}.name", adaptor["name"])
        if not _ADAPTOR_NAME.fullmatch(name):
            raise self._fail(
                f"{key}.name", f"must be 1 to 64 of A-Z a-z 0-9 . _ -, got {_show(name)}"
            )
        if "command" not in adaptor:
            raise self._fail(f"{key}.command", "missing (the program to run and its arguments)")
        command = self._command(f"{key}.command", adaptor["command"])
        transport = self._transport(f"{key}.transport", adaptor.get("transport", "unix"))
        auto_mtls = adaptor.get("auto_mtls", transport == "tcp")
        if not isinstance(auto_mtls, bool):
            raise self._fail(f"{key}.auto_mtls", f"must be true or false, got {_show(auto_mtls)}")
        if transport == "tcp" and not auto_mtls:
            raise self._fail(f"{key}.auto_mtls", 'cannot be false with transport = "tcp"')
        cwd = self._path(f"{key}.cwd", adaptor.get("cwd", "."))

        health = self._section(key, adaptor, "health", ("interval", "timeout", "failure_threshold"))
        restart = self._section(key, adaptor, "restart", ("initial", "max", "multiplier", "jitter"))
        timeouts = self._section(
            key, adaptor, "timeouts", ("start", "shutdown_grace", "term_grace")
        )
        defaults = AdaptorSpec(name=name, command=command)
        backoff_initial = self._positive(
            f"{key}.restart.initial", restart, defaults.backoff_initial
        )
        backoff_max = self._positive(f"{key}.restart.max", restart, defaults.backoff_max)
        if backoff_max < backoff_initial:
            raise self._fail(
                f"{key}.restart.max",
                f"must be at least restart.initial ({backoff_initial}), got {_show(backoff_max)}",
            )
        multiplier = self._positive(
            f"{key}.restart.multiplier", restart, defaults.backoff_multiplier
        )
        if multiplier < 1:
            raise self._fail(f"{key}.restart.multiplier", f"must be at least 1, got {multiplier}")
        jitter = self._non_negative(f"{key}.restart.jitter", restart, defaults.backoff_jitter)
        if jitter >= 1:
            raise self._fail(
                f"{key}.restart.jitter", f"must be a fraction below 1 (0.2 = 20 %), got {jitter}"
            )
        return AdaptorSpec(
            name=name,
            command=command,
            env=self._env(f"{key}.env", adaptor.get("env", {})),
            cwd=cwd,
            transport=transport,
            auto_mtls=auto_mtls,
            start_timeout=self._positive(f"{key}.timeouts.start", timeouts, defaults.start_timeout),
            health_interval=self._positive(
                f"{key}.health.interval", health, defaults.health_interval
            ),
            health_timeout=self._positive(f"{key}.health.timeout", health, defaults.health_timeout),
            failure_threshold=self._count(
                f"{key}.health.failure_threshold", health, defaults.failure_threshold
            ),
            backoff_initial=backoff_initial,
            backoff_max=backoff_max,
            backoff_multiplier=multiplier,
            backoff_jitter=jitter,
            shutdown_grace=self._non_negative(
                f"{key}.timeouts.shutdown_grace", timeouts, defaults.shutdown_grace
            ),
            term_grace=self._non_negative(
                f"{key}.timeouts.term_grace", timeouts, defaults.term_grace
            ),
        )

    # -- value checks ----------------------------------------------------------------------

    def _known_keys(self, key: str, table: Mapping[str, object], known: tuple[str, ...]) -> None:
        for name in table:
            if name not in known:
                where = f"{key}.{name}" if key else name
                hint = difflib.get_close_matches(name, known, n=1)
                advice = f"did you mean {hint[0]!r}?" if hint else f"known: {', '.join(known)}"
                raise self._fail(where, f"unknown key ({advice})")

    def _table(self, key: str, value: object) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self._fail(key, f"must be a table, got {_show(value)}")
        return value

    def _section(
        self, key: str, adaptor: dict[str, Any], name: str, known: tuple[str, ...]
    ) -> dict[str, Any]:
        section = self._table(f"{key}.{name}", adaptor.get(name, {}))
        self._known_keys(f"{key}.{name}", section, known)
        return section

    def _string(self, key: str, value: object) -> str:
        if not isinstance(value, str):
            raise self._fail(key, f"must be a string, got {_show(value)}")
        if not value:
            raise self._fail(key, "must not be empty")
        if "\0" in value:
            raise self._fail(key, "must not contain a NUL character")
        return value

    def _path(self, key: str, value: object) -> Path:
        return _normal(self.base_dir / self._string(key, value))

    def _number(self, key: str, table: dict[str, Any], default: float, kind: str) -> float:
        name = key.rpartition(".")[2]
        value = table.get(name, default)
        # bool is an int in Python, but `interval = true` is a mistake, not 1 second.
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise self._fail(key, f"must be {kind}, got {_show(value)}")
        if not math.isfinite(value):
            raise self._fail(key, f"must be {kind}, got {_show(value)}")
        return float(value)

    def _positive(self, key: str, table: dict[str, Any], default: float) -> float:
        value = self._number(key, table, default, "a positive number")
        if value <= 0:
            raise self._fail(key, f"must be a positive number, got {_show(value)}")
        return value

    def _non_negative(self, key: str, table: dict[str, Any], default: float) -> float:
        value = self._number(key, table, default, "a number >= 0")
        if value < 0:
            raise self._fail(key, f"must be a number >= 0, got {_show(value)}")
        return value

    def _count(self, key: str, table: dict[str, Any], default: int) -> int:
        value = table.get(key.rpartition(".")[2], default)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise self._fail(key, f"must be a whole number >= 1, got {_show(value)}")
        return value

    def _command(self, key: str, value: object) -> tuple[str, ...]:
        if isinstance(value, str):
            raise self._fail(
                key, f"must be an array of strings (program, then arguments), got {_show(value)}"
            )
        if not isinstance(value, list) or not value:
            raise self._fail(key, f"must be a non-empty array of strings, got {_show(value)}")
        argv = [self._string(f"{key}[{index}]", item) for index, item in enumerate(value)]
        program = argv[0]
        if program == "python":
            argv[0] = self.python
        elif "/" in program:
            argv[0] = str(_normal(self.base_dir / program))
        return tuple(argv)

    def _transport(self, key: str, value: object) -> Literal["unix", "tcp"]:
        if value == "unix":
            return "unix"
        if value == "tcp":
            return "tcp"
        raise self._fail(key, f'must be "unix" or "tcp", got {_show(value)}')

    def _env(self, key: str, value: object) -> dict[str, str]:
        table = self._table(key, value)
        env: dict[str, str] = {}
        for name, item in table.items():
            where = f"{key}.{name}"
            if not name or "=" in name or "\0" in name:
                raise self._fail(where, "not a valid environment variable name")
            if name in _RESERVED_ENV:
                raise self._fail(where, "is set by the host for every adaptor; remove it")
            if not isinstance(item, str):
                hint = f" (write {json.dumps(_show(item))})" if _is_scalar(item) else ""
                raise self._fail(where, f"must be a string, got {_show(item)}{hint}")
            if "\0" in item:
                raise self._fail(where, "must not contain a NUL character")
            env[name] = item
        return env

    def _address(self, key: str, value: object) -> tuple[str, int]:
        text = self._string(key, value)
        host, colon, port_text = text.rpartition(":")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise self._fail(
                key, f'must be "HOST:PORT" with a port from 1 to 65535, got {_show(value)}'
            )
        return host, int(port_text)


def _is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) stays on this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _normal(path: Path) -> Path:
    """``path`` without ``.`` and ``..`` parts, so that messages and logs show plain paths.

    Lexical, like the shell's ``cd``: no file system access (this module stays pure).
    """
    return Path(os.path.normpath(path))


def _is_scalar(value: object) -> bool:
    return isinstance(value, bool | int | float)


def _show(value: object) -> str:
    """A value as the TOML author wrote it (strings quoted), for error messages."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, datetime | date | time):
        return f"a date/time ({value.isoformat()})"
    return repr(value)
