"""host.config: parsing, defaults, path resolution, and every refusal naming its key."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from host.config import (
    DEFAULT_ADMIN_SOCKET,
    MAX_SOCKET_PATH_BYTES,
    ConfigError,
    HostConfig,
    load_config,
    read_config,
)
from host.supervisor.spec import AdaptorSpec

BASE = Path("/srv/ilp")
PYTHON = "/opt/py/bin/python3"

MINIMAL = """
[[adaptor]]
name = "memory"
command = ["python", "adaptor.py"]
"""


def load(text: str, base: Path = BASE) -> HostConfig:
    return load_config(text, base, source="host.toml", python=PYTHON)


def refused(text: str) -> str:
    with pytest.raises(ConfigError) as caught:
        load(text)
    return str(caught.value)


def test_defaults() -> None:
    config = load_config(MINIMAL, BASE, source="host.toml", python=PYTHON)
    assert config.state_dir == BASE / "var"
    assert config.admin.socket == BASE / "var" / DEFAULT_ADMIN_SOCKET
    assert config.admin.socket_target == f"unix:{BASE}/var/admin.sock"
    assert config.admin.tcp is None
    [spec] = config.adaptors
    default = AdaptorSpec(name="memory", command=("x",))
    assert spec.name == "memory"
    assert spec.command == (PYTHON, "adaptor.py")
    assert spec.cwd == BASE
    assert dict(spec.env) == {}
    assert spec.transport == "unix"
    assert spec.auto_mtls is False
    for field in (
        "start_timeout",
        "health_interval",
        "health_timeout",
        "failure_threshold",
        "backoff_initial",
        "backoff_max",
        "backoff_multiplier",
        "backoff_jitter",
        "shutdown_grace",
        "term_grace",
    ):
        assert getattr(spec, field) == getattr(default, field), field


def test_empty_file_is_a_host_without_adaptors() -> None:
    config = load_config("", BASE)
    assert config.adaptors == ()
    assert config.state_dir == BASE / "var"


def test_full_config() -> None:
    text = """
[host]
state_dir = "var/alice"

[admin]
socket = "a.sock"
tcp = "127.0.0.1:7070"
tls_cert = "tls/cert.pem"
tls_key = "tls/key.pem"
token_file = "admin.token"

[[adaptor]]
name = "memory"
command = ["python", "adaptors/memory-python/adaptor.py", "--flag"]
env = { ILP_ADAPTOR_ASSET_CODE = "EUR", ILP_ADAPTOR_ASSET_SCALE = "6" }
cwd = "work"
transport = "tcp"
[adaptor.health]
interval = 0.5
timeout = 0.25
failure_threshold = 5
[adaptor.restart]
initial = 1
max = 60.0
multiplier = 3
jitter = 0
[adaptor.timeouts]
start = 20.0
shutdown_grace = 0
term_grace = 1.5

[[adaptor]]
name = "go.ledger-2"
command = ["bin/adaptor"]

