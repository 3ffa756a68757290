"""Mutual TLS to an adaptor whose certificate gRPC's own TLS stack cannot verify.

A stock go-plugin plugin (``plugin.Serve`` with automatic mTLS) signs with ECDSA P-521.
gRPC's TLS stack in Python and C++ (BoringSSL) has no ``ecdsa_secp521r1_sha512`` among the
signature algorithms it verifies, and gRPC has no setting to add one (``GRPC_SSL_CIPHER_SUITES``
picks TLS 1.2 cipher suites, not signature algorithms), so every handshake ends in
``NO_COMMON_SIGNATURE_ALGORITHMS``. OpenSSL, under Python's ``ssl``, verifies P-521.

So the host carries such a channel itself: gRPC connects in plaintext to a unix socket in a
private directory (mode 0700, socket 0600) of the host's own, and each connection there is
carried over TLS made with ``ssl`` to the adaptor, with the same pinning as gRPC's would have
(trust exactly the adaptor's certificate, present the host's, server name "localhost", ALPN
h2). Nothing else can reach the plaintext side.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import socket
import ssl
import tempfile
from pathlib import Path
from typing import Final

from sdk import mtls
from sdk.handshake import Handshake

#: Curves whose signatures gRPC's TLS stack verifies; any other goes through a bridge.
GRPC_CURVES: Final = frozenset({"secp256r1", "secp384r1"})
#: Bytes carried per read.
CHUNK: Final = 64 * 1024

_log = logging.getLogger("ilp_host.supervisor")


def needs_bridge(server_cert_pem: bytes) -> bool:
    """Whether gRPC's TLS stack cannot verify the holder of this certificate (a P-521 key)."""
    curve = mtls.curve_of(server_cert_pem)
    return bool(curve) and curve not in GRPC_CURVES


class TlsBridge:
    """A private unix socket whose connections are carried over TLS to the adaptor of
    ``handshake``. Listening from ``open`` on; ``close`` ends every carried connection."""

    def __init__(self, handshake: Handshake, context: ssl.SSLContext) -> None:
        self._handshake = handshake
        self._context = context
        self._directory = Path(tempfile.mkdtemp(prefix="ilptls"))  # mode 0700
        self.path = self._directory / "bridge.sock"
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._task: asyncio.Task[None] | None = None
        self._carried: set[asyncio.Task[None]] = set()

    @classmethod
    def open(cls, handshake: Handshake, own: mtls.Certificate, server_cert_pem: bytes) -> TlsBridge:
        """Listen now (connections wait in the backlog until the loop accepts them), so that a
        channel can be pointed at ``target`` at once. Call from a running event loop."""
        bridge = cls(handshake, mtls.ssl_client_context(own, server_cert_pem))
        try:
            bridge._listener.bind(str(bridge.path))
            os.chmod(bridge.path, 0o600)
            bridge._listener.listen(64)
            bridge._listener.setblocking(False)
        except OSError:
            bridge._listener.close()
            shutil.rmtree(bridge._directory, ignore_errors=True)
            raise
        bridge._task = asyncio.get_running_loop().create_task(bridge._serve())
        return bridge

    @property
    def target(self) -> str:
        """The plaintext gRPC target that reaches the adaptor."""
        return f"unix:{self.path}"

    async def _serve(self) -> None:
        server = await asyncio.start_unix_server(self._accepted, sock=self._listener)
        async with server:
            await server.serve_forever()

    async def _accepted(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._carried.add(task)
        try:
            await self._carry(reader, writer)
        except asyncio.CancelledError:
            # ``close`` ends carried connections by cancelling them; asyncio's server reports
            # a cancelled connection task as an error, an ended one not.
            writer.close()
        finally:
            self._carried.discard(task)

    async def _carry(self, plain_in: asyncio.StreamReader, plain_out: asyncio.StreamWriter) -> None:
        handshake = self._handshake
        try:
            if handshake.network == "unix":
                tls_in, tls_out = await asyncio.open_unix_connection(
                    handshake.address, ssl=self._context, server_hostname=mtls.SERVER_NAME
                )
            else:
                host, _, port = handshake.address.rpartition(":")
                tls_in, tls_out = await asyncio.open_connection(
                    host, int(port), ssl=self._context, server_hostname=mtls.SERVER_NAME
                )
        except (OSError, ssl.SSLError) as exc:
            # gRPC sees the connection close and reports the channel as failing.
            _log.warning("TLS to the adaptor at %s failed: %s", handshake.address, exc)
            plain_out.close()
            return
        pumps = [
            asyncio.create_task(_pump(plain_in, tls_out)),
            asyncio.create_task(_pump(tls_in, plain_out)),
        ]
        try:
            # Either direction ending ends the connection: gRPC reconnects if it still wants it.
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            for writer in (tls_out, plain_out):
                writer.close()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def close(self) -> None:
        """Stop listening, end every carried connection, remove the socket directory."""
        tasks = [t for t in (self._task, *self._carried) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(OSError):
            self._listener.close()
        shutil.rmtree(self._directory, ignore_errors=True)


async def _pump(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy ``source`` to ``sink`` until the end of ``source`` or an error on either."""
    with contextlib.suppress(OSError, ssl.SSLError, ConnectionError):
        while chunk := await source.read(CHUNK):
            sink.write(chunk)
            await sink.drain()
