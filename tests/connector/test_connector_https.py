"""ILP-over-HTTP over TLS: peers linked by HTTPS with the certificates of a private CA (real
sockets on loopback), what the server and the client refuse, and the checks of the TLS files."""

from __future__ import annotations

import asyncio
import logging
import ssl
from pathlib import Path

import aiohttp
import pytest
from connector_harness import Https, network, prepare_to, token

from host.app import link_tls
from host.config import ConfigError, load_config
from host.connector.http import IlpHttpServer
from host.connector.http_guard import Limits
from host.credentials import https_client_context, https_server_context
from host.ilp import Fulfill, Reject, parse_reply, serialize
from tests.certificates import TestCa
from tests.polling import wait_until_async

#: Generous: each wait ends as soon as the server acts; this only bounds a broken server.
PATIENCE = 20.0


def https(directory: Path, ca: TestCa | None = None) -> Https:
    """Each host serves a certificate of ``ca`` for 127.0.0.1, and trusts that CA alone."""
    ca = ca or TestCa.make()
    cert, key = ca.write(directory, "server", "127.0.0.1", "localhost")
    (directory / "ca.pem").write_bytes(ca.cert_pem)
    return Https(
        https_server_context(cert, key, prefix="connector."),
        https_client_context(directory / "ca.pem", key="connector.peer_ca"),
    )


def test_peers_linked_by_https_clear_their_packets(tmp_path: Path) -> None:
    async def main() -> None:
        async with network([("a", "b")], https=https(tmp_path)) as net:
            assert net["b"].connector.url.startswith("https://127.0.0.1:")
            for amount in (5, 7):
                reply = await net["a"].connector.handle_prepare(None, prepare_to("test.b", amount))
                assert isinstance(reply, Fulfill), reply
            reply = await net["b"].connector.handle_prepare(None, prepare_to("test.a", 3))
            assert isinstance(reply, Fulfill), reply
            assert net["a"].clearing.balances == {"b": 3 - 12}
            assert net["b"].clearing.balances == {"a": 12 - 3}

    asyncio.run(main())


def test_a_peer_whose_certificate_is_not_trusted_is_not_sent_the_packet(tmp_path: Path) -> None:
    """a checks b's certificate against the system's trusted roots, which do not hold the
    tests' CA: the link fails before anything is sent (the token is never presented)."""
    files = https(tmp_path)
    system_roots = Https(files.server, ssl.create_default_context())

    async def main() -> None:
        async with network([("a", "b")], https=system_roots) as net:
            reply = await net["a"].connector.handle_prepare(None, prepare_to("test.b", 5))
            assert isinstance(reply, Reject), reply
            assert reply.code == "T01", reply  # the next hop is unreachable
            link = net["a"].connector.links.state("b")
            assert "certificate verify failed" in link.last_error, link
            assert net["a"].clearing.balances.get("b", 0) == 0
            assert net["b"].clearing.balances.get("a", 0) == 0

    asyncio.run(main())


def test_plain_http_to_the_https_server_gets_no_answer_and_no_error_log(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    files = https(tmp_path)

    async def main() -> None:
        async with network([("a", "b")], https=files) as net, aiohttp.ClientSession() as http:
            plain = net["b"].connector.url.replace("https://", "http://")
            body = serialize(prepare_to("test.b", 5))
            headers = {"Authorization": f"Bearer {token('a', 'b')}"}
            with pytest.raises(aiohttp.ClientError):
                async with http.post(plain, data=body, headers=headers) as response:
                    await response.read()
            # The same request over TLS, trusting the CA, is served.
            async with http.post(
                net["b"].connector.url, data=body, headers=headers, ssl=files.peers
            ) as response:
                assert response.status == 200
                assert isinstance(parse_reply(await response.read()), Fulfill)
            assert net["b"].clearing.balances == {"a": 5}  # a owes b

    with caplog.at_level(logging.DEBUG):
        asyncio.run(main())
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    # The client's mistake is one WARNING line, as every other one is.
    failed = [r for r in caplog.records if "TLS handshake" in r.getMessage()]
    assert [r.levelno for r in failed] == [logging.WARNING], failed
    assert failed[0].exc_info is None


async def echo(peer_id: str, body: bytes) -> bytes:
    return body


def test_connections_in_their_tls_handshake_are_counted_and_bounded(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A client that opens TCP connections and never starts TLS holds no more of them than
    the cap of unauthenticated connections, and none longer than the header timeout."""
    files = https(tmp_path)
    limits = Limits(header_timeout=0.5, max_unauthenticated=2, log_interval=0.0)

    async def main() -> None:
        server = IlpHttpServer(echo, {"p": "secret"}, limits=limits, tls=files.server)
        await server.start()
        try:
            silent = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
            await wait_until_async(
                lambda: server.guard.handshaking == 2, "two handshakes under way", timeout=PATIENCE
            )
            # A third is closed at once: two are open that have not authenticated.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            async with asyncio.timeout(PATIENCE):
                assert await reader.read() == b""
            writer.close()
            # The silent two are closed once the handshake's time is up, then HTTPS is served.
            for silent_reader, silent_writer in silent:
                async with asyncio.timeout(PATIENCE):
                    assert await silent_reader.read() == b""
                silent_writer.close()
            assert server.guard.handshaking == 0
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=files.peers, server_hostname="127.0.0.1"
            )
            body = b"ping"
            writer.write(
                b"POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer secret\r\n"
                b"Content-Type: application/octet-stream\r\nContent-Length: 4\r\n\r\n" + body
            )
            async with asyncio.timeout(PATIENCE):
                head = await reader.readuntil(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200"), head
            writer.close()
        finally:
            await server.stop()

    with caplog.at_level(logging.INFO):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("have not authenticated yet; closed a new one" in line for line in lines), lines
    assert sum("TLS handshake" in line for line in lines) == 2, lines
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


CONFIG = """
[connector]
address = "test.a"
host = "0.0.0.0"
port = 0
tls_cert = "server.crt"
tls_key = "server.key"
peer_ca = "ca.pem"
"""


def refusal(directory: Path) -> str:
    config = load_config(CONFIG, directory, source="host.toml")
    with pytest.raises(ConfigError) as refused:
        link_tls(config, "run")
    return str(refused.value)


def test_the_tls_files_are_checked_before_anything_listens(tmp_path: Path) -> None:
    ca = TestCa.make()
    cert, key = ca.write(tmp_path, "server", "alice.example")
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    config = load_config(CONFIG, tmp_path, source="host.toml")
    tls = link_tls(config, "run")
    assert tls.server is not None and tls.peers is not None
    assert link_tls(config, "engine").server is None  # the engine alone has no links

    key.chmod(0o644)
    assert refusal(tmp_path) == (
        f"host.toml: connector.tls_key: {key} has mode 0644: other users can read this "
        f"secret; chmod 600 {key}"
    )
    key.chmod(0o600)
    _, other_key = ca.issue("bob.example")
    key.write_bytes(other_key)
    assert refusal(tmp_path).startswith(
        f"host.toml: connector.tls_key: {key} does not go with the certificate {cert}"
    )
    cert.write_text("not a certificate")
    assert refusal(tmp_path) == f"host.toml: connector.tls_cert: {cert} is not a PEM certificate"
    ca.write(tmp_path, "server", "alice.example")
    (tmp_path / "ca.pem").unlink()
    assert refusal(tmp_path).startswith(
        f"host.toml: connector.peer_ca: cannot use {tmp_path / 'ca.pem'} as the CA certificates"
    )