[[adaptor]]
name = "on_path"
command = ["some-adaptor", "x/y"]
"""
    config = load_config(text, BASE, python=PYTHON)
    assert config.state_dir == BASE / "var/alice"
    assert config.admin.socket == BASE / "var/alice/a.sock"
    assert config.admin.tcp == ("127.0.0.1", 7070)
    assert config.admin.tls_cert == BASE / "tls/cert.pem"
    assert config.admin.tls_key == BASE / "tls/key.pem"
    assert config.admin.token_file == BASE / "admin.token"
    memory, go, on_path = config.adaptors
    assert memory.command == (PYTHON, "adaptors/memory-python/adaptor.py", "--flag")
    assert dict(memory.env) == {"ILP_ADAPTOR_ASSET_CODE": "EUR", "ILP_ADAPTOR_ASSET_SCALE": "6"}
    assert memory.cwd == BASE / "work"
    assert memory.transport == "tcp"
    assert memory.auto_mtls is True  # implied by tcp
    assert (memory.health_interval, memory.health_timeout, memory.failure_threshold) == (
        0.5,
        0.25,
        5,
    )
    assert (
        memory.backoff_initial,
        memory.backoff_max,
        memory.backoff_multiplier,
        memory.backoff_jitter,
    ) == (1.0, 60.0, 3.0, 0.0)
    assert (memory.start_timeout, memory.shutdown_grace, memory.term_grace) == (20.0, 0.0, 1.5)
    # A program path with a slash is relative to the config directory; a bare name is for PATH.
    assert go.command == (str(BASE / "bin/adaptor"),)
    assert on_path.command == ("some-adaptor", "x/y")


def test_paths_are_normalised() -> None:
    text = MINIMAL + 'cwd = "./a/../b"\n' + '[[adaptor]]\nname = "x"\ncommand = ["../bin/./x"]\n'
    config = load_config('[host]\nstate_dir = "../var/./alice"\n' + text, BASE / "etc")
    assert config.state_dir == BASE / "var/alice"
    assert config.admin.socket == BASE / "var/alice/admin.sock"
    assert config.adaptors[0].cwd == BASE / "etc/b"
    assert config.adaptors[1].command == (str(BASE / "bin/x"),)


def test_absolute_paths_are_kept() -> None:
    text = """
