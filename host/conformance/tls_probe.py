"""Does the adaptor's TLS listener accept a client? A probe below gRPC, for the mutual-TLS check.

The probe connects with Python's ``ssl`` (OpenSSL), trusting exactly the adaptor's certificate
and presenting a certificate of the caller's choice (or none), speaks the HTTP/2 client preface
and waits for the server's first frame. In TLS 1.3 a server checks the client's certificate
after the client has finished its part of the handshake, so a refusal shows up only when the
client reads: an alert, a reset or the end of the stream. A server that accepted answers with
its HTTP/2 SETTINGS frame.

gRPC's C core as a TLS 1.3 server often never reads data that arrives right behind the
client's Finished message (an OpenSSL client sends both at once): the connection then just
hangs. So the preface waits a moment after the handshake, and a probe that hears nothing is
made again on a new connection with a longer pause, a few times; only an answer (SETTINGS, an
alert, a reset, the end of the stream) decides.
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
#: Connections tried while none is answered, and how long each waits for an answer.
ATTEMPTS: Final = 5
ATTEMPT_WAIT: Final = 2.0
#: The pause between the handshake and the preface on the first connection (doubled on each
#: further one).
FIRST_PAUSE: Final = 0.1


class _Silent(Exception):
    """The server answered nothing on this connection."""


async def probe(handshake: Handshake, client: mtls.Certificate | None, within: float) -> str | None:
    """None if the adaptor at ``handshake``'s address accepted a TLS client presenting
    ``client`` (answered HTTP/2); else how it refused, or that it never answered."""
    assert handshake.server_cert_der is not None, "the adaptor serves no TLS"
    context = mtls.ssl_client_context(client, mtls.der_to_pem(handshake.server_cert_der))
    wait = min(within, ATTEMPT_WAIT)
    for attempt in range(ATTEMPTS):
        try:
            return await _attempt(handshake, context, wait, FIRST_PAUSE * 2**attempt)
        except _Silent:
            continue
    return f"no answer from {handshake.grpc_target()} on {ATTEMPTS} connections"


async def _attempt(
    handshake: Handshake, context: ssl.SSLContext, wait: float, pause: float
) -> str | None:
    try:
        async with asyncio.timeout(wait + pause):
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
                await asyncio.sleep(pause)
                writer.write(_PREFACE)
                await writer.drain()
                frame = await reader.read(_HEADER)
            finally:
                writer.close()
                with contextlib.suppress(OSError, ssl.SSLError):
                    await writer.wait_closed()
    except TimeoutError:
        raise _Silent from None
    except (ssl.SSLError, OSError, asyncio.IncompleteReadError) as exc:
        return f"{type(exc).__name__}: {exc}"
    if len(frame) >= 4 and frame[3] == _SETTINGS:
        return None
    return f"the connection ended without an HTTP/2 answer (read {frame!r})"
