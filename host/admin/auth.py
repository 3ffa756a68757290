"""Bearer-token authentication for the admin API's TCP listener.

Callers send ``authorization: Bearer <token>`` (gRPC's standard access-token metadata, what
``grpc.access_token_call_credentials`` produces). A missing or wrong token is refused with
UNAUTHENTICATED before the handler runs. The comparison takes constant time so that the
token cannot be guessed byte by byte from response times.

grpc.health.v1.Health is exempt: probes (Kubernetes' native gRPC probe among them) cannot send
headers, and it only tells SERVING or NOT_SERVING.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:  # grpc's classes are generic only in the type stubs
    Handler = grpc.RpcMethodHandler[Any, Any]
    ServerInterceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    ServerInterceptor = grpc.aio.ServerInterceptor
HEALTH_SERVICE_PREFIX = "/grpc.health.v1.Health/"


def bearer_token(metadata: Iterable[tuple[str, str | bytes]] | None) -> bytes | None:
    """The token of the ``authorization: Bearer ...`` entry of ``metadata``, if any."""
    for key, value in metadata or ():
        if key.lower() != "authorization":
            continue
        raw = value.encode() if isinstance(value, str) else value
        scheme, _, token = raw.partition(b" ")
        if scheme.lower() == b"bearer" and token:
            return token.strip()
    return None


class BearerTokenInterceptor(ServerInterceptor):
    """Refuses every call whose bearer token is not ``token`` (health checks excepted)."""

    def __init__(self, token: str) -> None:
        self._token = token.encode()

    def authorized(self, metadata: Iterable[tuple[str, str | bytes]] | None) -> bool:
        """Whether ``metadata`` carries the right token (constant-time comparison)."""
        presented = bearer_token(metadata)
        # compare_digest on equal-length inputs only leaks the length of the presented value.
        return presented is not None and hmac.compare_digest(presented, self._token)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler:
        handler = await continuation(handler_call_details)
        method: str = handler_call_details.method
        # handler is None for a method no servicer has: let gRPC answer UNIMPLEMENTED.
        if handler is None or method.startswith(HEALTH_SERVICE_PREFIX):
            return handler
        if self.authorized(handler_call_details.invocation_metadata):
            return handler
        return _refusal(handler, method)


def _refusal(handler: Handler, method: str) -> Handler:
    """A handler of the same shape as ``handler`` that answers UNAUTHENTICATED."""
    message = f"{method}: missing or wrong bearer token (send 'authorization: Bearer <token>')"

    async def refuse(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> None:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)

    async def refuse_stream(_request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        await context.abort(grpc.StatusCode.UNAUTHENTICATED, message)
        yield  # pragma: no cover - abort raises; this makes the function an async generator

    deserializer = handler.request_deserializer
    serializer = handler.response_serializer
    if handler.request_streaming and handler.response_streaming:
        return grpc.stream_stream_rpc_method_handler(refuse_stream, deserializer, serializer)
    if handler.request_streaming:
        return grpc.stream_unary_rpc_method_handler(refuse, deserializer, serializer)
    if handler.response_streaming:
        return grpc.unary_stream_rpc_method_handler(refuse_stream, deserializer, serializer)
    return grpc.unary_unary_rpc_method_handler(refuse, deserializer, serializer)
