"""A local Ethereum node (anvil, from npm ``@foundry-rs/anvil``) for the demo, the tests and the
benchmarks: start it, fund and pay with its development accounts, deploy the demo token, read
balances and transfers back. Synchronous JSON-RPC over loopback HTTP (urllib): this is tooling
around a node, not the adaptor (which has its own asynchronous client).

anvil's development accounts are derived from its public test mnemonic; their keys are public
and only ever hold test money on a local chain.
"""

from __future__ import annotations

import json
import platform
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from host.demo.adaptors import adaptors_dir, source_tree, token_artifact
from host.demo.twohost import free_ports

CHAIN_ID: Final = 31337
#: anvil's first development accounts (public test keys of its default mnemonic).
DEV_KEYS: Final = (
    "0xac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
    "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d",
    "0x5de4111afa1a4b94908f83103eb1f1706367c2e68ca870fc3fb9a804cdab365a",
    "0x7c852118294e51e653712a81e05800f419141751be58f605c371e15141b007a6",
    "0x47e179ec197488593b187f80a00eb0da91f1b9d0b13f8733639f19c30a34926a",
)
ETHER: Final = 10**18
#: Selectors of ERC-20 transfer(address,uint256) and balanceOf(address).
_TRANSFER: Final = bytes.fromhex("a9059cbb")
_BALANCE_OF: Final = bytes.fromhex("70a08231")


class NodeError(RuntimeError):
    """anvil did not start, or refused a call; the message says what."""


def anvil_binary() -> Path:
    """The anvil executable: the one npm installed for this machine in the source tree's (or
    the current directory's) node_modules, else ``anvil`` on PATH."""
    arch = {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(platform.machine())
    system = platform.system().lower()
    package = Path("node_modules") / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    roots = [root for root in (source_tree(), Path.cwd()) if root is not None]
    for root in roots:
        if (root / package).is_file():
            return root / package
    on_path = shutil.which("anvil")
    if on_path is not None:
        return Path(on_path)
    looked = ", ".join(str(root / package) for root in roots)
    raise NodeError(f"no anvil in {looked} nor on PATH: run make setup (npm @foundry-rs/anvil)")


def address_of_key(key: str) -> str:
    from eth_account import Account  # the ethereum extra; imported when a chain is used

    return str(Account.from_key(key).address)


def _word(value: int) -> bytes:
    return value.to_bytes(32, "big")


def _address_word(address: str) -> bytes:
    return bytes(12) + bytes.fromhex(address[2:])


@dataclass
class Anvil:
    """One anvil process on a loopback port; ``state`` makes it keep its chain in that file."""

    port: int
    process: subprocess.Popen[bytes]
    log: Path
    args: tuple[str, ...]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- process ------------------------------------------------------------------------------

    @classmethod
    def start(
        cls,
        log: Path,
        *,
        port: int | None = None,
        block_time: float | None = None,
        state: Path | None = None,
        extra: tuple[str, ...] = (),
    ) -> Anvil:
        args = ["--host", "127.0.0.1", "--port", str(port or free_ports(1)[0]), "--silent"]
        if block_time is not None:
            args += ["--block-time", f"{block_time:g}"]
        if state is not None:
            args += ["--state", str(state), "--state-interval", "1"]
        node = cls(int(args[3]), _spawn((*args, *extra), log), log, (*args, *extra))
        node.wait_ready()
        return node

    def wait_ready(self, deadline: float = 30.0) -> None:
        limit = time.monotonic() + deadline
        while time.monotonic() < limit:
            if self.process.poll() is not None:
                raise NodeError(
                    f"anvil exited ({self.process.returncode}): {self.log.read_text()[-500:]}"
                )
            try:
                self.call("eth_chainId")
                return
            except NodeError:
                time.sleep(0.05)
        raise NodeError(f"anvil did not answer on {self.url} within {deadline:g} s")

    def stop(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def restart(self) -> None:
        """Start again on the same port with the same arguments (after stop)."""
        self.process = _spawn(self.args, self.log)
        self.wait_ready()

    # -- JSON-RPC -----------------------------------------------------------------------------

    def call(self, method: str, *params: Any) -> Any:
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)})
        request = urllib.request.Request(
            self.url, body.encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                reply = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            raise NodeError(f"{method}: {exc}") from exc
        if reply.get("error"):
            raise NodeError(f"{method}: {reply['error']}")
        return reply.get("result")

    def block_number(self) -> int:
        return int(self.call("eth_blockNumber"), 16)

    def mine(self, blocks: int = 1) -> None:
        self.call("anvil_mine", hex(blocks))

    def balance(self, address: str) -> int:
        return int(self.call("eth_getBalance", address, "latest"), 16)

    def token_balance(self, token: str, address: str) -> int:
        data = "0x" + (_BALANCE_OF + _address_word(address)).hex()
        return int(self.call("eth_call", {"to": token, "data": data}, "latest"), 16)

    def send(self, key: str, to: str | None, value: int = 0, data: bytes = b"") -> dict[str, Any]:
        """Sign and send a transaction from ``key``; its receipt once mined."""
        sender = address_of_key(key)
        tx: dict[str, Any] = {
            "type": 2,
            "chainId": CHAIN_ID,
            "nonce": int(self.call("eth_getTransactionCount", sender, "pending"), 16),
            "value": value,
            "data": data,
            "gas": 2_000_000 if to is None or data else 21_000,
            "maxFeePerGas": 100 * 10**9,
            "maxPriorityFeePerGas": 10**9,
        }
        if to is not None:
            tx["to"] = to
        from eth_account import Account

        signed = Account.sign_transaction(tx, key)
        tx_hash = self.call("eth_sendRawTransaction", "0x" + bytes(signed.raw_transaction).hex())
        return self.wait_receipt(tx_hash)

    def wait_receipt(self, tx_hash: str, deadline: float = 30.0) -> dict[str, Any]:
        limit = time.monotonic() + deadline
        while time.monotonic() < limit:
            receipt = self.call("eth_getTransactionReceipt", tx_hash)
            if receipt:
                return dict(receipt)
            time.sleep(0.01)
        raise NodeError(f"no receipt for {tx_hash} within {deadline:g} s")

    def deploy_token(
        self, key: str, decimals: int, supply: int, artifact_file: Path | None = None
    ) -> str:
        """Deploy the demo token from ``key`` (which receives the supply); its address.
        ``artifact_file``: its compiled artifact (default: the in-tree adaptors' one)."""
        path = artifact_file or token_artifact(adaptors_dir())
        artifact = json.loads(path.read_text())
        code = bytes.fromhex(artifact["bytecode"][2:]) + _word(decimals) + _word(supply)
        receipt = self.send(key, None, data=code)
        if int(receipt["status"], 16) != 1:
            raise NodeError(f"the token deployment reverted: {receipt}")
        from eth_utils.address import to_checksum_address

        return to_checksum_address(receipt["contractAddress"])

    def transfer_token(self, key: str, token: str, to: str, value: int) -> dict[str, Any]:
        data = _TRANSFER + _address_word(to) + _word(value)
        return self.send(key, token, data=data)


def _spawn(args: tuple[str, ...], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [str(anvil_binary()), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
