"""Outgoing settlements: one signed transaction per idempotency key, stored before broadcast.

The life of a payment (see eth_state for what is stored):

1. ``pay``: estimate gas (a transfer that would revert is refused here, nothing signed) and
   read the balance (an ETH transfer while blocks are announced: neither, the announced block
   and the headroom tell; see ``_quick_terms``); then, as the one writer of nonces and in one
   step under the signer's lock, check liquidity against what other payments reserved, take
   the next nonce from the persisted counter, sign, and store the payment, its signed
   transaction and the moved counter in one commit. Only then broadcast. A crash before the
   commit leaves nothing; after it, the stored transaction is the payment, re-broadcast as it
   is by whoever looks next.
2. ``progress``: find which version of the payment's transaction the chain has mined (fee bumps
   are versions: same nonce, so at most one is ever mined). Mined with ``confirmations`` blocks
   on it: COMPLETED (status 1) or FAILED with the revert reason (status 0). Not mined: if the
   nonce was taken by another transaction (certainly: see ``_displaced``), FAILED; else
   re-broadcast the newest version, or, past ``bump_after``, sign and store a version with
   higher fees first.
3. A FAILED payment paid nothing and its nonce is spent, so the engine's retry with the same key
   may make a new attempt with a new nonce: never two payments for one key.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import grpc
from eth_chain import (
    TRANSFER_GAS,
    Fees,
    Head,
    Headroom,
    Reservations,
    TransferLog,
    address_bytes,
    confirmed_height,
    from_quantity,
    parse_transfer_log,
    revert_reason,
    settlement_id,
    spendable,
    transfer_call,
)
from eth_config import Config
from eth_rpc import JsonRpc, NodeUnavailable, RpcError
from eth_signer import Signer, Transaction
from eth_state import COMPLETED, FAILED, PENDING, Attempt, EthState, Payment

from sdk import failpoints
from sdk.stdio import Log

#: Failpoints of the crash tests (see sdk.failpoints).
AFTER_SIGN: Final = failpoints.ADAPTOR_ETH_AFTER_SIGN
AFTER_BROADCAST: Final = failpoints.ADAPTOR_ETH_AFTER_BROADCAST
#: Seconds a payment's nonce must look taken by another signer before the payment fails.
DISPLACED_AFTER: Final = 2.0
#: Seconds between two readings of the address's headroom while it pays (each announced block
#: could be one; the headroom stays right between readings, only narrower).
HEADROOM_EVERY: Final = 2.0


class Refusal(Exception):
    """A SendMoney refused with a gRPC status; nothing was signed for it."""

    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Asset:
    """What the adaptor settles in: ETH (token None) or an ERC-20, and its scale."""

    code: str
    scale: int
    token: str | None


@dataclass(frozen=True)
class Terms:
    """The gas limit and fees a payment is signed with; when the node was asked for them, the
    balance it told (with its pending transactions) and the reservations' mark taken before."""

    gas: int
    fees: Fees
    balance: int | None = None
    mark: int = 0


