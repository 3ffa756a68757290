"""Opening gRPC channels that every HTTP/2 stack accepts: the one way this project opens them.

On a unix-socket target gRPC's C core sends the percent-encoded socket path as the HTTP/2
``:authority`` (``tmp%2Fx%2Fadaptor.sock``). grpc-go, grpc-js and grpc C-core servers let it
pass, but Rust's ``http`` crate (under h2, hyper and tonic) refuses ``%`` in an authority and
resets every stream (``RST_STREAM`` with ``PROTOCOL_ERROR``). grpc-go itself sends
``localhost`` on unix targets; so does every channel opened here. TCP targets keep gRPC's
default (``host:port``), and with TLS the name checked stays the one the credentials say.

Every channel the host opens (to an adaptor, to its own admin, Engine and Connector sockets, to
the simulated ledger) and the SDK's own clients come from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import grpc

#: The ``:authority`` sent on unix-socket targets (grpc-go's choice; valid for every stack).
UNIX_AUTHORITY: Final = "localhost"

#: A gRPC channel option: (name, value).
Option = tuple[str, Any]


def is_unix_target(target: str) -> bool:
    """Whether ``target`` names a unix socket (``unix:PATH``, ``unix://PATH``,
    ``unix-abstract:NAME``)."""
    return target.startswith(("unix:", "unix-abstract:"))


def channel_options(target: str, options: Sequence[Option] = ()) -> list[Option]:
    """``options`` plus the authority rule for ``target``; an authority the caller set wins."""
    merged = list(options)
    if is_unix_target(target) and not any(name == "grpc.default_authority" for name, _ in merged):
        merged.append(("grpc.default_authority", UNIX_AUTHORITY))
    return merged


def aio_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[Option] = (),
) -> grpc.aio.Channel:
    """An asyncio channel to ``target``: TLS with ``credentials`` if given, else plaintext."""
    merged = channel_options(target, options)
    if credentials is None:
        return grpc.aio.insecure_channel(target, options=merged)
    return grpc.aio.secure_channel(target, credentials, options=merged)


def blocking_channel(
    target: str,
    credentials: grpc.ChannelCredentials | None = None,
    options: Sequence[Option] = (),
) -> grpc.Channel:
    """A blocking channel to ``target``: TLS with ``credentials`` if given, else plaintext."""
    merged = channel_options(target, options)
    if credentials is None:
        return grpc.insecure_channel(target, options=merged)
    return grpc.secure_channel(target, credentials, options=merged)
