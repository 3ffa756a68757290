"""Incoming settlements: follow confirmed blocks from a persisted cursor.

Only blocks with ``confirmations`` blocks on them (or the chain's finalized block) are read, so
a payment in a block that a reorganisation drops was never seen: nothing unconfirmed can reach
the engine. For ETH, the payments are transactions to our address with a value (status 1); for
an ERC-20, the token's ``Transfer`` logs to our address. The payments found and the cursor move
in one commit. The hash of the cursor's block is kept: if the chain at that height changes, a
reorganisation went deeper than the configured confirmations; it is logged as an error and the
cursor steps back to read the new branch (ids already reported stay reported).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final

from eth_chain import (
    TRANSFER_TOPIC,
    address_topic,
    from_quantity,
    parse_transfer_log,
    settlement_id,
)
from eth_payer import Chain
from eth_rpc import RpcError
from eth_state import EthState, Found, Incoming
from eth_utils.address import to_checksum_address

from sdk.stdio import Log

#: Blocks read per step (one request: each block's header with its receipts): bounded work per
#: poll while catching up.
ETH_BLOCKS_PER_STEP: Final = 20
LOG_BLOCKS_PER_STEP: Final = 2000
#: How far back the cursor steps after a reorganisation deeper than the confirmations.
REWIND: Final = 64


class Follower:
    """Reads confirmed blocks for payments to ``address`` and reports them."""

    def __init__(
        self,
        chain: Chain,
        state: EthState,
        address: str,
        token: str | None,
        report: Callable[[Incoming], None],
        log: Log,
    ) -> None:
        self._chain = chain
        self._rpc = chain.rpc
        self._state = state
        self._address = address
        self._token = token
        self._report = report
        self._log = log

    async def step(self, ask_height: bool = True) -> bool:
        """Read what became confirmed since the cursor; True if there may be more to read.

        With ``ask_height`` False the chain's height is the one the node announced (or last
        told), and the request that reads the blocks asks the height too: blocks read beyond
        what that height confirms are dropped, and the step is made again with it. So one
        announced block costs one round trip, and nothing unconfirmed is ever read as confirmed.
        """
        cursor = self._state.cursor()
        if cursor is None:
            confirmed = await self._chain.confirmed_height()
            start = self._chain.config.start_block
            first = confirmed if start is None else start - 1
            block_hash = await self._hash(first)
            self._state.record_scan([], first, block_hash)
            cursor = (first, block_hash)
        height, block_hash = cursor
        known = self._chain.known_height
        guessed = not ask_height and known is not None and not self._chain.config.finalized
        if guessed:
            assert known is not None
            confirmed = self._chain.confirmed_of(known)
        else:
            confirmed = await self._chain.confirmed_height()
        if confirmed <= height:
            return False
        per_step = LOG_BLOCKS_PER_STEP if self._token else ETH_BLOCKS_PER_STEP
        end = min(confirmed, height + per_step)
        read = await (self._token_payments if self._token else self._eth_payments)(
            height, end, guessed
        )
        if read is None:
            return True  # the chain is lower than announced: again, with the height it told
        found, parent, end_hash = read
        # Is the block under the cursor still the chain's (the parent of what was just read)?
        if height >= 0 and parent != block_hash:
            back = max(-1, height - REWIND)
            self._log.error(
                "reorganisation deeper than the confirmations: the chain changed below the "
                "incoming cursor; reading again from an earlier block",
                block=height,
                rewind_to=back,
            )
            self._state.record_scan([], back, await self._hash(back))
            return True
        new = self._state.record_scan(found, end, end_hash)
        for incoming in new:
            self._report(incoming)
        if new:
            self._log_found(new)
        return end < confirmed

    def _log_found(self, new: list[Incoming]) -> None:
        # read_ms: from the newest block's announcement to its payments reported (where a
        # settlement's time goes: bench/bench_ethereum.py reads it).
        since = None
        if self._chain.head is not None:
            since = round((time.time() - self._chain.announced_at) * 1000, 3)
        for incoming in new:
            self._log.info(
                "incoming settlement",
                settlement=incoming.settlement_id,
                account=incoming.account_id,
                amount=str(incoming.amount),
                read_ms=since,
            )

    def _height_holds(self, answer: object, last: int) -> bool:
        """Record the height the node told with the blocks; whether it confirms ``last``."""
        if isinstance(answer, RpcError):
            raise answer
        self._chain.known_height = from_quantity(answer)
        return self._chain.confirmed_of(self._chain.known_height) >= last

    async def _hash(self, height: int) -> str:
        if height < 0:
            return ""
        return _hash_of(await self._rpc.block(height), height)

    async def _eth_payments(
        self, height: int, last: int, check: bool
    ) -> tuple[list[Found], str, str] | None:
        """The payments in blocks ``height + 1``..``last``, the parent hash of the first block
        and the hash of the last; with ``check``, the chain's height is asked too (None if it
        does not confirm ``last``).

        One request: each block's header and its receipts (``eth_getBlockReceipts``), which
        name every transaction's sender, recipient and status but not its value. Only when a
        receipt is a payment to us (status 1), a second request reads those transactions'
        values. A block with its transactions costs a node about three times as much to
        answer, and most blocks, of both adaptors, pay neither. A node without
        ``eth_getBlockReceipts`` is asked for the blocks with their transactions instead."""
        numbers = range(height + 1, last + 1)
        calls: list[tuple[str, tuple[object, ...]]] = [("eth_blockNumber", ())] if check else []
        for number in numbers:
            calls.append(("eth_getBlockByNumber", (hex(number), False)))
            calls.append(("eth_getBlockReceipts", (hex(number),)))
        answers = await self._rpc.batch(*calls)
        if check and not self._height_holds(answers.pop(0), last):
            return None
        ours = self._address.lower()  # compared in lower case: a checksum costs a keccak
        paid: list[tuple[int, dict[str, Any]]] = []  # (block number, receipt)
        parent = last_hash = ""
        for offset, number in enumerate(numbers):
            block, receipts = _block(number, answers[2 * offset]), answers[2 * offset + 1]
            if number == height + 1:
                parent = str(block["parentHash"])
            last_hash = str(block["hash"])
            if not isinstance(receipts, list):
                return await self._eth_payments_in_full(height, last)
            for receipt in receipts:
                if (
                    isinstance(receipt, dict)
                    and receipt.get("blockHash") == block["hash"]
                    and str(receipt.get("to")).lower() == ours
                    and from_quantity(receipt["status"]) == 1
                ):
                    paid.append((number, receipt))
        if not paid:
            return [], parent, last_hash
        txs = await self._rpc.batch(
            *(("eth_getTransactionByHash", (r["transactionHash"],)) for _, r in paid)
        )
        found: list[Found] = []
        for (number, receipt), tx in zip(paid, txs, strict=True):
            if isinstance(tx, RpcError):
                raise tx
            if not isinstance(tx, dict) or tx.get("blockHash") != receipt["blockHash"]:
                raise LookupError(f"block {number} changed while it was read")
            value = from_quantity(tx.get("value", "0x0"))
            if value:
                found.append(_eth_found(tx, number, value))
        return found, parent, last_hash

    async def _eth_payments_in_full(self, height: int, last: int) -> tuple[list[Found], str, str]:
        """``_eth_payments`` from a node without ``eth_getBlockReceipts``: the blocks with their
        transactions, and the receipt of each payment to us."""
        numbers = range(height + 1, last + 1)
        blocks = await self._rpc.batch(
            *(("eth_getBlockByNumber", (hex(number), True)) for number in numbers)
        )
        ours = self._address.lower()
        found: list[Found] = []
        parent = last_hash = ""
        for number, answer in zip(numbers, blocks, strict=True):
            block = _block(number, answer)
            if number == height + 1:
                parent = str(block["parentHash"])
            last_hash = str(block["hash"])
            for tx in block.get("transactions") or []:
                to, value = tx.get("to"), from_quantity(tx.get("value", "0x0"))
                if not to or value == 0 or str(to).lower() != ours:
                    continue
                receipt = await self._rpc.receipt(tx["hash"])
                if receipt is None or from_quantity(receipt["status"]) != 1:
                    continue
                found.append(_eth_found(tx, number, value))
        return found, parent, last_hash

    async def _token_payments(
        self, height: int, last: int, check: bool
    ) -> tuple[list[Found], str, str] | None:
        """The token's transfers to us in blocks ``height + 1``..``last``, the hash of block
        ``height`` and of ``last``, in one request; with ``check`` as in ``_eth_payments``."""
        query = {
            "fromBlock": hex(height + 1),
            "toBlock": hex(last),
            "address": self._token,
            "topics": [TRANSFER_TOPIC, None, address_topic(self._address)],
        }
        calls: list[tuple[str, tuple[object, ...]]] = [("eth_blockNumber", ())] if check else []
        calls.append(("eth_getLogs", (query,)))
        calls.append(("eth_getBlockByNumber", (hex(last), False)))
        if height >= 0:
            calls.append(("eth_getBlockByNumber", (hex(height), False)))
        answers = await self._rpc.batch(*calls)
        if check and not self._height_holds(answers.pop(0), last):
            return None
        logs = answers[0]
        if isinstance(logs, RpcError):
            raise logs
        end_hash = _hash_of(answers[1], last)
        parent = _hash_of(answers[2], height) if height >= 0 else ""
        found = []
        for log in logs or []:
            if log.get("removed"):
                continue
            transfer = parse_transfer_log(log)
            if transfer.value == 0:
                continue
            found.append(
                Found(
                    settlement_id(transfer.tx_hash, transfer.log_index),
                    transfer.block_number,
                    transfer.log_index,
                    transfer.payer,
                    transfer.value,
                )
            )
        return found, parent, end_hash


def _block(number: int, answer: object) -> dict[str, Any]:
    """Block ``number`` as the node answered it in a batch, or the error why there is none."""
    if isinstance(answer, RpcError):
        raise answer
    if not isinstance(answer, dict):
        raise LookupError(f"the node has no block {number}")
    return answer


def _eth_found(tx: dict[str, Any], number: int, value: int) -> Found:
    """An ETH payment to us from its transaction (mined in block ``number``)."""
    return Found(
        settlement_id(tx["hash"], None),
        number,
        from_quantity(tx["transactionIndex"]),
        to_checksum_address(tx["from"]),
        value,
    )


def _hash_of(block: object, number: int) -> str:
    """The hash of a block the node answered; LookupError if it has none."""
    if isinstance(block, RpcError):
        raise block
    if not isinstance(block, dict):
        raise LookupError(f"the node has no block {number}")
    return str(block["hash"])
