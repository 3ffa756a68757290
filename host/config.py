"""The host's configuration file (TOML): parsed and checked in full before anything starts.

``load_config(text, base_dir)`` is pure: it turns the text of a config file into a
:class:`HostConfig` whose adaptors are :class:`~host.supervisor.spec.AdaptorSpec` values, or
raises :class:`ConfigError` with a message that names the file, the key and what is wrong::

    host.toml: adaptor[1].health.interval: must be a positive number, got "fast"

Unknown keys are refused too (a typo must not pass silently), with a hint::

    host.toml: adaptor[0].health.intervall: unknown key (did you mean 'interval'?)

The file's tables are typed models (host.config_schema, on pydantic); this module declares
them, and builds from them the objects the host runs with, checking what spans tables (an
account's adaptor exists, each peer has an account). The connector's tables are
host.connector.config's. Path rules, applied here so that the rest of the host only sees
absolute paths:

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

import json
import os
import sys
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Final, Literal, Self

from pydantic import BeforeValidator, Field, PlainValidator, model_validator

from host.clearing_rules import ASSET_CODE_RULE, Policy, is_asset_code, policy_problem
from host.config_schema import (
    AccountId,
    Count,
    NonNegativeNumber,
    PositiveNumber,
    Problem,
    Table,
    Text,
    boolean,
    host_port,
    is_loopback,
    refuse,
    show,
    text,
    validate,
    whole_number,
)
from host.connector.config import (
    DEFAULT_API,
    ConnectorConfig,
    ConnectorTables,
    connector_config,
)
from host.engine.grpc_port import CALL_DEADLINE
from host.engine.outbox import DEFAULT_LEASE
from host.store.opening import describe_database, is_database_url
from host.supervisor.spec import AdaptorSpec
from sdk import contract
from sdk.amount import MAX_DIGITS, AmountError, parse_signed

#: Longest unix socket path we accept, in bytes. The kernel limit (sun_path) is 108 on Linux
#: and 104 on macOS, terminating NUL included; staying well under keeps a config portable.
MAX_SOCKET_PATH_BYTES: Final = 100

DEFAULT_STATE_DIR: Final = "var"
DEFAULT_ADMIN_SOCKET: Final = "admin.sock"

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
    #: Seconds a settlement claimed by the outbox stays with its claimer (``[engine]
    #: outbox_lease``); longer than an adaptor call's deadline.
    outbox_lease: float = DEFAULT_LEASE
    #: The connector core (ILP-over-HTTP peering); None when not configured.
    connector: ConnectorConfig | None = None
    #: The /metrics listener; off unless configured.
    metrics: MetricsConfig = field(default_factory=MetricsConfig)


#: The two processes of a split host (proposal 2): ``ilp-host connector`` and ``ilp-host engine``.
Role = Literal["connector", "engine"]


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


def for_run(config: HostConfig) -> HostConfig:
    """The configuration of ``ilp-host run`` (proposal 1), refusing what it cannot honour.

    There the engine's store (``[engine] database``) carries the packets too: each packet's
    balance change is one transaction with the settlement it may trigger. So the connector
    keeps no books of its own, and a ``connector.database`` naming another database would be
    ignored; it is refused rather than silently ignored. The same PostgreSQL URL as the
    engine's (the split host's configuration of docs/operations.md) names the books ``run``
    keeps anyway, and passes.
    """
    peering = config.connector
    if peering is None or peering.database is None or peering.database == config.database:
        return config
    books = peering.database
    engine = "" if config.database is None else f", {describe_database(config.database)}"
    raise ConfigError(
        f"{config.source}: connector.database: `ilp-host run` keeps the packets' books in the "
        f"engine's store ([engine] database{engine}), not in "
        f"{describe_database(books) if is_database_url(books) else repr(books)}: remove "
        "connector.database, or run the split host (`ilp-host connector` + `ilp-host engine`)"
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
    try:
        tables = validate(_Document, document)
        return _Builder(source, _normal(base_dir.absolute()), python).config(tables)
    except Problem as exc:
        raise ConfigError(f"{source}: {exc}") from None


# -- the file's tables ---------------------------------------------------------------------------

#: The timings an adaptor runs with unless its tables say otherwise.
_SPEC_DEFAULTS: Final = AdaptorSpec(name="defaults", command=("adaptor",))


def _adaptor_name(value: object) -> str:
    name = text(value)
    if not contract.is_adaptor_name(name):
        raise refuse(f"must be {contract.ADAPTOR_NAME_RULE}, got {show(name)}")
    return name


def _command(value: object) -> object:
    if isinstance(value, str):
        raise refuse(f"must be an array of strings (program, then arguments), got {show(value)}")
    if not isinstance(value, list) or not value:
        raise refuse(f"must be a non-empty array of strings, got {show(value)}")
    return value  # each item is checked as Text


def _transport(value: object) -> Literal["unix", "tcp"]:
    if value == "unix":
        return "unix"
    if value == "tcp":
        return "tcp"
    raise refuse(f'must be "unix" or "tcp", got {show(value)}')


def _env_name(value: object) -> str:
    if not isinstance(value, str) or not value or "=" in value or "\0" in value:
        raise refuse("not a valid environment variable name")
    if value in _RESERVED_ENV:
        raise refuse("is set by the host for every adaptor; remove it")
    return value


def _env_value(value: object) -> str:
    if not isinstance(value, str):
        scalar = isinstance(value, bool | int | float)
        hint = f" (write {json.dumps(show(value))})" if scalar else ""
        raise refuse(f"must be a string, got {show(value)}{hint}")
    if "\0" in value:
        raise refuse("must not contain a NUL character")
    return value


def _amount(value: object) -> int:
    """An integer amount: a TOML integer or a decimal string (for values beyond 64 bits)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        try:
            return parse_signed(value, 0)
        except AmountError:
            pass
    raise refuse(
        "must be an integer or a decimal string (base 10, no leading zeros, at most "
        f"{MAX_DIGITS} digits), got {show(value)}"
    )


