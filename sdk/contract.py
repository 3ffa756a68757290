"""The constants of the adaptor contract, shared by the SDK, the host and docs/protocol.md.

Everything an adaptor in another language needs to match is here; tests check that
docs/protocol.md names the same values.
"""

from __future__ import annotations

import re
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

# --- The grammar of the contract's ids, keys and amounts: the one definition the SDK, the host,
# the conformance suite and the Python adaptors use (docs/protocol.md, "Ids, keys and amounts").

#: An adaptor's configured name in the host (and in its health service name).
ADAPTOR_NAME: Final = re.compile(r"[A-Za-z0-9._-]{1,64}")
ADAPTOR_NAME_RULE: Final = "1 to 64 characters of [A-Za-z0-9._-]"

#: A host account id (``account_id`` everywhere): 1 to 128 of the URL-safe characters.
ACCOUNT_ID: Final = re.compile(r"[A-Za-z0-9._~-]{1,128}")
ACCOUNT_ID_RULE: Final = "1 to 128 characters of [A-Za-z0-9._~-]"

#: An idempotency key (SendMoney, SetBalance, the admin API): printable ASCII is 0x20 to 0x7E,
#: so the space is allowed (the engine's keys carry none, an operator's may).
IDEMPOTENCY_KEY: Final = re.compile(r"[\x20-\x7e]{1,128}")
IDEMPOTENCY_KEY_RULE: Final = "1 to 128 printable ASCII characters (0x20 to 0x7E, space included)"

#: A ledger's settlement id (IncomingSettlement, SendMoneyResponse): printable ASCII without the
#: space, long enough for on-chain hashes.
SETTLEMENT_ID: Final = re.compile(r"[\x21-\x7e]{1,255}")
SETTLEMENT_ID_RULE: Final = "1 to 255 printable ASCII characters without the space (0x21 to 0x7E)"

#: Amounts: base-10 digits, no sign, no leading zero; 78 digits hold every 256-bit integer.
MAX_AMOUNT_DIGITS: Final = 78
#: The largest ``scale`` of an Amount.
MAX_SCALE: Final = 255


def is_adaptor_name(value: str) -> bool:
    """Whether ``value`` is a well-formed adaptor name."""
    return ADAPTOR_NAME.fullmatch(value) is not None


def is_account_id(value: str) -> bool:
    """Whether ``value`` is a well-formed host account id."""
    return ACCOUNT_ID.fullmatch(value) is not None


def is_idempotency_key(value: str) -> bool:
    """Whether ``value`` is a well-formed idempotency key."""
    return IDEMPOTENCY_KEY.fullmatch(value) is not None


def is_settlement_id(value: str) -> bool:
    """Whether ``value`` is a well-formed ledger settlement id."""
    return SETTLEMENT_ID.fullmatch(value) is not None
