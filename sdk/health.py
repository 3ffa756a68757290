"""grpc.health.v1 with every method its .proto declares: ``Check``, ``Watch`` and ``List``.

grpcio-health-checking's asyncio servicer implements ``Check`` and ``Watch``, but the service
descriptor (which server reflection advertises) also has ``List``: a client that calls it got
UNIMPLEMENTED and the server logged an ERROR with a traceback. :class:`HealthServicer` answers
``List`` with every service's current status, as the .proto describes.
"""

from __future__ import annotations

from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2

_Base: Any = health.aio.HealthServicer  # type: ignore[attr-defined]


class HealthServicer(_Base):  # type: ignore[misc]
    """The asyncio health servicer plus ``List`` (see the module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self._statuses: dict[str, int] = {"": health_pb2.HealthCheckResponse.SERVING}
        self._shut_down = False

    async def set(self, service: str, status: int) -> None:
        """Set ``service``'s status (watchers are told); ignored after the shutdown began."""
        if not self._shut_down:
            self._statuses[service] = status
        await super().set(service, status)

    async def enter_graceful_shutdown(self) -> None:
        """Every service NOT_SERVING from now on; later ``set`` calls are ignored."""
        self._shut_down = True
        for service in self._statuses:
            self._statuses[service] = health_pb2.HealthCheckResponse.NOT_SERVING
        await super().enter_graceful_shutdown()

    async def List(
        self, request: health_pb2.HealthListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> health_pb2.HealthListResponse:
        return health_pb2.HealthListResponse(
            statuses={
                name: health_pb2.HealthCheckResponse(status=status)
                for name, status in self._statuses.items()
            }
        )
