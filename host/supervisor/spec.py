"""What the host needs to know to run one adaptor: its command, environment and timings."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sdk import contract


@dataclass(frozen=True)
class AdaptorSpec:
    """One configured adaptor. Invalid values raise ValueError naming the field.

    Times are in seconds. ``transport="tcp"`` forces ``auto_mtls``: a loopback TCP port is open
    to every local user, a unix socket in a 0700 directory is not.
    """

    name: str
    command: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    transport: Literal["unix", "tcp"] = "unix"
    auto_mtls: bool = False
    start_timeout: float = 10.0
    health_interval: float = 2.0
    health_timeout: float = 1.0
    failure_threshold: int = 3
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    backoff_multiplier: float = 2.0
    backoff_jitter: float = 0.2
    shutdown_grace: float = 2.0
    term_grace: float = 2.0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not contract.is_adaptor_name(self.name):
            raise ValueError(f"adaptor name {self.name!r}: must be {contract.ADAPTOR_NAME_RULE}")
        command = tuple(self.command)
        if not command or not all(isinstance(arg, str) and "\0" not in arg for arg in command):
            raise ValueError(f"adaptor {self.name}: command must be a non-empty list of strings")
        if not command[0]:
            raise ValueError(f"adaptor {self.name}: command[0] (the program) is empty")
        object.__setattr__(self, "command", command)
        for key, value in self.env.items():
            if not (isinstance(key, str) and isinstance(value, str)):
                raise ValueError(f"adaptor {self.name}: env {key!r}: keys and values are strings")
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise ValueError(f"adaptor {self.name}: env {key!r}: not a valid variable")
        if self.cwd is not None:
            object.__setattr__(self, "cwd", Path(self.cwd))
        if self.transport not in ("unix", "tcp"):
            raise ValueError(f"adaptor {self.name}: transport must be 'unix' or 'tcp'")
        if self.transport == "tcp":
            object.__setattr__(self, "auto_mtls", True)
        for attr in (
            "start_timeout",
            "health_interval",
            "health_timeout",
            "backoff_initial",
            "backoff_max",
        ):
            _positive(self.name, attr, getattr(self, attr))
        for attr in ("shutdown_grace", "term_grace"):
            _positive(self.name, attr, getattr(self, attr), zero_ok=True)
        if isinstance(self.failure_threshold, bool) or not isinstance(self.failure_threshold, int):
            raise ValueError(f"adaptor {self.name}: failure_threshold must be an integer")
        if self.failure_threshold < 1:
            raise ValueError(f"adaptor {self.name}: failure_threshold must be at least 1")
        _positive(self.name, "backoff_multiplier", self.backoff_multiplier)
        if self.backoff_multiplier < 1:
            raise ValueError(f"adaptor {self.name}: backoff_multiplier must be at least 1")
        if self.backoff_max < self.backoff_initial:
            raise ValueError(f"adaptor {self.name}: backoff_max must be >= backoff_initial")
        _positive(self.name, "backoff_jitter", self.backoff_jitter, zero_ok=True)
        if self.backoff_jitter >= 1:
            raise ValueError(f"adaptor {self.name}: backoff_jitter must be below 1")


def _positive(name: str, attr: str, value: object, *, zero_ok: bool = False) -> None:
    ok = (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and (value >= 0 if zero_ok else value > 0)
    )
    if not ok:
        what = "a finite number >= 0" if zero_ok else "a finite number > 0"
        raise ValueError(f"adaptor {name}: {attr} must be {what}, got {value!r}")


#: go-plugin's default port range for adaptors that listen on TCP.
MIN_PORT = 10000
MAX_PORT = 25000


def adaptor_environment(
    spec: AdaptorSpec,
    base: Mapping[str, str],
    *,
    socket_dir: Path,
    engine_addr: str | None,
    client_cert_pem: bytes | None,
) -> dict[str, str]:
    """The environment an adaptor starts with: the host's (``base``), then ``spec.env``, then
    the contract's variables, which always win. Contract variables the host itself inherited
    and does not mean to pass are removed."""
    env = dict(base)
    env.update(spec.env)
    env[contract.MAGIC_COOKIE_KEY] = contract.MAGIC_COOKIE_VALUE
    env[contract.ENV_PROTOCOL_VERSIONS] = ",".join(str(v) for v in contract.CONTRACT_VERSIONS)
    env[contract.ENV_TRANSPORT] = spec.transport
    env[contract.ENV_ADAPTOR_NAME] = spec.name
    env[contract.ENV_UNIX_SOCKET_DIR] = str(socket_dir)
    optional = {
        contract.ENV_ENGINE_ADDR: engine_addr,
        contract.ENV_MIN_PORT: str(MIN_PORT) if spec.transport == "tcp" else None,
        contract.ENV_MAX_PORT: str(MAX_PORT) if spec.transport == "tcp" else None,
        contract.ENV_CLIENT_CERT: client_cert_pem.decode() if client_cert_pem else None,
    }
    for key, value in optional.items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    return env
