"""The handshake parse: every malformed line is refused with the rule it broke."""

from __future__ import annotations

import base64

import pytest

from sdk.handshake import Handshake, HandshakeError, HandshakeProblem, negotiate, parse


def test_unix_line_round_trips() -> None:
    line = "1|1|unix|/tmp/x/adaptor.sock|grpc|"
    handshake = parse(line + "\n", [1])
    assert handshake == Handshake(1, "unix", "/tmp/x/adaptor.sock")
    assert handshake.line() == line
    assert handshake.grpc_target() == "unix:/tmp/x/adaptor.sock"


def test_certificate_is_unpadded_base64_der() -> None:
    der = bytes(range(7))  # 7 bytes: base64 needs one pad character
    field = base64.b64encode(der).decode().rstrip("=")
    handshake = parse(f"1|2|tcp|127.0.0.1:4000|grpc|{field}", [1, 2])
    assert handshake.server_cert_der == der
    assert handshake.app_version == 2
    assert handshake.grpc_target() == "127.0.0.1:4000"
    assert handshake.line().endswith(field)
    assert "=" not in handshake.line()


def test_four_fields_suffice_but_mean_netrpc() -> None:
    with pytest.raises(HandshakeError) as caught:
        parse("1|1|unix|/tmp/s", [1])
    assert caught.value.problem is HandshakeProblem.PROTOCOL
    assert "netrpc" in str(caught.value)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("", HandshakeProblem.GARBAGE),
        ("hello world", HandshakeProblem.GARBAGE),
        ("1|1|unix", HandshakeProblem.GARBAGE),
        ("x|1|unix|/s|grpc|", HandshakeProblem.GARBAGE),
        ("1|one|unix|/s|grpc|", HandshakeProblem.GARBAGE),
        ("2|1|unix|/s|grpc|", HandshakeProblem.CORE_VERSION),
        ("1|3|unix|/s|grpc|", HandshakeProblem.APP_VERSION),
        ("1|1|udp|/s|grpc|", HandshakeProblem.NETWORK),
        ("1|1|unix||grpc|", HandshakeProblem.ADDRESS),
        ("1|1|unix|/s|netrpc|", HandshakeProblem.PROTOCOL),
        ("1|1|tcp|127.0.0.1:1|grpc|***", HandshakeProblem.CERT),
    ],
)
def test_malformed_lines(line: str, problem: HandshakeProblem) -> None:
    with pytest.raises(HandshakeError) as caught:
        parse(line, [1, 2])
    assert caught.value.problem is problem


def test_garbage_is_quoted_and_shortened() -> None:
    with pytest.raises(HandshakeError) as caught:
        parse("Traceback (most recent call last):" + "x" * 500, [1])
    message = str(caught.value)
    assert "Traceback" in message
    assert len(message) < 250


@pytest.mark.parametrize(
    ("offered", "supported", "chosen"),
    [
        ("1,2", [1, 2, 3], 2),
        ("3, 1", [1, 3], 3),
        (None, [2, 1], 1),
        ("", [4], 4),
        ("5,6", [1, 2], None),
        ("junk,2", [2], 2),
        ("1", [], None),
    ],
)
def test_negotiate(offered: str | None, supported: list[int], chosen: int | None) -> None:
    assert negotiate(offered, supported) == chosen