class Chain:
    """The node as the payer and the follower see it: heights that count as confirmed, and
    the newest block the node announced (while it announces them)."""

    def __init__(self, rpc: JsonRpc, config: Config) -> None:
        self.rpc = rpc
        self.config = config
        #: The newest announced block, while the subscription is live (None otherwise).
        self.head: Head | None = None
        #: When (wall clock) the newest block was announced.
        self.announced_at = 0.0
        #: The chain's height as last read or announced: the follower's guess of what to read
        #: next (it checks the height in the same request).
        self.known_height: int | None = None

    def announce(self, header: dict[str, Any]) -> None:
        """A block the node announced."""
        self.head = Head.of(header)
        self.announced_at = time.time()
        self.known_height = self.head.number

    def confirmed_of(self, height: int) -> int:
        """The highest confirmed block when the chain is ``height`` blocks high; -1 while it is
        shorter than the confirmations (nothing confirmed yet)."""
        return max(-1, confirmed_height(height, self.config.confirmations))

    async def confirmed_height(self) -> int:
        """The highest block that counts as final for this adaptor."""
        if self.config.finalized:
            block = await self.rpc.block("finalized")
            return -1 if block is None else from_quantity(block["number"])
        self.known_height = await self.rpc.block_number()
        return self.confirmed_of(self.known_height)

    async def is_confirmed(self, block: int) -> bool:
        """Whether a block of the chain (one that holds a receipt) counts as final."""
        if self.config.confirmations == 1:
            return True  # the block itself is its one confirmation: no need to ask the height
        return block <= await self.confirmed_height()

    async def fees(self) -> Fees:
        latest, tip = await asyncio.gather(self.rpc.block("latest"), self.rpc.tip())
        return self.fees_of(latest, tip)

    def fees_of(self, latest: dict[str, Any] | None, tip: int) -> Fees:
        """The fees of a transaction signed now, from the latest block and the node's tip."""
        base = from_quantity((latest or {}).get("baseFeePerGas", "0x0"))
        return Fees.for_base_fee(base, tip, self.config.max_fee)

    def fees_of_head(self, head: Head, tip: int) -> Fees:
        """The same from an announced block."""
        return Fees.for_base_fee(head.base_fee, tip, self.config.max_fee)


