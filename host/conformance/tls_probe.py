"""Does the adaptor's TLS listener accept a client? A probe below gRPC, for the mutual-TLS check.

The probe connects with Python's ``ssl`` (OpenSSL), trusting exactly the adaptor's certificate
and presenting a certificate of the caller's choice (or none), speaks the HTTP/2 client preface
and waits for the server's first frame. In TLS 1.3 a server checks the client's certificate
after the client has finished its part of the handshake, so a refusal shows up only when the
client reads: an alert, a reset or the end of the stream. A server that accepted answers with
its HTTP/2 SETTINGS frame.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from typing import Final

from sdk import mtls
from sdk.handshake import Handshake

#: The HTTP/2 client connection preface and an empty SETTINGS frame (RFC 9113, section 3.4).
_PREFACE: Final = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])
_SETTINGS: Final = 4
_HEADER: Final = 9


async def probe(handshake: Handshake, client: mtls.Certificate | None, within: float) -> str | None:
    """None if the adaptor at ``handshake``'s address accepted a TLS client presenting
    ``client`` (answered HTTP/2); else how it refused."""
    assert handshake.server_cert_der is not None, "the adaptor serves no TLS"
    context = mtls.ssl_client_context(client, mtls.der_to_pem(handshake.server_cert_der))
    target = handshake.grpc_target()
    try:
        async with asyncio.timeout(within):
            if handshake.network == "unix":
                reader, writer = await asyncio.open_unix_connection(
                    handshake.address, ssl=context, server_hostname=mtls.SERVER_NAME
                )
            else:
                host, _, port = handshake.address.rpartition(":")
                reader, writer = await asyncio.open_connection(
                    host, int(port), ssl=context, server_hostname=mtls.SERVER_NAME
                )
            try:
                writer.write(_PREFACE)
                await writer.drain()
                frame = await reader.read(_HEADER)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        return f"no answer from {target} within {within:g} s"
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(frame) >= 4 and frame[3] == _SETTINGS:
        return None
    return f"the connection ended without an HTTP/2 answer (read {frame!r})"
