"""CCP, the connector-to-connector route broadcast protocol, as ilp-connector and interledger-rs
speak it (npm ``ilp-protocol-ccp``; interledger/rfcs 0010's successor). Pure codec.

Two messages, each the data of a Prepare (amount 0, the peer-protocol condition) answered by a
Fulfill of 32 zero bytes with empty data:

- ``peer.route.control`` (a receiver to a sender): mode (uint8: 0 idle, 1 sync), the last
  routing table id the receiver knows (16 bytes, a UUID), the last epoch it has (uint32), and
  its features (a var-uint count of UTF-8 var-octet strings).
- ``peer.route.update`` (a sender to a receiver): routing table id (16 bytes), current epoch,
  from epoch, to epoch, hold-down time in milliseconds (each uint32), the speaker's address,
  the new routes (a var-uint count of: prefix, path (a var-uint count of addresses), auth
  (32 bytes), properties (a var-uint count of: meta byte, id uint16, value)), and the withdrawn
  prefixes (a var-uint count of var-octet strings).

Counts are OER variable-length unsigned integers (``01 02`` for two), as the reference writes
them.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Final

from host.ilp.errors import ErrorCode
from host.ilp.ildcp import PEER_PROTOCOL_CONDITION, PEER_PROTOCOL_FULFILLMENT
from host.ilp.oer import IlpPacketError, Reader, var_octets, var_uint
from host.ilp.packet import Fulfill, Prepare, Reject, Reply

CONTROL_ADDRESS: Final = "peer.route.control"
UPDATE_ADDRESS: Final = "peer.route.update"
AUTH_LENGTH: Final = 32
#: Bounds on counts, far above any real table, so a hostile count cannot make us loop long.
MAX_COUNT: Final = 100_000

_OPTIONAL: Final = 0x80
_TRANSITIVE: Final = 0x40
_PARTIAL: Final = 0x20
_UTF8: Final = 0x10


class Mode(enum.IntEnum):
    """Whether the receiver wants route updates (SYNC) or not (IDLE)."""

    IDLE = 0
    SYNC = 1


class CcpError(ValueError):
    """A CCP exchange that failed; ``code`` is the peer's ILP error code (or F01)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class RouteControl:
    """A receiver's request to be sent updates from ``last_known_epoch`` of that table on."""

    mode: Mode
    last_known_routing_table_id: uuid.UUID
    last_known_epoch: int
    features: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteProp:
    """A route property (none are defined; carried through for completeness)."""

    id: int
    value: bytes
    is_optional: bool = False
    is_transitive: bool = True
    is_partial: bool = False
    is_utf8: bool = False


@dataclass(frozen=True, slots=True)
class CcpRoute:
    """A route as advertised: the prefix, the path of connectors to it, an opaque auth."""

    prefix: str
    path: tuple[str, ...]
    auth: bytes = bytes(AUTH_LENGTH)
    props: tuple[RouteProp, ...] = ()


@dataclass(frozen=True, slots=True)
class RouteUpdate:
    """The sender's routing-table changes between two epochs (a heartbeat when empty)."""

    routing_table_id: uuid.UUID
    current_epoch: int
    from_epoch: int
    to_epoch: int
    hold_down_time: int
    speaker: str
    new_routes: tuple[CcpRoute, ...] = field(default=())
    withdrawn_routes: tuple[str, ...] = field(default=())


# -- encoding ------------------------------------------------------------------------------


def _uint32(value: int, name: str) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise IlpPacketError(name, f"must be 0..2**32-1, got {value}")
    return value.to_bytes(4, "big")


def encode_control(control: RouteControl) -> bytes:
    """The data of a ``peer.route.control`` Prepare."""
    parts = [
        bytes((int(control.mode),)),
        control.last_known_routing_table_id.bytes,
        _uint32(control.last_known_epoch, "RouteControl.last_known_epoch"),
        var_uint(len(control.features)),
    ]
    parts.extend(var_octets(feature.encode("utf-8")) for feature in control.features)
    return b"".join(parts)


def _prop_meta(prop: RouteProp) -> int:
    # As the reference writes it: a mandatory property is always transitive.
    meta = 0
    if prop.is_optional:
        meta |= _OPTIONAL
        if prop.is_transitive:
            meta |= _TRANSITIVE
            if prop.is_partial:
                meta |= _PARTIAL
    else:
        meta |= _TRANSITIVE
    if prop.is_utf8:
        meta |= _UTF8
    return meta


def encode_update(update: RouteUpdate) -> bytes:
    """The data of a ``peer.route.update`` Prepare."""
    parts = [
        update.routing_table_id.bytes,
        _uint32(update.current_epoch, "RouteUpdate.current_epoch"),
        _uint32(update.from_epoch, "RouteUpdate.from_epoch"),
        _uint32(update.to_epoch, "RouteUpdate.to_epoch"),
        _uint32(update.hold_down_time, "RouteUpdate.hold_down_time"),
        var_octets(update.speaker.encode("ascii")),
        var_uint(len(update.new_routes)),
    ]
    for route in update.new_routes:
        if len(route.auth) != AUTH_LENGTH:
            raise IlpPacketError("CcpRoute.auth", f"must be {AUTH_LENGTH} bytes")
        parts.append(var_octets(route.prefix.encode("ascii")))
        parts.append(var_uint(len(route.path)))
        parts.extend(var_octets(hop.encode("ascii")) for hop in route.path)
        parts.append(route.auth)
        parts.append(var_uint(len(route.props)))
        for prop in route.props:
            parts.append(bytes((_prop_meta(prop),)))
            parts.append(prop.id.to_bytes(2, "big"))
            parts.append(var_octets(prop.value))
    parts.append(var_uint(len(update.withdrawn_routes)))
    parts.extend(var_octets(prefix.encode("ascii")) for prefix in update.withdrawn_routes)
    return b"".join(parts)


