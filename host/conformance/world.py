"""The world the suite builds around an adaptor: a temporary directory, the simulated ledger
with funded accounts, and a fake Engine that plays the peer.

The ledger (``python -m host.simledger``, in the temporary directory) holds the adaptor's
settlement account and one ledger account per peer account the suite uses. The adaptor learns
them from its environment (``ILP_SIMLEDGER_ADDR``, ``ILP_SIMLEDGER_ACCOUNT``,
``ILP_ADAPTOR_STATE_DB``): simledger adaptors in any language work out of the box, and the
memory adaptors ignore the variables. The fake Engine (the suite serves it on the
``ILP_HOST_ENGINE_ADDR`` it gives the adaptor) answers ``SendData`` as the peer's adaptor would:
the simledger adaptors' PeerRequest (host.simledger.peer_messages) gets a PeerReply naming the
peer's ledger account. A peer can be made unreachable for a while (``PeerPlay.unreachable``):
its SendData is then refused as a host refuses it while the peer's adaptor is not serving yet.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import AsyncIterator, Collection, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Final

import grpc

from host.pb.ilphost.simledger.v1 import simledger_pb2, simledger_pb2_grpc
from host.simledger import peer_messages as simledger
from host.simledger.process import start_ledger
from sdk import channels
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.testing import FakeEngine, Refuse, fake_engine

if TYPE_CHECKING:
    from host.pb.ilphost.simledger.v1.simledger_pb2_grpc import SimLedgerAsyncStub

#: GetInfoResponse.ledger of the adaptors that settle on the simulated ledger.
SIMLEDGER: Final = "simledger"
ENV_LEDGER_ADDR: Final = "ILP_SIMLEDGER_ADDR"
ENV_LEDGER_ACCOUNT: Final = "ILP_SIMLEDGER_ACCOUNT"
ENV_STATE_DB: Final = "ILP_ADAPTOR_STATE_DB"

#: The adaptor's settlement account on the suite's ledger.
ADAPTOR_LEDGER_ACCOUNT: Final = "conformance-adaptor"
#: What the suite mints into the adaptor's account and into each peer's, in ledger units.
FUNDING: Final = 10**12
LEDGER_TIMEOUT: Final = 10.0


def peer_ledger_account(account_id: str) -> str:
    """The ledger account of the peer behind the host account ``account_id``."""
    return f"conformance-peer.{account_id}"


@dataclass
class PeerPlay:
    """The peers the fake Engine plays: how it answers SendData, and what it answered."""

    #: The host accounts whose peers it plays; SendData for another is NOT_FOUND.
    accounts: frozenset[str]
    #: Peers that cannot be reached now: SendData for them is refused, the first time with the
    #: FAILED_PRECONDITION a host answers while the peer's adaptor is not serving yet (a
    #: T00 reject), then UNAVAILABLE.
    unreachable: set[str] = field(default_factory=set)
    #: Account ids, in order, of the SendData calls answered with a PeerReply.
    answered: list[str] = field(default_factory=list)
    #: Account ids, in order, of the SendData calls refused as unreachable.
    refused: list[str] = field(default_factory=list)

    def reply(self, request: engine_pb2.SendDataRequest) -> bytes:
        """The fake Engine's answer to SendData: the peer's ledger account for a PeerRequest
        about one of ``accounts``; NOT_FOUND for another account; FAILED_PRECONDITION (the
        peer's adaptor refused) for any other message."""
        account_id = request.account_id
        if account_id not in self.accounts:
            raise Refuse(
                grpc.StatusCode.NOT_FOUND,
                f"account {account_id[:60]!r} is not one the conformance suite uses",
            )
        if account_id in self.unreachable:
            first = account_id not in self.refused
            self.refused.append(account_id)
            if first:
                raise Refuse(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    f"the peer of {account_id} refused: adaptor peer is not serving (T00)",
                )
            raise Refuse(grpc.StatusCode.UNAVAILABLE, f"the peer of {account_id} is unreachable")
        try:
            simledger.parse_ledger_account_request(request.data)
        except simledger.PeerMessageError as exc:
            raise Refuse(
                grpc.StatusCode.FAILED_PRECONDITION,
                "the conformance suite's peer understands only the simledger PeerRequest "
                f"(ilphost.simledger.v1): {exc}",
            ) from exc
        self.answered.append(account_id)
        return simledger.ledger_account_reply(peer_ledger_account(account_id))


class SuiteLedger:
    """The suite's own client of its simulated ledger."""

    def __init__(self, target: str, stub: SimLedgerAsyncStub, scale: int) -> None:
        self.target = target
        self.scale = scale
        self._stub = stub

    def _amount(self, value: int) -> types_pb2.Amount:
        return types_pb2.Amount(value=str(value), scale=self.scale)

    async def fund(self, account: str) -> None:
        """Open ``account`` (idempotent) and mint FUNDING into it."""
        await self._stub.CreateAccount(
            simledger_pb2.CreateAccountRequest(account_id=account), timeout=LEDGER_TIMEOUT
        )
        await self._stub.Mint(
            simledger_pb2.MintRequest(
                transfer_id=f"conformance-funding:{account}",
                account_id=account,
                amount=self._amount(FUNDING),
            ),
            timeout=LEDGER_TIMEOUT,
        )

    async def balance(self, account: str) -> int:
        """What ``account`` holds now."""
        reply = await self._stub.GetAccount(
            simledger_pb2.GetAccountRequest(account_id=account), timeout=LEDGER_TIMEOUT
        )
        return int(reply.account.balance.value)

    async def pay(self, transfer_id: str, payer: str, payee: str, value: int) -> None:
        """Transfer ``value`` from ``payer`` to ``payee``; the memo names the payer, as the
        reference adaptor's payments do."""
        await self._stub.Transfer(
            simledger_pb2.TransferRequest(
                transfer_id=transfer_id,
                from_account_id=payer,
                to_account_id=payee,
                amount=self._amount(value),
                memo=payer,
            ),
            timeout=LEDGER_TIMEOUT,
        )


@dataclass(frozen=True)
class World:
    """What surrounds the adaptor under test for one run."""

    directory: Path
    engine: FakeEngine
    peers: PeerPlay
    #: None with --use-adaptor-config: the adaptor brings its own ledger.
    ledger: SuiteLedger | None

    def adaptor_env(self, state_db: str = "adaptor-state.db") -> Mapping[str, str]:
        """The variables the suite adds to the adaptor's environment (the contract's own are
        added at launch). ``state_db`` names the adaptor's state file in the run's directory."""
        if self.ledger is None:
            return {}
        return {
            ENV_LEDGER_ADDR: self.ledger.target,
            ENV_LEDGER_ACCOUNT: ADAPTOR_LEDGER_ACCOUNT,
            ENV_STATE_DB: str(self.directory / state_db),
        }


@asynccontextmanager
async def build_world(
    *, with_ledger: bool, accounts: Collection[str], temp_root: Path | None = None
) -> AsyncIterator[World]:
    """The world for one run, in a new directory under ``temp_root`` (default: the system's
    temp directory); everything it made is stopped and removed on exit.

    ``accounts`` are the host account ids the suite uses: the fake Engine plays their peers,
    and with the ledger each peer's ledger account is opened and funded.
    """
    # A short name: the sockets inside must fit a unix socket path.
    directory = Path(tempfile.mkdtemp(prefix="ilpconf", dir=temp_root))
    async with AsyncExitStack() as stack:
        stack.callback(shutil.rmtree, directory, True)
        peers = PeerPlay(frozenset(accounts))
        engine = await stack.enter_async_context(fake_engine(peers.reply, set_environ=False))
        ledger: SuiteLedger | None = None
        if with_ledger:
            process = await asyncio.to_thread(
                start_ledger, directory / "ledger.db", f"unix:{directory}/ledger.sock"
            )
            stack.push_async_callback(asyncio.to_thread, process.stop)
            channel = channels.aio_channel(process.target)
            stack.push_async_callback(channel.close, None)
            stub = simledger_pb2_grpc.SimLedgerStub(channel)
            info = await stub.GetLedgerInfo(
                simledger_pb2.GetLedgerInfoRequest(), timeout=LEDGER_TIMEOUT
            )
            ledger = SuiteLedger(process.target, stub, info.asset_scale)
            for account in (ADAPTOR_LEDGER_ACCOUNT, *map(peer_ledger_account, accounts)):
                await ledger.fund(account)
        yield World(directory, engine, peers, ledger)
