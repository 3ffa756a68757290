"""The SimLedger gRPC service: validation, fault injection and live transfer streams over the
book in ``store``.

Every request is validated before anything else runs (INVALID_ARGUMENT leaves the book
untouched). Book calls run on one worker thread so that SQLite's fsync never blocks the event
loop and calls never interleave. WatchTransfers streams sleep on an asyncio event that every
commit replaces, so an idle stream costs nothing and a commit wakes it at once; a stream that
kept up takes the new transfers from memory (host.simledger.recent) instead of the book.
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final, NoReturn, TypeVar

import grpc

from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger import peer_messages
from host.simledger.faults import FaultDice, FaultError, Faults, Outcome
from host.simledger.recent import RecentTransfers
from host.simledger.store import (
    BalanceOverflow,
    InsufficientFunds,
    LedgerError,
    LedgerStore,
    LedgerTransfer,
    TransferConflict,
    UnknownAccount,
)
from sdk.amount import AmountError, unsigned_of
from sdk.pb.ilphost.types.v1 import types_pb2

_T = TypeVar("_T")
Context = grpc.aio.ServicerContext[Any, Any]

#: The ledger's account grammar, shared with its adaptors (host.simledger.peer_messages).
ACCOUNT_ID: Final = peer_messages.LEDGER_ACCOUNT
#: Printable ASCII; long enough for an adaptor's "<ledger account>:<idempotency key>".
TRANSFER_ID: Final = re.compile(r"[\x20-\x7e]{1,512}")
MAX_MEMO: Final = 1024
#: Transfers read from the book per query while a watch catches up.
WATCH_BATCH: Final = 256
#: The most transfers one ListTransfers answers.
LIST_LIMIT: Final = 1000
#: SQLite integers are signed 64-bit; a larger cursor means "after everything".
_MAX_SEQUENCE: Final = 2**63 - 1

_STATUS_OF: Final[dict[type[LedgerError], grpc.StatusCode]] = {
    UnknownAccount: grpc.StatusCode.NOT_FOUND,
    InsufficientFunds: grpc.StatusCode.FAILED_PRECONDITION,
    BalanceOverflow: grpc.StatusCode.FAILED_PRECONDITION,
    TransferConflict: grpc.StatusCode.ALREADY_EXISTS,
}


class InvalidRequest(ValueError):
    """A malformed request field; the message names it."""


def account_id_of(value: str, field: str = "account_id") -> str:
    """A valid ledger account id, or InvalidRequest."""
    if not ACCOUNT_ID.fullmatch(value):
        raise InvalidRequest(
            f"{field} must be {peer_messages.LEDGER_ACCOUNT_RULE}, got {value[:40]!r}"
        )
    return value


def transfer_id_of(value: str) -> str:
    """A valid transfer id, or InvalidRequest."""
    if not TRANSFER_ID.fullmatch(value):
        raise InvalidRequest(
            f"transfer_id must be 1 to 512 printable ASCII characters, got {value[:40]!r}"
        )
    return value


def memo_of(value: str) -> str:
    """A valid memo, or InvalidRequest."""
    if len(value) > MAX_MEMO:
        raise InvalidRequest(f"memo has {len(value)} characters, at most {MAX_MEMO} allowed")
    return value


def amount_of(message: types_pb2.Amount, scale: int) -> int:
    """A positive amount at the ledger's scale, or InvalidRequest."""
    try:
        value = unsigned_of(message, "amount")
    except AmountError as exc:
        raise InvalidRequest(str(exc)) from exc
    if message.scale != scale:
        raise InvalidRequest(
            f"amount.scale must be the ledger's scale {scale}, got {message.scale}"
        )
    if value == 0:
        raise InvalidRequest("amount must be greater than zero")
    return value


def transfer_to_proto(transfer: LedgerTransfer, scale: int) -> simledger_pb2.LedgerTransfer:
    """The wire form of a committed transfer."""
    return simledger_pb2.LedgerTransfer(
        transfer_id=transfer.transfer_id,
        from_account_id=transfer.from_account_id,
        to_account_id=transfer.to_account_id,
        amount=types_pb2.Amount(value=str(transfer.amount), scale=scale),
        memo=transfer.memo,
        sequence=transfer.sequence,
    )


