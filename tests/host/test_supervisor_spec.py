"""AdaptorSpec validation and the environment an adaptor starts with (pure)."""

from __future__ import annotations

from pathlib import Path

import pytest

from host.supervisor.spec import MAX_PORT, MIN_PORT, AdaptorSpec, adaptor_environment
from sdk import contract


def test_defaults_and_normalisation() -> None:
    spec = AdaptorSpec("memory", ["python", "adaptor.py"], cwd="x")  # type: ignore[arg-type]
    assert spec.command == ("python", "adaptor.py")
    assert spec.cwd == Path("x")
    assert spec.transport == "unix" and spec.auto_mtls is False
    assert (spec.start_timeout, spec.health_interval, spec.failure_threshold) == (10.0, 2.0, 3)


def test_tcp_forces_mutual_tls() -> None:
    assert AdaptorSpec("a", ("x",), transport="tcp").auto_mtls is True


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"name": ""}, "adaptor name"),
        ({"name": "a b"}, "adaptor name"),
        ({"name": "x" * 65}, "adaptor name"),
        ({"command": ()}, "command must be"),
        ({"command": ("",)}, "command[0]"),
        ({"command": ("a\0b",)}, "command must be"),
        ({"env": {"A=B": "c"}}, "not a valid variable"),
        ({"env": {"A": 1}}, "keys and values are strings"),
        ({"transport": "udp"}, "transport"),
        ({"start_timeout": 0}, "start_timeout must be a finite number > 0"),
        ({"health_interval": float("nan")}, "health_interval"),
        ({"health_timeout": -1}, "health_timeout"),
        ({"failure_threshold": 0}, "failure_threshold must be at least 1"),
        ({"failure_threshold": 2.5}, "failure_threshold must be an integer"),
        ({"backoff_multiplier": 0.5}, "backoff_multiplier must be at least 1"),
        ({"backoff_initial": 5, "backoff_max": 1}, "backoff_max must be >= backoff_initial"),
        ({"backoff_jitter": 1.0}, "backoff_jitter must be below 1"),
        ({"shutdown_grace": -0.1}, "shutdown_grace must be a finite number >= 0"),
        ({"term_grace": True}, "term_grace"),
    ],
)
def test_bad_values_are_refused_naming_the_field(options: dict[str, object], words: str) -> None:
    arguments: dict[str, object] = {"name": "memory", "command": ("adaptor",)}
    arguments.update(options)
    with pytest.raises(ValueError) as error:
        AdaptorSpec(**arguments)  # type: ignore[arg-type]
    assert words in str(error.value)


def test_zero_graces_are_allowed() -> None:
    assert AdaptorSpec("a", ("x",), shutdown_grace=0, term_grace=0).term_grace == 0


def test_environment_unix() -> None:
    spec = AdaptorSpec("memory", ("x",), env={"LEDGER": "l", contract.MAGIC_COOKIE_KEY: "forged"})
    base = {
        "PATH": "/bin",
        contract.ENV_CLIENT_CERT: "inherited",
        contract.ENV_MIN_PORT: "1",
        contract.ENV_ENGINE_ADDR: "inherited",
    }
    env = adaptor_environment(
        spec, base, socket_dir=Path("/s/0"), engine_addr=None, client_cert_pem=None
    )
    assert env == {
        "PATH": "/bin",
        "LEDGER": "l",
        contract.MAGIC_COOKIE_KEY: contract.MAGIC_COOKIE_VALUE,  # the contract wins
        contract.ENV_PROTOCOL_VERSIONS: "1",
        contract.ENV_TRANSPORT: "unix",
        contract.ENV_ADAPTOR_NAME: "memory",
        contract.ENV_UNIX_SOCKET_DIR: "/s/0",
    }
    assert base[contract.ENV_CLIENT_CERT] == "inherited"  # the host's own is untouched


def test_environment_tcp() -> None:
    spec = AdaptorSpec("memory", ("x",), transport="tcp")
    env = adaptor_environment(
        spec, {}, socket_dir=Path("/s/0"), engine_addr="unix:/e", client_cert_pem=b"PEM"
    )
    assert env[contract.ENV_TRANSPORT] == "tcp"
    assert env[contract.ENV_MIN_PORT] == str(MIN_PORT)
    assert env[contract.ENV_MAX_PORT] == str(MAX_PORT)
    assert env[contract.ENV_CLIENT_CERT] == "PEM"
    assert env[contract.ENV_ENGINE_ADDR] == "unix:/e"


def test_public_surface() -> None:
    import host.supervisor as package

    assert sorted(package.__all__) == [
        "AdaptorSnapshot",
        "AdaptorSpec",
        "IllegalTransition",
        "LineParser",
        "LogRecord",
        "ProcessLifecycle",
        "ProcessState",
        "StartFailure",
        "StartProblem",
        "Supervisor",
        "SupervisorStopped",
        "backoff_delay",
    ]
    for name in package.__all__:
        assert getattr(package, name) is not None
    assert issubclass(package.SupervisorStopped, RuntimeError)
