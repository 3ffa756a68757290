"""memory-python: the reference Python adaptor, over a ledger that lives in its own memory.

It settles nothing real, but it answers the whole LedgerAdaptor contract the way an adaptor
over a real ledger must. The SDK checks the requests, answers the refusals, pays each
idempotency key once and re-delivers incoming settlements until acknowledged: what is left
here is the ledger. Configuration (environment):

- ``ILP_ADAPTOR_ASSET_CODE`` (default "USD"), ``ILP_ADAPTOR_ASSET_SCALE`` (default 2)
- ``ILP_ADAPTOR_LIQUIDITY``: what the settlement account holds at start (default "100000000")
- ``ILP_ADAPTOR_INCOMING``: incoming settlements to report at start, e.g. "alice:500,bob:250",
  with ids "memory-in-1", "memory-in-2", ... stable across restarts.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

import sdk
from sdk import amount, requests
from sdk.connectivity import Connectivity


@dataclass(frozen=True)
class Config:
    """What the environment configures."""

    asset_code: str
    asset_scale: int
    liquidity: int
    incoming: tuple[tuple[str, int], ...]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Config:
        """Parse and check; ValueError names the variable."""
        raw_scale = environ.get("ILP_ADAPTOR_ASSET_SCALE", "2")
        if not raw_scale.isdigit() or int(raw_scale) > amount.MAX_SCALE:
            raise ValueError(f"ILP_ADAPTOR_ASSET_SCALE={raw_scale!r}: expected 0..255")
        scale = int(raw_scale)
        liquidity = environ.get("ILP_ADAPTOR_LIQUIDITY", "100000000")
        incoming = []
        for item in filter(None, environ.get("ILP_ADAPTOR_INCOMING", "").split(",")):
            account, _, value = item.strip().partition(":")
            requests.check_account_id(account, f"the account of ILP_ADAPTOR_INCOMING {item!r}")
            paid = amount.parse_unsigned(value, scale, "ILP_ADAPTOR_INCOMING")
            if paid == 0:
                raise ValueError(f"ILP_ADAPTOR_INCOMING: zero amount in {item!r}")
            incoming.append((account, paid))
        return cls(
            environ.get("ILP_ADAPTOR_ASSET_CODE", "USD"),
            scale,
            amount.parse_unsigned(liquidity, scale, "ILP_ADAPTOR_LIQUIDITY"),
            tuple(incoming),
        )


class MemoryAdaptor(sdk.LedgerAdaptor):
    """The adaptor; its ledger is a balance and a set of accounts in memory."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        self.config = config
        self.liquidity = config.liquidity
        self.accounts: set[str] = set()
        self.payments = sdk.Payments(sdk.MemoryPaymentStore())

    async def start(self) -> None:
        # A real adaptor connects to its ledger here, before the host sees the handshake.
        self.connections.add("ledger", "settlement-system", Connectivity.CONNECTING)
        self.connections.move("ledger", Connectivity.READY)
        for number, (account, value) in enumerate(self.config.incoming, start=1):
            self.receive(f"memory-in-{number}", account, value)
        self.log.info("memory ledger ready", liquidity=str(self.liquidity))

    async def stop(self) -> None:
        self.connections.move("ledger", Connectivity.SHUTDOWN)
        self.events.close()

    def receive(self, settlement_id: str, account_id: str, value: int) -> None:
        """The ledger saw the peer pay us: more liquidity, and an event for the engine."""
        incoming = sdk.Incoming(settlement_id, account_id, value, self.config.asset_scale)
        if self.events.report_incoming(incoming):
            self.liquidity += value

    async def info(self) -> sdk.Info:
        return sdk.Info(
            name="memory-python",
            version="0.1.0",
            ledger="memory",
            asset_code=self.config.asset_code,
            asset_scale=self.config.asset_scale,
            capabilities=("send_money", "receive_money", "balance", "accounts"),
        )

    async def setup_account(self, account_id: str) -> None:
        self.accounts.add(account_id)

    async def delete_account(self, account_id: str) -> None:
        self.accounts.discard(account_id)

    async def send_money(self, request: sdk.SendMoney) -> sdk.Sent:
        return await self.payments.once(request, self._pay)

    async def _pay(self, request: sdk.SendMoney) -> sdk.Sent:
        # No await from the checks to the debit: concurrent payments cannot interleave.
        if request.account_id not in self.accounts:
            raise sdk.NotFound(
                f"account {request.account_id!r} is not set up (call SetupAccount first)"
            )
        if request.amount > self.liquidity:
            raise sdk.Refused(
                f"insufficient liquidity: {request.amount} asked, {self.liquidity} available"
            )
        self.liquidity -= request.amount
        key = request.idempotency_key
        self.log.info("paid", account=request.account_id, amount=str(request.amount), key=key)
        return sdk.Sent(settlement_id=f"memory-out-{uuid.uuid4().hex}")

    async def get_balance(self) -> sdk.Balance:
        return sdk.Balance(self.liquidity, self.config.asset_scale)


if __name__ == "__main__":
    try:
        config = Config.from_environ(os.environ)
    except ValueError as exc:
        sys.exit(f"memory-python: {exc}")
    sdk.serve(MemoryAdaptor(config))