# -- decoding ------------------------------------------------------------------------------


def _count(reader: Reader, name: str) -> int:
    at = reader.pos
    count = reader.read_var_uint(name)
    if count > MAX_COUNT:
        raise IlpPacketError(name, f"count {count} exceeds {MAX_COUNT}", at)
    return count


def _text(reader: Reader, name: str, encoding: str = "ascii") -> str:
    raw = bytes(reader.read_var_octets(name))
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        raise IlpPacketError(name, f"is not {encoding} text") from None


def decode_control(data: bytes) -> RouteControl:
    """A route control request; IlpPacketError if malformed."""
    reader = Reader(data)
    mode_byte = reader.read_uint8("RouteControl.mode")
    if mode_byte not in (Mode.IDLE, Mode.SYNC):
        raise IlpPacketError("RouteControl.mode", f"must be 0 or 1, got {mode_byte}", 0)
    table_id = uuid.UUID(bytes=bytes(reader.read(16, "RouteControl.last_known_routing_table_id")))
    epoch = reader.read_uint(4, "RouteControl.last_known_epoch")
    features = tuple(
        _text(reader, "RouteControl.features", "utf-8")
        for _ in range(_count(reader, "RouteControl.features"))
    )
    reader.expect_end("RouteControl")
    return RouteControl(Mode(mode_byte), table_id, epoch, features)


def decode_update(data: bytes) -> RouteUpdate:
    """A route update request; IlpPacketError if malformed."""
    reader = Reader(data)
    table_id = uuid.UUID(bytes=bytes(reader.read(16, "RouteUpdate.routing_table_id")))
    current = reader.read_uint(4, "RouteUpdate.current_epoch")
    from_epoch = reader.read_uint(4, "RouteUpdate.from_epoch")
    to_epoch = reader.read_uint(4, "RouteUpdate.to_epoch")
    hold_down = reader.read_uint(4, "RouteUpdate.hold_down_time")
    speaker = _text(reader, "RouteUpdate.speaker")
    routes: list[CcpRoute] = []
    for _ in range(_count(reader, "RouteUpdate.new_routes")):
        prefix = _text(reader, "CcpRoute.prefix")
        path = tuple(_text(reader, "CcpRoute.path") for _ in range(_count(reader, "CcpRoute.path")))
        auth = bytes(reader.read(AUTH_LENGTH, "CcpRoute.auth"))
        props: list[RouteProp] = []
        for _ in range(_count(reader, "CcpRoute.props")):
            meta = reader.read_uint8("RouteProp.meta")
            prop_id = reader.read_uint(2, "RouteProp.id")
            value = bytes(reader.read_var_octets("RouteProp.value"))
            props.append(
                RouteProp(
                    prop_id,
                    value,
                    is_optional=bool(meta & _OPTIONAL),
                    is_transitive=bool(meta & _TRANSITIVE),
                    is_partial=bool(meta & _PARTIAL),
                    is_utf8=bool(meta & _UTF8),
                )
            )
        routes.append(CcpRoute(prefix, path, auth, tuple(props)))
    withdrawn = tuple(
        _text(reader, "RouteUpdate.withdrawn_routes")
        for _ in range(_count(reader, "RouteUpdate.withdrawn_routes"))
    )
    reader.expect_end("RouteUpdate")
    return RouteUpdate(
        table_id, current, from_epoch, to_epoch, hold_down, speaker, tuple(routes), withdrawn
    )


# -- packets -------------------------------------------------------------------------------


def control_prepare(control: RouteControl, expires_at: datetime) -> Prepare:
    """The Prepare that carries a route control request."""
    return Prepare(0, expires_at, PEER_PROTOCOL_CONDITION, CONTROL_ADDRESS, encode_control(control))


def update_prepare(update: RouteUpdate, expires_at: datetime) -> Prepare:
    """The Prepare that carries a route update."""
    return Prepare(0, expires_at, PEER_PROTOCOL_CONDITION, UPDATE_ADDRESS, encode_update(update))


def accepted() -> Fulfill:
    """The answer to a CCP request that was taken."""
    return Fulfill(PEER_PROTOCOL_FULFILLMENT, b"")


def check_reply(reply: Reply) -> None:
    """CcpError unless the peer took the request (a Fulfill of 32 zero bytes)."""
    if isinstance(reply, Reject):
        raise CcpError(reply.code, reply.message or "(no message)")
    if reply.fulfillment != PEER_PROTOCOL_FULFILLMENT:
        raise CcpError(ErrorCode.F05_WRONG_CONDITION, "the fulfillment is not 32 zero bytes")
