"""The conformance suite against the Ethereum adaptor on a real anvil node
(``--use-adaptor-config``: the adaptor's environment says where its chain is).

Once in the demo ERC-20, whose balances move by exactly the amount paid, and once in ETH, where
a payment also pays gas from the balance GetBalance reports: the adaptor declares the
capability ``fees`` and the suite checks "at least the amount, and the same key once more moves
nothing". The suite's peers are pinned to anvil development addresses, and one of them paid the
adaptor before the run, so the incoming checks have a settlement to look at.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

from host.conformance import CHECKS, Outcome, SuiteOptions, run_suite
from host.conformance.checks.registry import FORGOTTEN, OTHER, PEER
from host.demo.anvil import DEV_KEYS, Anvil, address_of_key
from tests.ethereum.harness import ADAPTOR


@pytest.mark.parametrize("asset", ["erc20", "eth"])
def test_the_ethereum_adaptor_conforms_on_anvil(asset: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="ileth"))
    node = Anvil.start(workdir / "anvil.log")
    try:
        adaptor_key, peer_key = DEV_KEYS[1], DEV_KEYS[2]
        env = {}
        if asset == "erc20":
            token = node.deploy_token(DEV_KEYS[0], 6, 10**15)
            node.transfer_token(DEV_KEYS[0], token, address_of_key(adaptor_key), 10**9)
            node.transfer_token(DEV_KEYS[0], token, address_of_key(peer_key), 10**9)
            node.transfer_token(peer_key, token, address_of_key(adaptor_key), 4_321)
            env["ILP_ETHEREUM_TOKEN"] = token
        else:
            node.send(peer_key, address_of_key(adaptor_key), 4_321)
        env |= {
            "ILP_ETHEREUM_RPC_URL": node.url,
            "ILP_ETHEREUM_PRIVATE_KEY": adaptor_key,
            "ILP_ADAPTOR_STATE_DB": str(workdir / "adaptor.db"),
            "ILP_ETHEREUM_CONFIRMATIONS": "1",
            "ILP_ETHEREUM_POLL_INTERVAL": "0.05",
            "ILP_ETHEREUM_START_BLOCK": "0",
            "ILP_ETHEREUM_PEERS": f"{PEER}={address_of_key(peer_key)},"
            f"{OTHER}={address_of_key(DEV_KEYS[3])},{FORGOTTEN}={address_of_key(DEV_KEYS[4])}",
        }
        result = asyncio.run(
            run_suite(
                SuiteOptions(
                    command=(sys.executable, ADAPTOR[1]),
                    env=env,
                    use_adaptor_config=True,
                    temp_root=workdir,
                    start_timeout=60.0,
                    event_timeout=30.0,
                    incoming_wait=10.0,
                    quiet_period=2.0,
                )
            )
        )
        explain = "\n".join(
            [f"{r.outcome.value} {r.name}: {r.reason}" for r in result.results]
            + ["stderr:", *result.stderr_tail]
        )
        assert [r.name for r in result.results] == [c.name for c in CHECKS], explain
        failed = {r.name for r in result.results if r.outcome is Outcome.FAIL}
        skipped = {r.name for r in result.results if r.outcome is Outcome.SKIP}
        assert failed == set(), explain
        # The peer messages the suite knows are the simulated ledger's adaptors'; the rest ran.
        simledger_messages = {"receive_data.reply", "peer_message.request", "peer_message.refused"}
        assert skipped <= simledger_messages | {"stdio"}, explain
        reasons = {r.name: r.reason for r in result.results}
        paid = reasons["send_money.idempotent"]
        if asset == "erc20":
            assert "paid 123 once (by GetBalance)" in paid, explain
        else:
            assert "paid 123 once (by GetBalance, with the fees)" in paid, explain
            assert "the key once more moved nothing" in paid, explain
        assert "4321" in reasons["watch_events.incoming"], explain
    finally:
        node.stop()
        shutil.rmtree(workdir, ignore_errors=True)