def _asset_code(value: object) -> str:
    code = text(value)
    if not is_asset_code(code):
        raise refuse(f"must be {ASSET_CODE_RULE}, got {show(code)}")
    return code


_Amount = Annotated[int, PlainValidator(_amount)]
_Scale = Annotated[
    int,
    PlainValidator(whole_number(0, contract.MAX_SCALE, f"a whole number 0..{contract.MAX_SCALE}")),
]
_OptionalText = Annotated[str | None, PlainValidator(text)]
_OptionalAddress = Annotated[tuple[str, int] | None, PlainValidator(host_port)]


class _HostTable(Table):
    state_dir: Text = DEFAULT_STATE_DIR


class _AdminTable(Table):
    socket: Text = DEFAULT_ADMIN_SOCKET
    tcp: _OptionalAddress = None
    tls_cert: _OptionalText = None
    tls_key: _OptionalText = None
    token_file: _OptionalText = None

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        credentials = _credentials(self)
        for key, value in credentials.items():
            if self.tcp is None and value is not None:
                raise refuse("only applies with admin.tcp", key)
            if self.tcp is not None and value is None:
                raise refuse(
                    "required with admin.tcp (the TCP admin API needs TLS and a bearer token)",
                    key,
                )
        return self


class _MetricsTable(Table):
    listen: _OptionalAddress = None
    engine_listen: _OptionalAddress = None
    tls_cert: _OptionalText = None
    tls_key: _OptionalText = None
    token_file: _OptionalText = None

    @property
    def engine_address(self) -> tuple[str, int] | None:
        """Where the engine of a split host serves: as configured, or the next port."""
        if self.engine_listen is not None or self.listen is None:
            return self.engine_listen
        host, port = self.listen
        return host, port + 1 if 0 < port < 65535 else port

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        credentials = _credentials(self)
        if self.listen is None:
            for key in ("engine_listen", *credentials):
                if key in self.model_fields_set:
                    raise refuse("only applies with metrics.listen", key)
            return self
        missing = [key for key, value in credentials.items() if value is None]
        if missing and len(missing) < len(credentials):
            raise refuse("required with metrics.tls_cert, tls_key and token_file", missing[0])
        if missing:
            for key, address in (("listen", self.listen), ("engine_listen", self.engine_address)):
                assert address is not None  # listen is set
                if not is_loopback(address[0]):
                    raise refuse(
                        f"{address[0]} is not a loopback address: serving metrics beyond this "
                        "machine needs metrics.tls_cert, metrics.tls_key and metrics.token_file",
                        key,
                    )
        return self


def _credentials(table: _AdminTable | _MetricsTable) -> dict[str, str | None]:
    """The TLS files and the bearer token of a TCP listener, by key."""
    return {"tls_cert": table.tls_cert, "tls_key": table.tls_key, "token_file": table.token_file}


class _HealthTable(Table):
    interval: PositiveNumber = _SPEC_DEFAULTS.health_interval
    timeout: PositiveNumber = _SPEC_DEFAULTS.health_timeout
    failure_threshold: Count = _SPEC_DEFAULTS.failure_threshold


