"""The demo on Ethereum (``ilp-host demo --ledger ethereum`` / ``ethereum-erc20``): the chain
around the two hosts, and its side of the reconciliation.

It starts anvil (automine), deploys the demo token for ``ethereum-erc20``, gives Alice's
address its funding (ETH: anvil's development accounts start with 10,000 ETH, so Alice's is
what she holds at start; the token: a transfer from the deployer), and configures each host's
Ethereum adaptor with its own development key, in a key file of mode 0600.

Reconciling against the chain means reading the chain, not the adaptors: Bob's address holds
his starting balance plus exactly what Alice's completed settlements paid; Alice's holds her
funding less those payments (and, in ETH, less the gas her receipts say she paid); every
completed settlement id is a successful transaction on chain that moved exactly its amount
from Alice's address to Bob's (for the token: its Transfer log).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from host.demo.adaptors import token_artifact
from host.demo.anvil import DEV_KEYS, Anvil, address_of_key
from host.pb.ilphost.admin.v1 import admin_pb2

#: The ledger kinds this module runs.
KINDS: Final = ("ethereum", "ethereum-erc20")
KEYS: Final = {"alice": DEV_KEYS[1], "bob": DEV_KEYS[2]}
#: The token the ERC-20 demo deploys: 6 decimals, like the stablecoins people settle in.
TOKEN_DECIMALS: Final = 6
TOKEN_FUNDING: Final = 1_000_000 * 10**TOKEN_DECIMALS
_TRANSFER_TOPIC: Final = "0xddf252ad1be2c89b69c2b068fc378daa952ba7f163c4a11628f55a4df523b3ef"


@dataclass(frozen=True)
class Books:
    """What the chain says, read once the settlements are quiet."""

    alice: int
    bob: int


@dataclass
class EthereumDemo:
    """The chain of one demo run and how the hosts' accounts are configured for it."""

    node: Anvil
    directory: Path
    adaptors: Path  # the in-tree adaptors directory (host.demo.adaptors)
    token: str | None
    alice_start: int
    bob_start: int
    confirmations: int = 1

    @property
    def asset_code(self) -> str:
        return "DEMO" if self.token else "ETH"

    @property
    def ledger_scale(self) -> int:
        return TOKEN_DECIMALS if self.token else 18

    @property
    def account_scale(self) -> int:
        """The ILP accounts count in micro-tokens, or in gwei: the engine converts to wei."""
        return TOKEN_DECIMALS if self.token else 9

    def adaptor_env(self, name: str) -> dict[str, str]:
        """The environment of ``name``'s Ethereum adaptor (its key in a file of mode 0600)."""
        key_file = self.directory / f"{name}.key"
        key_file.write_text(KEYS[name] + "\n")
        os.chmod(key_file, 0o600)
        env = {
            "ILP_ETHEREUM_RPC_URL": self.node.url,
            "ILP_ETHEREUM_WS_URL": self.node.url.replace("http://", "ws://"),
            "ILP_ETHEREUM_KEY_FILE": str(key_file),
            "ILP_ADAPTOR_STATE_DB": str(self.directory / name / "ethereum.db"),
            "ILP_ETHEREUM_CONFIRMATIONS": str(self.confirmations),
            "ILP_ETHEREUM_POLL_INTERVAL": "0.02",
        }
        if self.token:
            env["ILP_ETHEREUM_TOKEN"] = self.token
        return env

    def balance(self, name: str) -> int:
        address = address_of_key(KEYS[name])
        if self.token:
            return self.node.token_balance(self.token, address)
        return self.node.balance(address)

    def books(self) -> Books:
        return Books(self.balance("alice"), self.balance("bob"))

    def reconcile(self, books: Books, completed: Sequence[admin_pb2.Settlement]) -> list[str]:
        """What does not add up between the chain and Alice's completed settlements."""
        problems: list[str] = []
        paid = sum(int(s.ledger_amount.value) for s in completed)
        if books.bob - self.bob_start != paid:
            problems.append(
                f"chain: Bob's address received {books.bob - self.bob_start}, "
                f"Alice's settlements paid {paid}"
            )
        gas = 0
        alice, bob = (address_of_key(KEYS[n]).lower() for n in ("alice", "bob"))
        for settlement in completed:
            tx_hash, _, log_index = settlement.ledger_settlement_id.partition(":")
            receipt = self.node.call("eth_getTransactionReceipt", tx_hash)
            if receipt is None or int(receipt["status"], 16) != 1:
                problems.append(f"chain: no successful transaction {tx_hash}")
                continue
            gas += int(receipt["gasUsed"], 16) * int(receipt["effectiveGasPrice"], 16)
            moved = self._moved(receipt, log_index, alice, bob)
            if moved != int(settlement.ledger_amount.value):
                problems.append(
                    f"chain: {settlement.ledger_settlement_id} moved {moved} "
                    f"from Alice to Bob, not {settlement.ledger_amount.value}"
                )
        spent = paid if self.token else paid + gas
        if self.alice_start - books.alice != spent:
            problems.append(
                f"chain: Alice's address spent {self.alice_start - books.alice}, "
                f"expected {spent} (payments{'' if self.token else ' + gas'})"
            )
        return problems

    def _moved(self, receipt: dict[str, object], log_index: str, alice: str, bob: str) -> int:
        if not self.token:
            tx = self.node.call("eth_getTransactionByHash", receipt["transactionHash"])
            ok = tx["from"].lower() == alice and (tx["to"] or "").lower() == bob
            return int(tx["value"], 16) if ok else 0
        for log in receipt["logs"]:  # type: ignore[attr-defined]
            if int(log["logIndex"], 16) != int(log_index or -1):
                continue
            topics = log["topics"]
            if (
                log["address"].lower() == self.token.lower()
                and topics[0] == _TRANSFER_TOPIC
                and topics[1][-40:] == alice[2:]
                and topics[2][-40:] == bob[2:]
            ):
                return int(log["data"], 16)
        return 0


@contextlib.contextmanager
def ethereum_chain(
    directory: Path,
    kind: str,
    adaptors: Path,
    *,
    block_time: float | None = None,
    confirmations: int = 1,
) -> Iterator[EthereumDemo]:
    """anvil with Alice funded (and the token deployed for ``ethereum-erc20``); stopped on exit.

    ``adaptors``: the in-tree adaptors directory (the Ethereum adaptor, the token's artifact);
    ``block_time``: seconds between blocks (default: a block per transaction, automine);
    ``confirmations``: what the adaptors wait for.
    """
    node = Anvil.start(directory / "anvil.log", block_time=block_time)
    try:
        token = None
        if kind == "ethereum-erc20":
            supply = 10 * TOKEN_FUNDING
            token = node.deploy_token(DEV_KEYS[0], TOKEN_DECIMALS, supply, token_artifact(adaptors))
            node.transfer_token(DEV_KEYS[0], token, address_of_key(KEYS["alice"]), TOKEN_FUNDING)
        demo = EthereumDemo(node, directory, adaptors, token, 0, 0, confirmations)
        demo.alice_start, demo.bob_start = demo.balance("alice"), demo.balance("bob")
        yield demo
    finally:
        node.stop()
