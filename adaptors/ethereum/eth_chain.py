"""What the Ethereum adaptor knows about the chain, without talking to it: addresses, the
ERC-20 calls and logs it uses, revert reasons, fees, confirmation depth. Pure functions.

Hex quantities are JSON-RPC's: ``0x``-prefixed, no leading zeros. Amounts are Python ints,
which hold any uint256.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final

from eth_utils.address import to_checksum_address
from eth_utils.crypto import keccak

UINT256_MAX: Final = 2**256 - 1
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")

#: keccak("Transfer(address,address,uint256)"): topic 0 of an ERC-20 Transfer log.
TRANSFER_TOPIC: Final = "0x" + keccak(text="Transfer(address,address,uint256)").hex()
_TRANSFER: Final = keccak(text="transfer(address,uint256)")[:4]
_BALANCE_OF: Final = keccak(text="balanceOf(address)")[:4]
_DECIMALS: Final = keccak(text="decimals()")[:4]
_SYMBOL: Final = keccak(text="symbol()")[:4]
#: Error(string) and Panic(uint256): what Solidity reverts with.
_ERROR: Final = keccak(text="Error(string)")[:4]
_PANIC: Final = keccak(text="Panic(uint256)")[:4]


def address_of(text: str, what: str = "address") -> str:
    """A checksummed address from hex text; ValueError naming ``what`` if malformed."""
    if not _ADDRESS.fullmatch(text):
        raise ValueError(f"{what} must be 0x and 40 hex digits, got {text[:50]!r}")
    return to_checksum_address(text)


def address_from_bytes(raw: bytes, what: str = "address") -> str:
    """A checksummed address from its 20 bytes; ValueError if not 20."""
    if len(raw) != 20:
        raise ValueError(f"{what} must be 20 bytes, got {len(raw)}")
    return to_checksum_address(raw)


def address_bytes(address: str) -> bytes:
    """The 20 bytes of an address."""
    return bytes.fromhex(address[2:])


def quantity(value: int) -> str:
    """An integer as a JSON-RPC quantity."""
    return hex(value)


def from_quantity(text: Any) -> int:
    """A JSON-RPC quantity as an integer (ValueError if it is not one)."""
    if not isinstance(text, str) or not text.startswith("0x"):
        raise ValueError(f"not a hex quantity: {str(text)[:40]!r}")
    return int(text, 16)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + address_bytes(address)


def address_topic(address: str) -> str:
    """An address as an indexed log topic."""
    return "0x" + _address_word(address).hex()


# -- ERC-20 ------------------------------------------------------------------------------------


def transfer_call(to: str, value: int) -> str:
    """The calldata of ``transfer(to, value)``."""
    return "0x" + (_TRANSFER + _address_word(to) + _word(value)).hex()


def balance_of_call(owner: str) -> str:
    """The calldata of ``balanceOf(owner)``."""
    return "0x" + (_BALANCE_OF + _address_word(owner)).hex()


def decimals_call() -> str:
    """The calldata of ``decimals()``."""
    return "0x" + _DECIMALS.hex()


def symbol_call() -> str:
    """The calldata of ``symbol()``."""
    return "0x" + _SYMBOL.hex()


def decode_uint(data: str) -> int:
    """A returned uint (one word); ValueError if the data is not one word."""
    raw = bytes.fromhex(data.removeprefix("0x"))
    if len(raw) != 32:
        raise ValueError(f"expected one 32-byte word, got {len(raw)} bytes")
    return int.from_bytes(raw, "big")


def decode_string(data: str) -> str:
    """A returned ABI string; ValueError if malformed."""
    raw = bytes.fromhex(data.removeprefix("0x"))
    if len(raw) < 64:
        raise ValueError("too short for an ABI string")
    offset = int.from_bytes(raw[:32], "big")
    length = int.from_bytes(raw[offset : offset + 32], "big")
    body = raw[offset + 32 : offset + 32 + length]
    if len(body) != length:
        raise ValueError("ABI string runs past the data")
    return body.decode("utf-8", errors="replace")


@dataclass(frozen=True)
class TransferLog:
    """One ERC-20 Transfer log."""

    tx_hash: str
    log_index: int
    block_number: int
    payer: str
    payee: str
    value: int


def parse_transfer_log(log: dict[str, Any]) -> TransferLog:
    """A Transfer log from eth_getLogs or a receipt; ValueError if it is not one."""
    topics = log.get("topics") or []
    if len(topics) != 3 or topics[0].lower() != TRANSFER_TOPIC:
        raise ValueError("not an ERC-20 Transfer log")
    return TransferLog(
        tx_hash=log["transactionHash"],
        log_index=from_quantity(log["logIndex"]),
        block_number=from_quantity(log["blockNumber"]),
        payer=to_checksum_address("0x" + topics[1][-40:]),
        payee=to_checksum_address("0x" + topics[2][-40:]),
        value=decode_uint(log["data"]),
    )


def settlement_id(tx_hash: str, log_index: int | None) -> str:
    """The ledger id of a payment: the transaction hash for ETH, ``hash:logIndex`` for a token
    (one transaction may carry several transfers). Both sides compute the same id."""
    return tx_hash.lower() if log_index is None else f"{tx_hash.lower()}:{log_index}"


def revert_reason(data: str | None) -> str:
    """What a revert's return data says, in words."""
    if not data or data == "0x":
        return "reverted without a reason"
    raw = bytes.fromhex(data.removeprefix("0x"))
    try:
        if raw[:4] == _ERROR:
            return decode_string("0x" + raw[4:].hex())
        if raw[:4] == _PANIC and len(raw) == 36:
            return f"panic 0x{int.from_bytes(raw[4:], 'big'):02x}"
    except ValueError:
        pass
    return f"reverted with data {data[:74]}"