class Payer:
    """Pays settlements from the adaptor's address; the only signer of its nonces."""

    def __init__(
        self, chain: Chain, state: EthState, asset: Asset, chain_id: int, log: Log
    ) -> None:
        self._chain = chain
        self._rpc = chain.rpc
        self._config = chain.config
        self._signing_key: Signer = chain.config.signer
        self._state = state
        self._asset = asset
        self._chain_id = chain_id
        self._log = log
        self._signer = asyncio.Lock()
        self._keys: dict[str, asyncio.Lock] = {}
        #: Payments whose nonce looked spent by another signer, and since when (monotonic).
        self._suspects: dict[str, float] = {}
        #: What the address can still commit (ETH): lets a payment be signed with no question
        #: to the node; read again at an announced block (``read_headroom``).
        self._headroom = Headroom()
        self._headroom_due = True
        self._headroom_read = 0.0
        #: What a balance the node tells may not reflect yet (the payments asked of the node).
        self._reservations = Reservations()
        self._tip: int | None = None
        #: Payees known to hold no code: an ETH transfer to them takes exactly TRANSFER_GAS.
        self._plain_payees: set[str] = set()
        #: The highest nonce of a payment signed before this process and not final: its cost
        #: is not in the headroom, so the quick path waits until the chain has counted it.
        self._inherited = max((p.nonce for p in state.unfinished_payments()), default=-1)

    @property
    def address(self) -> str:
        return self._signing_key.address

    async def sync_nonce(self) -> None:
        """Move the counter past any nonce the chain has seen used (a transaction sent with
        this key by other means); never back, so stored unsent transactions keep theirs."""
        async with self._signer:
            on_chain = await self._rpc.nonce(self.address, "pending")
            if on_chain > self._state.next_nonce():
                self._state.set_meta("next_nonce", str(on_chain))

    def _call(self, payee: str, amount: int) -> dict[str, Any]:
        """The transaction's target, value and data, without gas, fees or nonce."""
        if self._asset.token is None:
            return {"to": payee, "value": amount, "data": "0x"}
        return {"to": self._asset.token, "value": 0, "data": transfer_call(payee, amount)}

    async def pay(self, key: str, account_id: str, amount: int, payee: str) -> Payment:
        """Sign, store and broadcast the payment for ``key`` (see the module docstring)."""
        async with self._key(key):
            existing = self._state.payment(key)
            if existing is not None and existing.status != FAILED:
                return existing
            call = self._call(payee, amount)
            began = time.perf_counter()
            # No await inside the signer's lock: liquidity, nonce, signature and commit as one,
            # so that concurrent payments never count the same money twice.
            async with self._signer:
                quick = self._quick_terms(call)
                if quick is not None:
                    times = self._sign_and_store(key, account_id, amount, payee, call, quick)
            if quick is None:
                terms = await self._ask_terms(call)
                async with self._signer:
                    times = self._sign_and_store(key, account_id, amount, payee, call, terms)
            attempt, prepared, signed, stored = times
            failpoints.hit(AFTER_SIGN)
            self._log.info(
                "settlement signed",
                key=key,
                account=account_id,
                amount=str(amount),
                nonce=attempt.nonce,
                tx=attempt.tx_hash,
                asked_node=quick is None,  # whether the node was asked anything before signing
                # Where the time went (bench/bench_ethereum.py reads these).
                prepare_ms=round((prepared - began) * 1000, 3),
                sign_ms=round((signed - prepared) * 1000, 3),
                store_ms=round((stored - signed) * 1000, 3),
            )
            await self._broadcast(attempt, key)  # as stored, not read back
            failpoints.hit(AFTER_BROADCAST)
            payment = self._state.payment(key)
            assert payment is not None
            return payment

    def _sign_and_store(
        self,
        key: str,
        account_id: str,
        amount: int,
        payee: str,
        call: dict[str, Any],
        terms: Terms,
    ) -> tuple[Attempt, float, float, float]:
        """Under the signer's lock, with no await: check the liquidity of terms the node was
        asked for (Refusal), take the next nonce, sign, store (one synced commit) and reserve
        the cost. The stored transaction, and when signing began, ended and the commit
        returned (perf_counter)."""
        began = time.perf_counter()
        gas, fees = terms.gas, terms.fees
        cost = fees.most_spent(call["value"], gas)
        if terms.balance is not None:
            available = terms.balance - self._reservations.since(terms.mark)
            if cost > available:
                raise Refusal(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"insufficient liquidity: {self.address} holds {terms.balance} wei, of which "
                    f"{available} are not reserved by other settlements; the transaction may cost "
                    f"{cost} wei (value + gas {gas} x max fee {fees.max_fee}); nothing was signed",
                )
        nonce = self._state.next_nonce()
        raw, tx_hash = self._sign(call, nonce, gas, fees)
        signed = time.perf_counter()
        self._state.record_signed(
            key, account_id, amount, payee, tx_hash, raw, nonce, fees.max_fee, fees.tip
        )
        self._headroom.committed(nonce, cost)
        self._reservations.signed(tx_hash, cost)
        attempt = Attempt(tx_hash, key, nonce, raw, fees.max_fee, fees.tip, time.time())
        return attempt, began, signed, time.perf_counter()

    async def _ask_terms(self, call: dict[str, Any]) -> Terms:
        """The gas limit, fees and balance for ``call``, asked of the node; Refusal if it would
        revert. (Its liquidity is checked under the signer's lock, with what other payments
        reserved since the question: ``_sign_and_store``. ``_quick_terms`` comes first: an ETH
        payment to a payee without code, while blocks are announced and the headroom covers
        it, needs no question: its gas is exactly TRANSFER_GAS, its fees come from the
        announced block and the tip read with the headroom, and it cannot revert. Anything
        else comes here, and the node decides.)"""
        if self._asset.token is None:
            self._headroom_due = True  # read it at the next block: the quick path wants it
        query = {
            "from": self.address,
            "to": call["to"],
            "value": hex(call["value"]),
            "data": call["data"],
        }
        mark = self._reservations.mark()
        # Independent questions, asked in one round trip: the estimate doubles as a dry run.
        estimated, latest, tip, held, code = await self._rpc.batch(
            ("eth_estimateGas", (query,)),
            ("eth_getBlockByNumber", ("latest", False)),
            ("eth_maxPriorityFeePerGas", ()),
            ("eth_getBalance", (self.address, "pending")),
            ("eth_getCode", (call["to"], "latest")),
        )
        if isinstance(estimated, RpcError):
            raise Refusal(
                grpc.StatusCode.FAILED_PRECONDITION,
                f"the transfer would fail on chain ({revert_reason(estimated.revert_data)}; "
                f"{estimated.message}); nothing was signed",
            ) from estimated
        for answer in (latest, tip, held):
            if isinstance(answer, RpcError):
                raise answer
        if self._asset.token is None and code == "0x":
            self._plain_payees.add(call["to"])
        estimate, balance = from_quantity(estimated), from_quantity(held)
        fees = self._chain.fees_of(latest if isinstance(latest, dict) else None, from_quantity(tip))
        gas = estimate if estimate <= TRANSFER_GAS else estimate * 5 // 4  # state may change
        return Terms(gas, fees, balance, mark)

    def _quick_terms(self, call: dict[str, Any]) -> Terms | None:
        """Gas and fees of a payment that needs no question to the node, or None."""
        head, tip, room = self._chain.head, self._tip, self._headroom.available()
        counted = self._headroom.counted_nonce
        if (
            self._asset.token is not None
            or head is None
            or tip is None
            or room is None
            or counted is None
            or counted <= self._inherited
            or call["to"] not in self._plain_payees
        ):
            return None
        fees = self._chain.fees_of_head(head, tip)
        if call["value"] > spendable(room, TRANSFER_GAS, fees.max_fee):
            return None  # perhaps money arrived since the reading: the node decides
        return Terms(TRANSFER_GAS, fees)

    def headroom_due(self) -> bool:
        """Whether to read the headroom at the block just announced: when the quick path
        wanted it, and every HEADROOM_EVERY seconds while paying in ETH."""
        if self._asset.token is not None:
            return False
        return self._headroom_due or (
            self._headroom.has_uncounted()
            and time.monotonic() - self._headroom_read >= HEADROOM_EVERY
        )

    async def read_headroom(self) -> None:
        """Read the address's transaction count and balance at the announced block (pinned to
        its number, so they agree) and the node's tip, in one request; one reading at a time."""
        head = self._chain.head
        if head is None:
            return
        self._headroom_due = False
        self._headroom_read = time.monotonic()
        try:
            answers = await self._rpc.batch(
                ("eth_getTransactionCount", (self.address, hex(head.number))),
                ("eth_getBalance", (self.address, hex(head.number))),
                ("eth_maxPriorityFeePerGas", ()),
            )
        except NodeUnavailable:
            self._headroom_due = True  # the node link's loop reports it
            return
        if any(isinstance(answer, RpcError) for answer in answers):
            self._headroom_due = True  # e.g. the block is gone (a reorganisation): next one
            return
        count, balance, tip = (from_quantity(answer) for answer in answers)
        self._headroom.observe(count, balance)
        self._tip = tip

    def _sign(self, call: dict[str, Any], nonce: int, gas: int, fees: Fees) -> tuple[bytes, str]:
        signed = self._signing_key.sign(
            Transaction(
                chain_id=self._chain_id,
                nonce=nonce,
                max_priority_fee=fees.tip,
                max_fee=fees.max_fee,
                gas=gas,
                to=address_bytes(call["to"]),
                value=call["value"],
                data=bytes.fromhex(call["data"].removeprefix("0x")),
            )
        )
        return signed.raw, "0x" + signed.hash.hex()

    async def _broadcast(self, attempt: Attempt, key: str) -> None:
        """Send a stored transaction; a refusal is logged (progress decides what it means),
        NodeUnavailable propagates (the transaction stays stored for the next look)."""
        try:
            await self._rpc.send_raw(attempt.raw)
        except RpcError as exc:
            text = exc.message.lower()
            if "already known" in text or "nonce too low" in text or "already imported" in text:
                # The node has it, or has mined a version: progress finds out.
                self._reservations.sent(attempt.tx_hash)
                return
            self._log.warn("broadcast refused", key=key, error=str(exc))
            return
        self._reservations.sent(attempt.tx_hash)

    def _key(self, key: str) -> asyncio.Lock:
        lock = self._keys.get(key)
        if lock is None:
            lock = self._keys[key] = asyncio.Lock()
        return lock

    async def progress(self, key: str) -> Payment:
        """Look at the chain once and move the payment on (see the module docstring)."""
        async with self._key(key):
            payment = self._state.payment(key)
            assert payment is not None
            if payment.status != PENDING:
                return payment
            await self._progress(payment)
            result = self._state.payment(key)
            assert result is not None
            if result.status != PENDING:
                self._keys.pop(key, None)
                self._suspects.pop(key, None)
                for attempt in self._state.attempts(key, result.nonce):
                    self._reservations.sent(attempt.tx_hash)  # the chain's balance counts it
            return result

    async def _progress(self, payment: Payment) -> None:
        attempts = self._state.attempts(payment.key, payment.nonce)
        receipts = await asyncio.gather(*(self._rpc.receipt(a.tx_hash) for a in attempts))
        for attempt, receipt in zip(attempts, receipts, strict=True):
            if receipt is None:
                continue
            if not await self._chain.is_confirmed(from_quantity(receipt["blockNumber"])):
                return  # mined, not yet confirmed
            if from_quantity(receipt["status"]) == 1:
                sid = self._settlement_id(receipt, payment)
                self._state.finish(payment.key, COMPLETED, sid, None)
                self._log.info("settlement confirmed", key=payment.key, settlement=sid)
            else:
                reason = await self._revert_reason(payment, receipt)
                self._state.finish(payment.key, FAILED, None, f"{attempt.tx_hash}: {reason}")
                self._log.warn(
                    "settlement reverted", key=payment.key, tx=attempt.tx_hash, reason=reason
                )
            return
        chain_nonce = await self._rpc.nonce(self.address, "latest")
        if chain_nonce < payment.nonce:
            await self._fill_gap(chain_nonce, payment.nonce)
        if chain_nonce > payment.nonce:
            if not await self._displaced(payment, attempts):
                return
            reason = (
                f"nonce {payment.nonce} of {self.address} was used by a transaction this "
                "adaptor did not sign; nothing was paid"
            )
            self._state.finish(payment.key, FAILED, None, reason)
            self._log.error("settlement displaced", key=payment.key, reason=reason)
            return
        newest = attempts[-1]
        if time.time() - newest.signed_at >= self._config.bump_after:
            await self._broadcast(await self._bump(payment, newest) or newest, payment.key)
        elif await self._rpc.call("eth_getTransactionByHash", newest.tx_hash) is None:
            await self._broadcast(newest, payment.key)

    async def _displaced(self, payment: Payment, attempts: list[Attempt]) -> bool:
        """Whether the payment's nonce was spent by a transaction this adaptor did not sign.

        A node can show a nonce as used a moment before it serves the receipt of the transaction
        that used it (anvil in automine does, under load): seen once, that looks exactly like
        another signer's transaction, and failing the payment would let the engine's retry pay a
        second time. So the verdict needs the nonce spent at the confirmed height, no receipt
        for any version asked after that, and the same seen again ``DISPLACED_AFTER`` seconds
        later."""
        confirmed = await self._chain.confirmed_height()
        if confirmed < 0 or await self._rpc.nonce(self.address, hex(confirmed)) <= payment.nonce:
            self._suspects.pop(payment.key, None)
            return False  # spent in a block not yet confirmed: wait for it
        for attempt in attempts:
            if await self._rpc.receipt(attempt.tx_hash) is not None:
                self._suspects.pop(payment.key, None)
                return False
        first_seen = self._suspects.setdefault(payment.key, time.monotonic())
        return time.monotonic() - first_seen >= DISPLACED_AFTER

    async def _fill_gap(self, first: int, end: int) -> None:
        """Broadcast again the stored transactions of nonces ``first``..``end - 1``: the chain
        lost them (a node restarted without its last blocks, a reorganisation deeper than the
        confirmations), and every later transaction waits behind them. They are the same signed
        transactions, so this repairs the chain and pays nothing twice."""
        for nonce in range(first, end):
            attempt = self._state.newest_attempt_with_nonce(nonce)
            if attempt is None:
                self._log.error(
                    "nonce gap: no stored transaction for a nonce below a pending settlement",
                    nonce=nonce,
                )
                return
            if await self._rpc.call("eth_getTransactionByHash", attempt.tx_hash) is None:
                self._log.warn(
                    "re-broadcasting a transaction the chain lost",
                    nonce=nonce,
                    key=attempt.key,
                    tx=attempt.tx_hash,
                )
                await self._broadcast(attempt, attempt.key)

    async def _bump(self, payment: Payment, newest: Attempt) -> Attempt | None:
        """Sign and store a version with higher fees than ``newest``; None when the fee cap
        forbids."""
        fees = Fees(newest.max_fee, newest.tip).bumped(
            await self._chain.fees(), self._config.max_fee
        )
        if fees is None:
            self._log.warn(
                "stuck settlement at the fee cap",
                key=payment.key,
                nonce=payment.nonce,
                max_fee=str(newest.max_fee),
            )
            return None
        call = self._call(payment.payee, payment.amount)
        gas = await self._gas_of(newest.tx_hash) or 100_000
        raw, tx_hash = self._sign(call, payment.nonce, gas, fees)
        self._state.record_replacement(
            payment.key, tx_hash, raw, payment.nonce, fees.max_fee, fees.tip
        )
        cost = fees.most_spent(call["value"], gas)
        self._headroom.committed(payment.nonce, cost)
        self._reservations.signed(tx_hash, cost)
        self._log.info(
            "settlement fee bumped",
            key=payment.key,
            nonce=payment.nonce,
            tx=tx_hash,
            max_fee=str(fees.max_fee),
            tip=str(fees.tip),
        )
        return self._state.attempts(payment.key, payment.nonce)[-1]

    async def _gas_of(self, tx_hash: str) -> int | None:
        tx = await self._rpc.call("eth_getTransactionByHash", tx_hash)
        return from_quantity(tx["gas"]) if isinstance(tx, dict) else None

    def _settlement_id(self, receipt: dict[str, Any], payment: Payment) -> str:
        tx_hash = receipt["transactionHash"]
        if self._asset.token is None:
            return settlement_id(tx_hash, None)
        for log in receipt.get("logs") or []:
            if str(log.get("address", "")).lower() != self._asset.token.lower():
                continue
            try:
                transfer: TransferLog = parse_transfer_log(log)
            except ValueError:
                continue
            if transfer.payee == payment.payee and transfer.value == payment.amount:
                return settlement_id(tx_hash, transfer.log_index)
        return settlement_id(tx_hash, None)

    async def _revert_reason(self, payment: Payment, receipt: dict[str, Any]) -> str:
        """Replay the call on the state before its block to read the reason."""
        call = self._call(payment.payee, payment.amount)
        query = {
            "from": self.address,
            "to": call["to"],
            "value": hex(call["value"]),
            "data": call["data"],
        }
        try:
            await self._rpc.eth_call(query, from_quantity(receipt["blockNumber"]) - 1)
        except RpcError as exc:
            return revert_reason(exc.revert_data)
        except NodeUnavailable:
            pass
        return "reverted (status 0); the reason could not be read back"


async def wait_final(
    payer: Payer, key: str, limit: float, poll: float, stop: Callable[[], bool] = lambda: False
) -> Payment:
    """Call ``progress`` until the payment is final or ``limit`` seconds passed; quick at first
    (a node that mines at once answers within milliseconds), then every ``poll`` seconds."""
    deadline = time.monotonic() + limit
    delay = 0.002
    while True:
        payment = await payer.progress(key)
        if payment.status != PENDING or time.monotonic() >= deadline or stop():
            return payment
        await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
        delay = min(delay * 2, poll)
