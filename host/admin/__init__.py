"""The host's operator API: HostAdmin, grpc.health.v1 and reflection on the admin address.

- :mod:`host.admin.server`: the gRPC servers (unix socket, optional TLS + token TCP).
- :mod:`host.admin.convert`: supervisor snapshots to admin protos.
- :mod:`host.admin.auth`: the bearer-token check for the TCP listener.
"""

from host.admin.auth import BearerTokenInterceptor
from host.admin.convert import adaptor_to_proto
from host.admin.server import AdminError, AdminServer, EngineAdmin, HostAdminServicer

__all__ = [
    "AdminError",
    "AdminServer",
    "BearerTokenInterceptor",
    "EngineAdmin",
    "HostAdminServicer",
    "adaptor_to_proto",
]