# -- fees and confirmations --------------------------------------------------------------------


@dataclass(frozen=True)
class Fees:
    """EIP-1559 fee caps of one transaction, in wei per gas."""

    max_fee: int
    tip: int

    @classmethod
    def for_base_fee(cls, base_fee: int, tip: int, cap: int | None) -> Fees:
        """Room for the base fee to double (two full blocks) plus the tip, within ``cap``."""
        max_fee = 2 * base_fee + tip
        if cap is not None:
            max_fee = min(max_fee, cap)
        return cls(max_fee=max_fee, tip=min(tip, max_fee))

    def most_spent(self, value: int, gas: int) -> int:
        """The most a transaction of ``value`` wei and ``gas`` at these fees may spend."""
        return value + gas * self.max_fee

    def bumped(self, now: Fees, cap: int | None) -> Fees | None:
        """The fees of a replacement of a transaction signed with ``self``, or None when the
        cap leaves no room. Nodes accept a replacement with the same nonce only if both caps
        rise by at least 10 %; this raises them by 12.5 %, or to today's fees if higher."""
        max_fee = max(self.max_fee * 9 // 8 + 1, now.max_fee)
        tip = max(self.tip * 9 // 8 + 1, now.tip)
        if cap is not None and max_fee > cap:
            return None
        return Fees(max_fee=max_fee, tip=min(tip, max_fee))


#: Gas of a plain ETH transfer to an address without code: exact, whatever the fees.
TRANSFER_GAS: Final = 21_000


def spendable(balance: int, gas: int, max_fee: int) -> int:
    """What ``balance`` wei can pay in one transaction of ``gas`` at ``max_fee`` per gas: the
    rest is the most that transaction may spend on gas. A transfer of more is refused before
    it is signed, and GetBalance reports this (in ETH) as the liquidity left to settle with."""
    return max(0, balance - gas * max_fee)


def confirmed_height(head: int, confirmations: int) -> int:
    """The highest block with at least ``confirmations`` blocks on it (itself included)."""
    return head - confirmations + 1


@dataclass(frozen=True)
class Head:
    """A block the node announced (``newHeads``): its number and base fee."""

    number: int
    base_fee: int

    @classmethod
    def of(cls, header: dict[str, Any]) -> Head:
        """From an announced header; ValueError if it has no number."""
        return cls(
            from_quantity(header.get("number")), from_quantity(header.get("baseFeePerGas", "0x0"))
        )


#: Nonces below an observed count whose costs are still kept (see Headroom.observe).
HEADROOM_REORG_DEPTH: Final = 256


class Headroom:
    """What the address can still commit to new transactions, known without asking the node.

    ``observe`` takes the address's balance and transaction count read *at one block* (both
    pinned to its number, so they agree). Every transaction signed since is ``committed`` with
    the most it may spend (value + gas x max fee; a fee bump raises it). Those whose nonce the
    block has not counted yet are what the balance does not reflect, so what is left is the
    balance less their costs: conservative (gas used is at most the limit, money arriving only
    adds), and exact again at every observation. Only another signer on the same key can make
    it wrong, and then the node refuses the broadcast (see eth_payer).
    """

    def __init__(self) -> None:
        self._costs: dict[int, int] = {}
        self._nonce: int | None = None
        self._balance = 0

    @property
    def counted_nonce(self) -> int | None:
        """The transaction count of the last observed block; None before any."""
        return self._nonce

    def committed(self, nonce: int, cost: int) -> None:
        self._costs[nonce] = max(cost, self._costs.get(nonce, 0))

    def observe(self, nonce: int, balance: int) -> None:
        self._nonce, self._balance = nonce, balance
        # Costs just below the count are kept: a reorganisation may uncount them again.
        for spent in [n for n in self._costs if n < nonce - HEADROOM_REORG_DEPTH]:
            del self._costs[spent]

    def has_uncounted(self) -> bool:
        """Whether a transaction was signed that the last observation did not count."""
        nonce = self._nonce
        return any(nonce is None or n >= nonce for n in self._costs)

    def available(self) -> int | None:
        """The balance less what signed, uncounted transactions may spend; None if unknown."""
        if self._nonce is None:
            return None
        nonce = self._nonce
        return self._balance - sum(cost for n, cost in self._costs.items() if n >= nonce)


class Reservations:
    """What a balance read from the node (with its pending transactions) may not reflect yet.

    A transaction is ``signed`` with the most it may spend, and ``sent`` once the node has
    accepted it (or the chain has it: the payment is final). A balance read at ``mark()``
    reflects at least the transactions sent before it; ``since(mark)`` is the rest: the costs
    of every transaction signed but not sent by then, and of every one signed after. So a
    payment checked against ``balance - since(mark)``, in the same step as it is signed,
    counts every other payment exactly once or, when the node saw it meanwhile, twice (a
    refusal too many, never a payment too many).
    """

    def __init__(self) -> None:
        self._unsent: dict[str, int] = {}
        self._signed = 0
        self._sent = 0

    def signed(self, tx_hash: str, cost: int) -> None:
        self._unsent[tx_hash] = cost
        self._signed += cost

    def sent(self, tx_hash: str) -> None:
        cost = self._unsent.pop(tx_hash, None)
        if cost is not None:
            self._sent += cost

    def mark(self) -> int:
        """Taken just before the balance is asked."""
        return self._sent

    def since(self, mark: int) -> int:
        return self._signed - mark
