"""The constants of the adaptor contract, shared by the SDK, the host and docs/protocol.md.

Everything an adaptor in another language needs to match is here; tests check that
docs/protocol.md names the same values.
"""

from __future__ import annotations

from typing import Final

#: go-plugin's core protocol version: the first field of the handshake line.
CORE_PROTOCOL_VERSION: Final = 1

#: Contract (go-plugin "app protocol") versions this release speaks, oldest first.
CONTRACT_VERSIONS: Final = (1,)

#: The magic cookie: the host sets ``MAGIC_COOKIE_KEY=MAGIC_COOKIE_VALUE`` in the adaptor's
#: environment. Without it an adaptor was started by hand; it says so and exits 1.
MAGIC_COOKIE_KEY: Final = "ILP_SETTLEMENT_ADAPTOR"
MAGIC_COOKIE_VALUE: Final = "5c1d7e0a9b3f4e2c8a6d1f0b7e9c3a5d"

# Environment variables the host sets (the PLUGIN_* ones are go-plugin's own).
ENV_PROTOCOL_VERSIONS: Final = "PLUGIN_PROTOCOL_VERSIONS"
ENV_CLIENT_CERT: Final = "PLUGIN_CLIENT_CERT"
ENV_MIN_PORT: Final = "PLUGIN_MIN_PORT"
ENV_MAX_PORT: Final = "PLUGIN_MAX_PORT"
ENV_UNIX_SOCKET_DIR: Final = "PLUGIN_UNIX_SOCKET_DIR"
#: "unix" (default) or "tcp": where the adaptor listens.
ENV_TRANSPORT: Final = "ILP_ADAPTOR_TRANSPORT"
#: The gRPC target of the host's Engine service, e.g. "unix:/run/ilp-host/engine.sock".
ENV_ENGINE_ADDR: Final = "ILP_HOST_ENGINE_ADDR"
#: The adaptor's configured name in the host.
ENV_ADAPTOR_NAME: Final = "ILP_ADAPTOR_NAME"

#: The grpc.health.v1 service name an adaptor reports SERVING under, as go-plugin expects.
HEALTH_SERVICE: Final = "plugin"

#: The protocol field of the handshake line.
HANDSHAKE_PROTOCOL: Final = "grpc"

#: Largest ReceiveData/SendData payload: the data limit of an ILP packet.
MAX_DATA_BYTES: Final = 32767
