"""What the adaptors of the simulated ledger share: its account grammar and the peer messages.

The peer messages are ``ilphost.simledger.v1.PeerRequest`` and ``PeerReply``
(proto/ilphost/simledger/v1/peer_message.proto). One adaptor sends a PeerRequest as the ``data``
of Engine.SendData; the peer's adaptor gets it in ReceiveData and answers a PeerReply as the
response ``data``. The only kind today is the ledger-account exchange: each side names its own
account on the ledger. Pure functions; a malformed message is a PeerMessageError (a ValueError)
whose text is ready for an INVALID_ARGUMENT status.

This is the host's, not the SDK's: the simulated ledger is the host's, and only its in-tree
adaptors (which may import ``host``) speak these messages; an adaptor author's SDK carries none
of it.
"""

from __future__ import annotations

import re
from typing import Final

from google.protobuf.message import DecodeError

from host.pb.ilphost.simledger.v1 import peer_message_pb2
from sdk.contract import MAX_DATA_BYTES

#: An account on the simulated ledger (host.simledger refuses any other).
LEDGER_ACCOUNT: Final = re.compile(r"[A-Za-z0-9._~:-]{1,128}")
LEDGER_ACCOUNT_RULE: Final = "1 to 128 characters of [A-Za-z0-9._~:-]"
#: The ``kind`` of the ledger-account exchange, in PeerRequest and PeerReply.
LEDGER_ACCOUNT_EXCHANGE: Final = "ledger_account_exchange"


class PeerMessageError(ValueError):
    """A peer message that cannot be used; the text says why."""


def is_ledger_account(value: str) -> bool:
    """Whether ``value`` is a well-formed account of the simulated ledger."""
    return LEDGER_ACCOUNT.fullmatch(value) is not None


def ledger_account_request(ledger_account: str) -> bytes:
    """The PeerRequest telling the peer's adaptor that ``ledger_account`` is ours."""
    exchange = peer_message_pb2.LedgerAccountExchange(ledger_account=ledger_account)
    return peer_message_pb2.PeerRequest(ledger_account_exchange=exchange).SerializeToString()


def ledger_account_reply(ledger_account: str) -> bytes:
    """The PeerReply to a ledger-account exchange, naming ``ledger_account`` as ours."""
    exchange = peer_message_pb2.LedgerAccountExchange(ledger_account=ledger_account)
    return peer_message_pb2.PeerReply(ledger_account_exchange=exchange).SerializeToString()


def parse_ledger_account_request(data: bytes, ours: str | None = None) -> str:
    """The peer's ledger account in a PeerRequest; PeerMessageError for another kind, a
    malformed account, or (given ``ours``) our own account: we cannot pay ourselves."""
    return _ledger_account(data, peer_message_pb2.PeerRequest(), "PeerRequest", ours)


def parse_ledger_account_reply(data: bytes, ours: str | None = None) -> str:
    """The peer's ledger account in a PeerReply; PeerMessageError as for a request."""
    return _ledger_account(data, peer_message_pb2.PeerReply(), "PeerReply", ours)


def _ledger_account(
    data: bytes,
    message: peer_message_pb2.PeerRequest | peer_message_pb2.PeerReply,
    name: str,
    ours: str | None,
) -> str:
    if len(data) > MAX_DATA_BYTES:
        raise PeerMessageError(f"data has {len(data)} bytes, at most {MAX_DATA_BYTES} allowed")
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise PeerMessageError(f"data is not an ilphost.simledger.v1.{name}: {exc}") from exc
    kind = message.WhichOneof("kind")
    if kind != LEDGER_ACCOUNT_EXCHANGE:
        raise PeerMessageError(
            f"{name} of kind {kind or 'unset'}: this adaptor understands only "
            f"{LEDGER_ACCOUNT_EXCHANGE}"
        )
    account = message.ledger_account_exchange.ledger_account
    if not is_ledger_account(account):
        raise PeerMessageError(f"ledger_account {account[:40]!r}: must be {LEDGER_ACCOUNT_RULE}")
    if account == ours:
        raise PeerMessageError(f"ledger_account {account!r} is this adaptor's own account")
    return account
