"""Signing an EIP-1559 transaction: RLP, keccak and one secp256k1 signature, nothing else.

eth-account does the same with a typed-transaction layer around it (the dict is validated and
converted field by field through formatter pipelines, the key object is rebuilt and every
address checksummed on each call): about ten times the signature's own cost, on the critical
path of every settlement. Here the fields arrive already typed (ints, bytes), so what is left
is the encoding (EIP-2718 type 2, EIP-1559 fields, an empty access list), its keccak and the
signature with ``coincurve`` (libsecp256k1: low-s, the recovery id is the y parity).
``tests/ethereum/test_ethereum_units.py`` checks the bytes and the hash against eth-account's
for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

from coincurve import PrivateKey
from eth_hash.auto import keccak
from eth_utils.address import to_checksum_address

#: The EIP-2718 envelope type of an EIP-1559 transaction.
DYNAMIC_FEE_TYPE: Final = b"\x02"

#: What RLP encodes: a byte string, or a list of items.
RlpItem: TypeAlias = "bytes | list[RlpItem]"


@dataclass(frozen=True)
class Transaction:
    """The fields of an EIP-1559 transaction (no access list), as the chain encodes them."""

    chain_id: int
    nonce: int
    max_priority_fee: int
    max_fee: int
    gas: int
    to: bytes  # 20 bytes
    value: int
    data: bytes


@dataclass(frozen=True)
class Signed:
    """A signed transaction as broadcast (``raw``) and its hash, the transaction's id."""

    raw: bytes
    hash: bytes


class Signer:
    """Signs transactions with one private key (32 bytes), held only here: never part of a
    message, a log line or a repr."""

    def __init__(self, secret: bytes) -> None:
        """ValueError if ``secret`` is not a secp256k1 private key (32 bytes, 0 < key < n)."""
        if len(secret) != 32:
            raise ValueError("a private key is 32 bytes")
        self._key = PrivateKey(secret)
        public = self._key.public_key.format(compressed=False)[1:]  # x and y, 64 bytes
        #: The key's address (checksummed): the last 20 bytes of the public key's keccak.
        self.address: str = to_checksum_address(keccak(public)[-20:])

    def __repr__(self) -> str:
        return "Signer(<key>)"

    def sign(self, tx: Transaction) -> Signed:
        fields: list[RlpItem] = [
            _uint(tx.chain_id),
            _uint(tx.nonce),
            _uint(tx.max_priority_fee),
            _uint(tx.max_fee),
            _uint(tx.gas),
            tx.to,
            _uint(tx.value),
            tx.data,
            [],  # the access list
        ]
        digest = keccak(DYNAMIC_FEE_TYPE + rlp(fields))
        signature = self._key.sign_recoverable(digest, hasher=None)  # r (32), s (32), recovery id
        r, s, parity = signature[:32], signature[32:64], signature[64]
        fields += [_uint(parity), _uint(int.from_bytes(r, "big")), _uint(int.from_bytes(s, "big"))]
        raw = DYNAMIC_FEE_TYPE + rlp(fields)
        return Signed(raw, keccak(raw))


def _uint(value: int) -> bytes:
    """An unsigned integer as RLP wants it: big-endian, no leading zeros (zero is empty)."""
    if value < 0:
        raise ValueError(f"a transaction field cannot be negative: {value}")
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def rlp(item: RlpItem) -> bytes:
    """The RLP encoding of a byte string or a (nested) list of them."""
    if isinstance(item, bytes):
        if len(item) == 1 and item[0] < 0x80:
            return item
        return _length(len(item), 0x80) + item
    body = b"".join(rlp(element) for element in item)
    return _length(len(body), 0xC0) + body


def _length(length: int, offset: int) -> bytes:
    if length < 56:
        return bytes((offset + length,))
    size = length.to_bytes((length.bit_length() + 7) // 8, "big")
    return bytes((offset + 55 + len(size),)) + size
