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

import asyncio
from collections.abc import Callable
from typing import Final

from eth_chain import (
    TRANSFER_TOPIC,
    address_topic,
    from_quantity,
    parse_transfer_log,
    settlement_id,
)
from eth_payer import Chain
from eth_state import EthState, Found, Incoming
from eth_utils import to_checksum_address

from sdk.stdio import Log

#: Blocks read per step: bounded work per poll while catching up.
ETH_BLOCKS_PER_STEP: Final = 50
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

    async def step(self) -> bool:
        """Read what became confirmed since the cursor; True if there may be more to read."""
        confirmed = await self._chain.confirmed_height()
        cursor = self._state.cursor()
        if cursor is None:
            start = self._chain.config.start_block
            first = confirmed if start is None else start - 1
            block_hash = await self._hash(first)
            self._state.record_scan([], first, block_hash)
            cursor = (first, block_hash)
        height, block_hash = cursor
        if confirmed <= height:
            return False
        per_step = LOG_BLOCKS_PER_STEP if self._token else ETH_BLOCKS_PER_STEP
        end = min(confirmed, height + per_step)
        if self._token:
            found, parent, end_hash = await asyncio.gather(
                self._token_payments(height + 1, end), self._hash(height), self._hash(end)
            )
        else:
            found, parent, end_hash = await self._eth_payments(height + 1, end)
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
        for incoming in self._state.record_scan(found, end, end_hash):
            self._report(incoming)
        return end < confirmed

    async def _hash(self, height: int) -> str:
        if height < 0:
            return ""
        block = await self._rpc.block(height)
        if block is None:
            raise LookupError(f"the node has no block {height}")
        return str(block["hash"])

    async def _eth_payments(self, first: int, last: int) -> tuple[list[Found], str, str]:
        """The payments in blocks ``first``..``last``, the parent hash of the first block and
        the hash of the last."""
        found: list[Found] = []
        parent = last_hash = ""
        for number in range(first, last + 1):
            block = await self._rpc.block(number, full=True)
            if block is None:
                raise LookupError(f"the node has no block {number}")
            if number == first:
                parent = str(block["parentHash"])
            last_hash = str(block["hash"])
            for tx in block.get("transactions") or []:
                to, value = tx.get("to"), from_quantity(tx.get("value", "0x0"))
                # In lower case: a checksum costs a keccak per transaction of the block.
                if not to or value == 0 or str(to).lower() != self._address.lower():
                    continue
                receipt = await self._rpc.receipt(tx["hash"])
                if receipt is None or from_quantity(receipt["status"]) != 1:
                    continue
                found.append(
                    Found(
                        settlement_id(tx["hash"], None),
                        number,
                        from_quantity(tx["transactionIndex"]),
                        to_checksum_address(tx["from"]),
                        value,
                    )
                )
        return found, parent, last_hash

    async def _token_payments(self, first: int, last: int) -> list[Found]:
        logs = await self._rpc.logs(
            {
                "fromBlock": hex(first),
                "toBlock": hex(last),
                "address": self._token,
                "topics": [TRANSFER_TOPIC, None, address_topic(self._address)],
            }
        )
        found = []
        for log in logs:
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
        return found