class _RestartTable(Table):
    initial: PositiveNumber = _SPEC_DEFAULTS.backoff_initial
    max: PositiveNumber = _SPEC_DEFAULTS.backoff_max
    multiplier: PositiveNumber = _SPEC_DEFAULTS.backoff_multiplier
    jitter: NonNegativeNumber = _SPEC_DEFAULTS.backoff_jitter

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.max < self.initial:
            raise refuse(
                f"must be at least restart.initial ({self.initial}), got {self.max}", "max"
            )
        if self.multiplier < 1:
            raise refuse(f"must be at least 1, got {self.multiplier}", "multiplier")
        if self.jitter >= 1:
            raise refuse(f"must be a fraction below 1 (0.2 = 20 %), got {self.jitter}", "jitter")
        return self


class _TimeoutsTable(Table):
    start: PositiveNumber = _SPEC_DEFAULTS.start_timeout
    shutdown_grace: NonNegativeNumber = _SPEC_DEFAULTS.shutdown_grace
    term_grace: NonNegativeNumber = _SPEC_DEFAULTS.term_grace


class _AdaptorTable(Table):
    name: Annotated[str, PlainValidator(_adaptor_name)] = Field(
        description="every adaptor needs a name"
    )
    command: Annotated[tuple[Text, ...], BeforeValidator(_command)] = Field(
        description="the program to run and its arguments"
    )
    env: dict[
        Annotated[str, PlainValidator(_env_name)], Annotated[str, PlainValidator(_env_value)]
    ] = Field(default_factory=dict)
    cwd: Text = "."
    transport: Annotated[Literal["unix", "tcp"], PlainValidator(_transport)] = "unix"
    auto_mtls: Annotated[bool | None, PlainValidator(boolean)] = None
    health: _HealthTable = _HealthTable()
    restart: _RestartTable = _RestartTable()
    timeouts: _TimeoutsTable = _TimeoutsTable()

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.transport == "tcp" and self.auto_mtls is False:
            raise refuse('cannot be false with transport = "tcp"', "auto_mtls")
        return self


class _EngineTable(Table):
    database: Text = "engine.db"
    outbox_lease: PositiveNumber = DEFAULT_LEASE

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        # A lease that runs out while the adaptor call it covers still runs lets another
        # instance (PostgreSQL) call again with the same key: harmless, but wasteful.
        if self.outbox_lease <= CALL_DEADLINE:
            raise refuse(
                f"must exceed the adaptor call deadline ({CALL_DEADLINE:g} s), got "
                f"{show(self.outbox_lease)}",
                "outbox_lease",
            )
        return self


class _AccountTable(Table):
    id: AccountId = Field(description="the peer account's id")
    adaptor: Text = Field(description="the name of the [[adaptor]] that settles it")
    asset_code: Annotated[str, PlainValidator(_asset_code)] = Field(
        description='what the account counts in, e.g. "USD"'
    )
    asset_scale: _Scale = Field(description="how many decimal places its amounts have")
    # With these defaults an account extends no credit either way, so its balance never falls
    # below 0 and it never settles by itself. That holds only while min_balance is 0: a
    # negative min_balance with the default settle_threshold of 0 would settle every debt at
    # once, so an account that sets min_balance < 0 must say its settle_threshold.
    settle_threshold: _Amount = 0
    settle_to: _Amount = 0
    min_balance: _Amount = 0
    max_balance: _Amount = 0

    @property
    def policy(self) -> Policy:
        """The account's settlement policy (host.clearing_rules)."""
        return Policy(self.settle_threshold, self.settle_to, self.min_balance, self.max_balance)

    @model_validator(mode="after")
    def _coherent(self) -> Self:
        if self.min_balance < 0 and "settle_threshold" not in self.model_fields_set:
            raise refuse(
                "required when min_balance is negative: the default 0 would settle every "
                "debt to the peer at once (e.g. settle_threshold = min_balance settles only "
                "once the whole credit line is used)",
                "settle_threshold",
            )
        broken = policy_problem(self.policy)
        if broken is not None:
            raise refuse(broken.problem, broken.field)
        return self


class _Document(ConnectorTables):
    """A whole config file: the connector's tables and the host's."""

    host: _HostTable = _HostTable()
    admin: _AdminTable = _AdminTable()
    adaptor: tuple[_AdaptorTable, ...] = ()
    engine: _EngineTable = _EngineTable()
    account: tuple[_AccountTable, ...] = ()
    metrics: _MetricsTable = _MetricsTable()


# -- from the tables to the host's objects -------------------------------------------------------


