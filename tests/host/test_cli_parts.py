"""The CLI's parts that need no running host: usage errors, admin targets, state dir and lock,
the TCP listener's files."""

from __future__ import annotations

import stat
import threading
from pathlib import Path

import pytest

from host.app import HostError, prepare_state_dir, state_lock, tcp_listener
from host.cli import EXIT_FAILURE, EXIT_UNREACHABLE, EXIT_USAGE, build_parser, main
from host.config import AdminConfig, ConfigError
from sdk.mtls import generate_certificate


def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (
        [],
        ["frobnicate"],
        ["status", "--json", "--nope"],
        ["status", "-c", "a", "--admin", "b"],
    ):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == EXIT_USAGE, argv
    capsys.readouterr()


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["status"])
    assert (args.config, args.admin, args.json, args.watch, args.timeout) == (
        "host.toml",
        None,
        False,
        False,
        10.0,
    )
    args = build_parser().parse_args(["health", "memory", "--admin", "unix:/x"])
    assert (args.name, args.admin) == ("memory", "unix:/x")


def test_missing_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "-c", str(tmp_path / "nope.toml")]) == EXIT_USAGE
    assert "cannot read the config file" in capsys.readouterr().err


def test_missing_admin_socket_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    socket = tmp_path / "admin.sock"
    assert main(["status", "--admin", f"unix:{socket}"]) == EXIT_FAILURE
    assert f"no admin socket at {socket}: is `ilp-host run` running?" in capsys.readouterr().err
    # health tells "no answer" (3) apart from NOT_SERVING (4), like grpc_health_probe.
    assert main(["health", "--admin", f"unix:{socket}"]) == EXIT_UNREACHABLE
    assert f"no admin socket at {socket}: is `ilp-host run` running?" in capsys.readouterr().err


def test_unreadable_token_file_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["status", "--admin", "127.0.0.1:1", "--token-file", str(tmp_path / "t")]
    assert main(argv) == EXIT_USAGE
    assert "cannot read" in capsys.readouterr().err


def test_state_dir_is_private(tmp_path: Path) -> None:
    state = tmp_path / "a" / "state"
    prepare_state_dir(state)
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    # Every directory the host created, not only the last one (mkdir(parents=True) gave 0755).
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o700
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o755)
    shared.chmod(0o755)
    prepare_state_dir(shared / "b" / "state")
    assert stat.S_IMODE(shared.stat().st_mode) == 0o755  # not created here: left alone
    assert stat.S_IMODE((shared / "b").stat().st_mode) == 0o700
    prepare_state_dir(state)  # existing: fine
    (tmp_path / "file").write_text("")
    with pytest.raises(HostError, match="cannot create the state directory"):
        prepare_state_dir(tmp_path / "file" / "state")


def test_hosts_started_together_share_missing_parents(tmp_path: Path) -> None:
    """Two hosts of one tree (the peering example's parent and child) create the same missing
    parent at once: the one that loses the race uses it (it raised FileExistsError)."""
    for attempt in range(30):
        root = tmp_path / f"var{attempt}"
        barrier = threading.Barrier(6)
        errors: list[BaseException] = []

        def start(
            name: str,
            root: Path = root,
            barrier: threading.Barrier = barrier,
            errors: list[BaseException] = errors,
        ) -> None:
            barrier.wait()
            try:
                prepare_state_dir(root / "peering" / name)
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=start, args=(f"host{i}",)) for i in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert errors == []
        assert stat.S_IMODE((root / "peering").stat().st_mode) == 0o700


def test_one_host_per_state_dir(tmp_path: Path) -> None:
    refused = pytest.raises(HostError, match=r"another ilp-host \(pid \d+\) is running")
    with state_lock(tmp_path), refused, state_lock(tmp_path):
        pass
    with state_lock(tmp_path):  # released
        pass


def tcp_admin(tmp_path: Path) -> AdminConfig:
    certificate = generate_certificate()
    (tmp_path / "cert.pem").write_bytes(certificate.cert_pem)
    (tmp_path / "key.pem").write_bytes(certificate.key_pem)
    (tmp_path / "token").write_text("tok\n")
    for secret in ("key.pem", "token"):
        (tmp_path / secret).chmod(0o600)
    return AdminConfig(
        socket=tmp_path / "admin.sock",
        tcp=("127.0.0.1", 7070),
        tls_cert=tmp_path / "cert.pem",
        tls_key=tmp_path / "key.pem",
        token_file=tmp_path / "token",
    )


def test_tcp_listener_reads_its_files(tmp_path: Path) -> None:
    admin = tcp_admin(tmp_path)
    listener = tcp_listener(admin, "host.toml")
    assert listener is not None
    assert (listener.host, listener.port, listener.tls.token) == ("127.0.0.1", 7070, "tok")
    assert listener.tls.cert_chain == (tmp_path / "cert.pem").read_bytes()
    assert tcp_listener(AdminConfig(socket=tmp_path / "s"), "host.toml") is None


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("cert.pem", None, "host.toml: admin.tls: cannot read"),
        (
            "cert.pem",
            b"not a certificate",
            "host.toml: admin.tls_cert: .* is not a PEM certificate",
        ),
        (
            "key.pem",
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            "admin.tls_key",
        ),
        ("token", b"  \n", "host.toml: admin.token_file: .* is empty"),
        ("token", None, "admin.token_file: cannot read"),
    ],
)
def test_tcp_listener_refusals(
    tmp_path: Path, file: str, content: bytes | None, message: str
) -> None:
    admin = tcp_admin(tmp_path)
    if content is None:
        (tmp_path / file).unlink()
    else:
        (tmp_path / file).write_bytes(content)
    with pytest.raises(ConfigError, match=message):
        tcp_listener(admin, "host.toml")


@pytest.mark.parametrize(("secret", "key"), [("key.pem", "tls_key"), ("token", "token_file")])
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_secrets_other_users_can_read_are_refused(
    tmp_path: Path, secret: str, key: str, mode: int
) -> None:
    admin = tcp_admin(tmp_path)
    (tmp_path / secret).chmod(mode)
    with pytest.raises(ConfigError) as refused:
        tcp_listener(admin, "host.toml")
    message = str(refused.value)
    assert f"admin.{key}" in message
    assert str(tmp_path / secret) in message
    assert f"mode {mode:04o}" in message and "chmod 600" in message
