"""The ILPv4 packet layer: OER codec, addresses, error codes and ``peer.settle`` messages.

Pure functions and values only, no I/O. The names most callers need are re-exported here:

- :func:`parse` / :func:`serialize` and the :class:`Prepare`, :class:`Fulfill`,
  :class:`Reject` dataclasses (:mod:`host.ilp.packet`);
- :class:`IlpPacketError`, the only exception parsing raises (:mod:`host.ilp.oer`);
- :class:`ErrorCode` (:mod:`host.ilp.errors`) and :func:`make_reject`;
- address validation (:mod:`host.ilp.address`) and settlement messages
  (:mod:`host.ilp.peer_settle`);
- the peer protocols ILDCP (:mod:`host.ilp.ildcp`), CCP route broadcast
  (:mod:`host.ilp.ccp`) and reconciliation (:mod:`host.ilp.reconcile`).
"""

from host.ilp.errors import ErrorCode, ErrorFamily
from host.ilp.oer import IlpPacketError
from host.ilp.packet import (
    Fulfill,
    Packet,
    PacketType,
    Prepare,
    Reject,
    Reply,
    make_reject,
    parse,
    parse_prepare,
    parse_reply,
    serialize,
)

__all__ = [
    "ErrorCode",
    "ErrorFamily",
    "Fulfill",
    "IlpPacketError",
    "Packet",
    "PacketType",
    "Prepare",
    "Reject",
    "Reply",
    "make_reject",
    "parse",
    "parse_prepare",
    "parse_reply",
    "serialize",
]