class _Builder:
    """Turns checked tables into the host's objects: absolute paths, checks across tables."""

    def __init__(self, source: str, base_dir: Path, python: str) -> None:
        self.source = source
        self.base_dir = base_dir
        self.python = python

    def config(self, tables: _Document) -> HostConfig:
        state_dir = self._path(tables.host.state_dir)
        adaptors = tuple(self._adaptor(table) for table in tables.adaptor)
        seen: dict[str, int] = {}
        for index, spec in enumerate(adaptors):
            if spec.name in seen:
                raise Problem(
                    f"adaptor[{index}].name",
                    f"duplicate adaptor name {spec.name!r} (also adaptor[{seen[spec.name]}])",
                )
            seen[spec.name] = index
        accounts = self._accounts(tables.account, set(seen))
        database: Path | str | None = None
        if accounts or tables.engine.model_fields_set:
            name = tables.engine.database
            database = name if is_database_url(name) else _normal(state_dir / name)
        connector = connector_config(tables, self.base_dir)
        if connector is not None:
            _pair_peers_and_accounts(connector, accounts)
        metrics = tables.metrics
        return HostConfig(
            self.source,
            self.base_dir,
            state_dir,
            self._admin(tables.admin, state_dir),
            adaptors,
            accounts,
            database,
            tables.engine.outbox_lease,
            connector,
            MetricsConfig(
                metrics.listen,
                metrics.engine_address,
                *self._paths(metrics.tls_cert, metrics.tls_key, metrics.token_file),
            ),
        )

    def _admin(self, admin: _AdminTable, state_dir: Path) -> AdminConfig:
        socket = _normal(state_dir / admin.socket)
        if len(str(socket).encode()) >= MAX_SOCKET_PATH_BYTES:
            raise Problem(
                "admin.socket",
                f"the socket path {str(socket)!r} is {len(str(socket).encode())} bytes; unix "
                f"sockets need under {MAX_SOCKET_PATH_BYTES}: use a shorter host.state_dir "
                "or an absolute admin.socket",
            )
        return AdminConfig(
            socket, admin.tcp, *self._paths(admin.tls_cert, admin.tls_key, admin.token_file)
        )

    def _accounts(
        self, tables: tuple[_AccountTable, ...], adaptors: set[str]
    ) -> tuple[AccountSpec, ...]:
        seen: dict[str, int] = {}
        for index, table in enumerate(tables):
            if table.id in seen:
                raise Problem(
                    f"account[{index}].id", f"duplicate account id (also account[{seen[table.id]}])"
                )
            seen[table.id] = index
            if table.adaptor not in adaptors:
                raise Problem(
                    f"account[{index}].adaptor", f"no [[adaptor]] named {table.adaptor!r}"
                )
        return tuple(
            AccountSpec(t.id, t.adaptor, t.asset_code, t.asset_scale, t.policy) for t in tables
        )

    def _adaptor(self, table: _AdaptorTable) -> AdaptorSpec:
        return AdaptorSpec(
            name=table.name,
            command=self._command(table.command),
            env=dict(table.env),
            cwd=self._path(table.cwd),
            transport=table.transport,
            auto_mtls=table.transport == "tcp" if table.auto_mtls is None else table.auto_mtls,
            start_timeout=table.timeouts.start,
            health_interval=table.health.interval,
            health_timeout=table.health.timeout,
            failure_threshold=table.health.failure_threshold,
            backoff_initial=table.restart.initial,
            backoff_max=table.restart.max,
            backoff_multiplier=table.restart.multiplier,
            backoff_jitter=table.restart.jitter,
            shutdown_grace=table.timeouts.shutdown_grace,
            term_grace=table.timeouts.term_grace,
        )

    def _command(self, command: tuple[str, ...]) -> tuple[str, ...]:
        program, *arguments = command
        if program == "python":
            program = self.python
        elif "/" in program:
            program = str(self._path(program))
        return (program, *arguments)

    def _path(self, name: str) -> Path:
        return _normal(self.base_dir / name)

    def _paths(self, *names: str | None) -> tuple[Path | None, ...]:
        return tuple(None if name is None else self._path(name) for name in names)


def _pair_peers_and_accounts(connector: ConnectorConfig, accounts: tuple[AccountSpec, ...]) -> None:
    """Each peer has an account (its clearing balance) and each account is a peer's."""
    peers = {peer.id for peer in connector.peers}
    account_ids = {account.id for account in accounts}
    for index, peer in enumerate(connector.peers):
        if peer.id not in account_ids:
            raise Problem(
                f"peer[{index}].id",
                f"no [[account]] with id {peer.id!r}: the engine keeps each peer's "
                "clearing balance in its account",
            )
    for index, account in enumerate(accounts):
        if account.id not in peers:
            raise Problem(
                f"account[{index}].id",
                f"no [[peer]] with id {account.id!r}: each account is a peer's",
            )


def _normal(path: Path) -> Path:
    """``path`` without ``.`` and ``..`` parts, so that messages and logs show plain paths.

    Lexical, like the shell's ``cd``: no file system access (this module stays pure).
    """
    return Path(os.path.normpath(path))