[host]
state_dir = "/var/lib/ilp"
[admin]
socket = "/run/ilp/admin.sock"
[[adaptor]]
name = "a"
command = ["/usr/bin/adaptor"]
cwd = "/tmp"
"""
    config = load(text)
    assert config.state_dir == Path("/var/lib/ilp")
    assert config.admin.socket == Path("/run/ilp/admin.sock")
    [spec] = config.adaptors
    assert spec.command == ("/usr/bin/adaptor",)
    assert spec.cwd == Path("/tmp")


def test_read_config_resolves_against_the_files_directory(tmp_path: Path) -> None:
    path = tmp_path / "conf" / "host.toml"
    path.parent.mkdir()
    path.write_text(MINIMAL, encoding="utf-8")
    config = read_config(path)
    assert config.source == str(path)
    assert config.base_dir == path.parent
    assert config.state_dir == path.parent / "var"
    assert config.adaptors[0].cwd == path.parent


def test_read_config_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.toml: cannot read the config file"):
        read_config(tmp_path / "missing.toml")


def test_bad_toml_names_the_line() -> None:
    message = refused('[host]\nstate_dir = "x"\nthis is not toml\n')
    assert message.startswith("host.toml: not valid TOML:")
    assert "line 3" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # unknown keys, at every level, with a hint
        ("[hots]\n", "host.toml: hots: unknown key (did you mean 'host'?)"),
        ('[host]\nstate_dri = "x"\n', "host.toml: host.state_dri: unknown key (did you mean"),
        ('[admin]\nsockt = "a"\n', "host.toml: admin.sockt: unknown key (did you mean 'socket'?)"),
        (
            MINIMAL + "[adaptor.health]\nintervall = 1\n",
            "host.toml: adaptor[0].health.intervall: unknown key (did you mean 'interval'?)",
        ),
        (MINIMAL + "colour = 1\n", "host.toml: adaptor[0].colour: unknown key (known: name,"),
        (MINIMAL + "[adaptor.retsart]\n", "host.toml: adaptor[0].retsart: unknown key"),
        (MINIMAL + "[adaptor.timeouts]\nstop = 1\n", "adaptor[0].timeouts.stop: unknown key"),
        # wrong shapes
        ('host = "x"\n', 'host.toml: host: must be a table, got "x"'),
        (
            "[adaptor]\nname = 'a'\n",
            "host.toml: adaptor: must be an array of tables: write [[adaptor]]",
        ),
        ("[host]\nstate_dir = 3\n", "host.toml: host.state_dir: must be a string, got 3"),
        ('[host]\nstate_dir = ""\n', "host.toml: host.state_dir: must not be empty"),
        (MINIMAL + 'health = "often"\n', 'adaptor[0].health: must be a table, got "often"'),
        # names and commands
        ('[[adaptor]]\ncommand = ["x"]\n', "host.toml: adaptor[0].name: missing"),
        ('[[adaptor]]\nname = "a"\n', "host.toml: adaptor[0].command: missing"),
        (
            '[[adaptor]]\nname = "a b"\ncommand = ["x"]\n',
            'host.toml: adaptor[0].name: must be 1 to 64 characters of [A-Za-z0-9._-], got "a b"',
        ),
        ('[[adaptor]]\nname = "' + "n" * 65 + '"\ncommand = ["x"]\n', "adaptor[0].name: must be 1"),
        ('[[adaptor]]\nname = 7\ncommand = ["x"]\n', "adaptor[0].name: must be a string, got 7"),
        (
            '[[adaptor]]\nname = "a"\ncommand = "python adaptor.py"\n',
            "adaptor[0].command: must be an array of strings (program, then arguments)",
        ),
        (
            '[[adaptor]]\nname = "a"\ncommand = []\n',
            "adaptor[0].command: must be a non-empty array",
        ),
        (
            '[[adaptor]]\nname = "a"\ncommand = ["x", 1]\n',
            "adaptor[0].command[1]: must be a string",
        ),
        ('[[adaptor]]\nname = "a"\ncommand = [""]\n', "adaptor[0].command[0]: must not be empty"),
        (
            MINIMAL + MINIMAL,
            "host.toml: adaptor[1].name: duplicate adaptor name 'memory' (also adaptor[0])",
        ),
        # numbers
        (
            MINIMAL + MINIMAL.replace("memory", "second") + '[adaptor.health]\ninterval = "fast"\n',
            'host.toml: adaptor[1].health.interval: must be a positive number, got "fast"',
        ),
        (
            MINIMAL + "[adaptor.health]\ninterval = 0\n",
            "health.interval: must be a positive number, got 0",
        ),
        (
            MINIMAL + "[adaptor.health]\ntimeout = -1.5\n",
            "health.timeout: must be a positive number, got -1.5",
        ),
        (
            MINIMAL + "[adaptor.health]\ntimeout = true\n",
            "health.timeout: must be a positive number, got true",
        ),
        (
            MINIMAL + "[adaptor.health]\ntimeout = inf\n",
            "health.timeout: must be a positive number, got inf",
        ),
        (
            MINIMAL + "[adaptor.health]\ntimeout = nan\n",
            "health.timeout: must be a positive number, got nan",
        ),
        (
            MINIMAL + "[adaptor.health]\nfailure_threshold = 1.5\n",
            "adaptor[0].health.failure_threshold: must be a whole number >= 1, got 1.5",
        ),
        (
            MINIMAL + "[adaptor.health]\nfailure_threshold = 0\n",
            "failure_threshold: must be a whole number >= 1, got 0",
        ),
        (
            MINIMAL + "[adaptor.restart]\ninitial = 5\nmax = 2\n",
            "adaptor[0].restart.max: must be at least restart.initial (5.0), got 2.0",
        ),
        (
            MINIMAL + "[adaptor.restart]\nmultiplier = 0.5\n",
            "adaptor[0].restart.multiplier: must be at least 1, got 0.5",
        ),
        (
            MINIMAL + "[adaptor.restart]\njitter = 1\n",
            "adaptor[0].restart.jitter: must be a fraction below 1",
        ),
        (
            MINIMAL + "[adaptor.restart]\njitter = -0.1\n",
            "adaptor[0].restart.jitter: must be a number >= 0, got -0.1",
        ),
        (
            MINIMAL + "[adaptor.timeouts]\nstart = 0\n",
            "adaptor[0].timeouts.start: must be a positive number, got 0",
        ),
        (
            MINIMAL + "[adaptor.timeouts]\nterm_grace = -1\n",
            "adaptor[0].timeouts.term_grace: must be a number >= 0, got -1",
        ),
        (
            MINIMAL + '[adaptor.timeouts]\nshutdown_grace = "2s"\n',
            'timeouts.shutdown_grace: must be a number >= 0, got "2s"',
        ),
        # transport and env
        (
            MINIMAL + 'transport = "udp"\n',
            'adaptor[0].transport: must be "unix" or "tcp", got "udp"',
        ),
        (
            MINIMAL + 'transport = "tcp"\nauto_mtls = false\n',
            "adaptor[0].auto_mtls: cannot be false with transport",
        ),
        (MINIMAL + 'auto_mtls = "yes"\n', 'adaptor[0].auto_mtls: must be true or false, got "yes"'),
        (
            MINIMAL + "env = { SCALE = 2 }\n",
            'adaptor[0].env.SCALE: must be a string, got 2 (write "2")',
        ),
        (
            MINIMAL + 'env = { "A=B" = "x" }\n',
            "adaptor[0].env.A=B: not a valid environment variable name",
        ),
        (
            MINIMAL + 'env = { PLUGIN_PROTOCOL_VERSIONS = "1" }\n',
            "adaptor[0].env.PLUGIN_PROTOCOL_VERSIONS: is set by the host for every adaptor",
        ),
        (MINIMAL + 'env = "A=B"\n', 'adaptor[0].env: must be a table, got "A=B"'),
        (MINIMAL + "cwd = 1\n", "adaptor[0].cwd: must be a string, got 1"),
        # admin
        (
            '[admin]\ntcp = "7070"\n',
            'host.toml: admin.tcp: must be "HOST:PORT" with a port from 1 to 65535, got "7070"',
        ),
        ('[admin]\ntcp = "localhost:99999"\n', 'admin.tcp: must be "HOST:PORT"'),
        ('[admin]\ntcp = "localhost:0"\n', 'admin.tcp: must be "HOST:PORT"'),
        ('[admin]\ntcp = "127.0.0.1:7070"\n', "host.toml: admin.tls_cert: required with admin.tcp"),
        (
            '[admin]\ntcp = "127.0.0.1:7070"\ntls_cert = "c"\ntls_key = "k"\n',
            "host.toml: admin.token_file: required with admin.tcp",
        ),
        ('[admin]\ntoken_file = "t"\n', "host.toml: admin.token_file: only applies with admin.tcp"),
        (
            '[admin]\nsocket = "' + "s" * MAX_SOCKET_PATH_BYTES + '"\n',
            "host.toml: admin.socket: the socket path",
        ),
    ],
)
def test_refusals_name_the_key(text: str, expected: str) -> None:
    assert expected in refused(text)


def test_ipv6_admin_address() -> None:
    text = '[admin]\ntcp = "[::1]:7070"\ntls_cert = "c"\ntls_key = "k"\ntoken_file = "t"\n'
    assert load(text).admin.tcp == ("::1", 7070)


def test_socket_path_limit_counts_bytes_of_the_resolved_path() -> None:
    # 99 bytes is the longest accepted path (the limit leaves room for the terminating NUL).
    base = Path("/" + "d" * (MAX_SOCKET_PATH_BYTES - len("/var/admin.sock") - 2))
    assert len(str(base / "var/admin.sock")) == MAX_SOCKET_PATH_BYTES - 1
    load_config("", base)
    with pytest.raises(ConfigError, match=r"admin\.socket: .* is 100 bytes"):
        load_config("", Path(str(base) + "d"))


def test_adaptor_index_is_zero_based_in_messages() -> None:
    text = MINIMAL + '[[adaptor]]\nname = "b"\ncommand = ["x"]\n[adaptor.restart]\nmax = "x"\n'
    assert "adaptor[1].restart.max" in refused(text)


def test_the_example_config_loads() -> None:
    example = Path(__file__).resolve().parents[2] / "examples" / "host.toml"
    config = read_config(example)
    [memory] = config.adaptors
    assert memory.name == "memory"
    assert memory.command[0] == sys.executable
    assert memory.cwd == example.parent
    assert (example.parent / memory.command[1]).resolve() == (
        example.parents[1] / "adaptors" / "memory-python" / "adaptor.py"
    )
    assert config.state_dir == example.parents[1] / "var" / "example"
    assert config.admin.socket == example.parents[1] / "var" / "example" / "admin.sock"