class SimLedgerService(simledger_pb2_grpc.SimLedgerServicer):
    """The SimLedger RPCs over one book, with fault knobs."""

    def __init__(self, store: LedgerStore, faults: Faults, dice: FaultDice) -> None:
        self._store = store
        self._asset = store.asset
        self._faults = faults
        self._dice = dice
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="simledger-book")
        # Before any book call runs on the worker, so on this thread.
        self._recent = RecentTransfers(store.last_sequence())
        # Replaced by every commit (and fault or shutdown change): streams wait on the current one.
        self._changed = asyncio.Event()
        self._closing = False

    @property
    def faults(self) -> Faults:
        """The knobs now set."""
        return self._faults

    def begin_shutdown(self) -> None:
        """End every open WatchTransfers stream (UNAVAILABLE) so the server can stop promptly."""
        self._closing = True
        self._wake()

    def close(self) -> None:
        """Wait for the book worker and close the database; call after the server stopped."""
        self._worker.shutdown(wait=True)
        self._store.close()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _book(self, call: Callable[..., _T], *args: Any) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._worker, functools.partial(call, *args))

    async def _refuse_if_offline(self, context: Context) -> None:
        if self._faults.offline:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger is offline (fault knob)")
        if self._closing:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger is shutting down")

    async def _invalid(self, context: Context, exc: InvalidRequest) -> NoReturn:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    async def _refused(self, context: Context, exc: LedgerError) -> NoReturn:
        await context.abort(_STATUS_OF[type(exc)], str(exc))

    async def GetLedgerInfo(
        self, request: simledger_pb2.GetLedgerInfoRequest, context: Context
    ) -> simledger_pb2.GetLedgerInfoResponse:
        await self._refuse_if_offline(context)
        return simledger_pb2.GetLedgerInfoResponse(
            asset_code=self._asset.code, asset_scale=self._asset.scale
        )

    async def CreateAccount(
        self, request: simledger_pb2.CreateAccountRequest, context: Context
    ) -> simledger_pb2.CreateAccountResponse:
        try:
            account_id = account_id_of(request.account_id)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        await self._refuse_if_offline(context)
        balance = await self._book(self._store.create_account, account_id)
        return simledger_pb2.CreateAccountResponse(account=self._account(account_id, balance))

    async def GetAccount(
        self, request: simledger_pb2.GetAccountRequest, context: Context
    ) -> simledger_pb2.GetAccountResponse:
        try:
            account_id = account_id_of(request.account_id)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        await self._refuse_if_offline(context)
        try:
            balance = await self._book(self._store.balance, account_id)
        except LedgerError as exc:
            await self._refused(context, exc)
        return simledger_pb2.GetAccountResponse(account=self._account(account_id, balance))

    def _account(self, account_id: str, balance: int) -> simledger_pb2.LedgerAccount:
        return simledger_pb2.LedgerAccount(
            account_id=account_id,
            balance=types_pb2.Amount(value=str(balance), scale=self._asset.scale),
        )

    async def Mint(
        self, request: simledger_pb2.MintRequest, context: Context
    ) -> simledger_pb2.MintResponse:
        try:
            transfer_id = transfer_id_of(request.transfer_id)
            account_id = account_id_of(request.account_id)
            amount = amount_of(request.amount, self._asset.scale)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        done = await self._commit(context, transfer_id, "", account_id, amount, "")
        return simledger_pb2.MintResponse(transfer=transfer_to_proto(done, self._asset.scale))

    async def Transfer(
        self, request: simledger_pb2.TransferRequest, context: Context
    ) -> simledger_pb2.TransferResponse:
        try:
            transfer_id = transfer_id_of(request.transfer_id)
            payer = account_id_of(request.from_account_id, "from_account_id")
            payee = account_id_of(request.to_account_id, "to_account_id")
            if payer == payee:
                raise InvalidRequest(f"from_account_id and to_account_id are both {payer!r}")
            amount = amount_of(request.amount, self._asset.scale)
            memo = memo_of(request.memo)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        done = await self._commit(context, transfer_id, payer, payee, amount, memo)
        return simledger_pb2.TransferResponse(transfer=transfer_to_proto(done, self._asset.scale))

    async def _commit(
        self, context: Context, transfer_id: str, payer: str, payee: str, amount: int, memo: str
    ) -> LedgerTransfer:
        """A Transfer or Mint under the fault knobs."""
        await self._refuse_if_offline(context)
        outcome = self._dice.roll(self._faults)
        if self._faults.latency_ms:
            await asyncio.sleep(self._faults.latency_ms / 1000)
            await self._refuse_if_offline(context)
        if outcome is Outcome.REFUSE:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE, "transfer refused before commit (fault knob)"
            )
        try:
            # Shielded: once the book call is under way, a cancelled caller must not keep the
            # watchers from hearing about the commit.
            done = await asyncio.shield(
                self._commit_and_wake(transfer_id, payer, payee, amount, memo)
            )
        except LedgerError as exc:
            await self._refused(context, exc)
        if outcome is Outcome.LOSE_REPLY:
            await context.abort(
                grpc.StatusCode.UNAVAILABLE,
                f"transfer {transfer_id!r} committed but the reply was lost (fault knob): "
                "retry with the same transfer id",
            )
        return done

    async def _commit_and_wake(
        self, transfer_id: str, payer: str, payee: str, amount: int, memo: str
    ) -> LedgerTransfer:
        done = await self._book(self._store.transfer, transfer_id, payer, payee, amount, memo)
        # Commits end in sequence order (one worker), so the recent transfers stay in order.
        self._recent.add(done)
        self._wake()
        return done

    async def GetTransfer(
        self, request: simledger_pb2.GetTransferRequest, context: Context
    ) -> simledger_pb2.GetTransferResponse:
        try:
            transfer_id = transfer_id_of(request.transfer_id)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        await self._refuse_if_offline(context)
        found = await self._book(self._store.get_transfer, transfer_id)
        if found is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no transfer {transfer_id!r}")
        return simledger_pb2.GetTransferResponse(
            transfer=transfer_to_proto(found, self._asset.scale)
        )

    async def WatchTransfers(
        self, request: simledger_pb2.WatchTransfersRequest, context: Context
    ) -> AsyncIterator[simledger_pb2.WatchTransfersResponse]:
        try:
            account_id = account_id_of(request.account_id)
        except InvalidRequest as exc:
            await self._invalid(context, exc)
        await self._refuse_if_offline(context)
        try:
            await self._book(self._store.balance, account_id)
        except LedgerError as exc:
            await self._refused(context, exc)
        # Headers now: the stream is open, and a client that waits for them to return from
        # its call (tonic) must not wait for the first transfer.
        await context.send_initial_metadata(())
        cursor = min(request.after_sequence, _MAX_SEQUENCE)
        # Every transfer into the account up to ``seen`` has been sent (``cursor``: the last).
        seen = cursor
        while True:
            # Take the event before reading: a commit after the read sets this very event.
            changed = self._changed
            await self._refuse_if_offline(context)
            # Committed, so in the book for the read below too.
            last = self._recent.last
            batch = self._recent.into(account_id, seen, WATCH_BATCH)
            if batch is None:
                batch = await self._book(
                    self._store.transfers_into, account_id, cursor, WATCH_BATCH
                )
            for transfer in batch:
                yield simledger_pb2.WatchTransfersResponse(
                    transfer=transfer_to_proto(transfer, self._asset.scale)
                )
                cursor = transfer.sequence
            if len(batch) < WATCH_BATCH:
                seen = max(seen, last, cursor)
                await changed.wait()
            else:
                seen = cursor

    async def SetFaults(
        self, request: simledger_pb2.SetFaultsRequest, context: Context
    ) -> simledger_pb2.SetFaultsResponse:
        try:
            faults = Faults.from_proto(request.faults)
        except FaultError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self._faults = faults
        # Open streams re-check the knobs: going offline ends them.
        self._wake()
        return simledger_pb2.SetFaultsResponse(faults=faults.to_proto())

    async def GetFaults(
        self, request: simledger_pb2.GetFaultsRequest, context: Context
    ) -> simledger_pb2.GetFaultsResponse:
        return simledger_pb2.GetFaultsResponse(faults=self._faults.to_proto())

    async def ListTransfers(
        self, request: simledger_pb2.ListTransfersRequest, context: Context
    ) -> simledger_pb2.ListTransfersResponse:
        account_id: str | None = None
        if request.account_id:
            try:
                account_id = account_id_of(request.account_id)
            except InvalidRequest as exc:
                await self._invalid(context, exc)
        limit = request.limit if 0 < request.limit <= LIST_LIMIT else LIST_LIMIT
        after = min(request.after_sequence, _MAX_SEQUENCE)
        try:
            found = await self._book(self._store.transfers, after, limit, account_id)
        except LedgerError as exc:
            await self._refused(context, exc)
        return simledger_pb2.ListTransfersResponse(
            transfers=[transfer_to_proto(t, self._asset.scale) for t in found]
        )
