"""The Ethereum adaptor's pure parts: encodings, revert reasons, fees, peer messages, the
transaction signer (byte for byte eth-account's), and the configuration (the key file's mode,
the key never echoed)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from eth_account import Account
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "adaptors" / "ethereum"))

import eth_chain
import eth_peering
import eth_signer
from eth_config import Config, ConfigError

KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
TOKEN = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


def test_erc20_transfer_calldata_and_its_transfer_log() -> None:
    data = eth_chain.transfer_call(ADDRESS, 2**70)
    assert data.startswith("0xa9059cbb")  # transfer(address,uint256)
    assert data.endswith((2**70).to_bytes(32, "big").hex())
    log = {
        "topics": [
            eth_chain.TRANSFER_TOPIC,
            eth_chain.address_topic(TOKEN),
            eth_chain.address_topic(ADDRESS),
        ],
        "data": "0x" + (2**70).to_bytes(32, "big").hex(),
        "transactionHash": "0xAB",
        "logIndex": "0x3",
        "blockNumber": "0x10",
    }
    parsed = eth_chain.parse_transfer_log(log)
    assert (parsed.payer, parsed.payee, parsed.value) == (TOKEN, ADDRESS, 2**70)
    assert eth_chain.settlement_id(parsed.tx_hash, parsed.log_index) == "0xab:3"
    with pytest.raises(ValueError):
        eth_chain.parse_transfer_log({**log, "topics": log["topics"][:2]})


def test_revert_reasons_in_words() -> None:
    error = (
        "0x08c379a0"
        + ((32).to_bytes(32, "big") + (5).to_bytes(32, "big") + b"nope!".ljust(32, b"\0")).hex()
    )
    assert eth_chain.revert_reason(error) == "nope!"
    assert eth_chain.revert_reason("0x") == "reverted without a reason"
    panic = "0x4e487b71" + (0x11).to_bytes(32, "big").hex()
    assert eth_chain.revert_reason(panic) == "panic 0x11"


def test_fee_bumps_rise_by_more_than_ten_percent_and_stop_at_the_cap() -> None:
    fees = eth_chain.Fees.for_base_fee(base_fee=10, tip=2, cap=None)
    assert fees == eth_chain.Fees(max_fee=22, tip=2)
    bumped = fees.bumped(fees, cap=None)
    assert bumped is not None
    assert bumped.max_fee * 10 >= fees.max_fee * 11 and bumped.tip * 10 >= fees.tip * 11
    assert fees.bumped(fees, cap=fees.max_fee) is None
    assert eth_chain.confirmed_height(head=100, confirmations=12) == 89


def test_what_a_balance_can_pay_keeps_the_most_its_transaction_may_burn_in_gas() -> None:
    gas, max_fee = eth_chain.TRANSFER_GAS, 3 * 10**9
    assert eth_chain.spendable(10**18, gas, max_fee) == 10**18 - 21_000 * 3 * 10**9
    assert eth_chain.spendable(gas * max_fee, gas, max_fee) == 0
    assert eth_chain.spendable(gas * max_fee - 1, gas, max_fee) == 0  # never negative


def test_the_headroom_is_the_observed_balance_less_what_uncounted_transactions_may_spend() -> None:
    room = eth_chain.Headroom()
    assert room.available() is None  # never observed: the node must be asked
    room.committed(7, 100)  # signed before the first reading
    room.observe(nonce=7, balance=1_000)  # the block has not counted nonce 7 yet
    assert room.available() == 900 and room.has_uncounted()
    room.committed(8, 50)
    room.committed(8, 60)  # a fee bump of the same nonce: its most, not both
    assert room.available() == 840
    room.observe(nonce=8, balance=910)  # nonce 7 mined (spent less than its most)
    assert room.available() == 850
    room.observe(nonce=9, balance=860)
    assert room.available() == 860 and not room.has_uncounted()
    # A reorganisation uncounts nonce 8 again: its cost was kept and counts again.
    room.observe(nonce=8, balance=910)
    assert room.available() == 850
    assert eth_chain.Head.of({"number": "0x10", "baseFeePerGas": "0x7"}) == eth_chain.Head(16, 7)


def test_reservations_are_what_a_balance_read_from_the_node_may_not_reflect_yet() -> None:
    reserved = eth_chain.Reservations()
    reserved.signed("0xa", 100)
    reserved.sent("0xa")  # the node has it: a balance read from now on reflects it
    reserved.signed("0xb", 30)  # signed, not sent yet: a balance read now does not reflect it
    mark = reserved.mark()  # ... the balance is read here ...
    assert reserved.since(mark) == 30
    reserved.signed("0xc", 5)  # signed while the question was out: not in the answer either
    assert reserved.since(mark) == 35
    reserved.sent("0xb")  # sent after the mark: perhaps in the answer, still counted (refusal)
    reserved.sent("0xb")  # sent again (a re-broadcast): counted once
    assert reserved.since(mark) == 35
    assert reserved.since(reserved.mark()) == 5  # read again: only 0xc is still unsent
    reserved.sent("0xunknown")  # a transaction of before this process: nothing to release
    assert reserved.since(reserved.mark()) == 5


_UINT64 = st.integers(0, 2**64 - 1)
_UINT256 = st.integers(0, 2**256 - 1)


@settings(max_examples=200, deadline=None)
@given(
    chain_id=_UINT64,
    nonce=_UINT64,
    tip=_UINT256,
    max_fee=_UINT256,
    gas=_UINT64,
    to=st.binary(min_size=20, max_size=20),
    value=_UINT256,
    data=st.binary(max_size=300),
)
def test_a_signed_transaction_is_byte_for_byte_the_one_eth_account_signs(
    chain_id: int, nonce: int, tip: int, max_fee: int, gas: int, to: bytes, value: int, data: bytes
) -> None:
    signer = eth_signer.Signer(bytes.fromhex(KEY[2:]))
    signed = signer.sign(
        eth_signer.Transaction(chain_id, nonce, tip, max_fee, gas, to, value, data)
    )
    reference = Account.sign_transaction(
        {
            "type": 2,
            "chainId": chain_id,
            "nonce": nonce,
            "maxPriorityFeePerGas": tip,
            "maxFeePerGas": max_fee,
            "gas": gas,
            "to": eth_chain.address_from_bytes(to),
            "value": value,
            "data": "0x" + data.hex(),
        },
        KEY,
    )
    assert signed.raw == bytes(reference.raw_transaction)
    assert signed.hash == bytes(reference.hash)
    # What a node does with it: the sender recovered from the signature is the key's address.
    assert Account.recover_transaction(signed.raw) == signer.address == ADDRESS


def test_the_signer_refuses_what_is_not_a_key_and_never_shows_one() -> None:
    for bad in (bytes(32), bytes.fromhex("ff" * 32), bytes(31)):
        with pytest.raises(ValueError):
            eth_signer.Signer(bad)
    assert KEY[2:] not in repr(eth_signer.Signer(bytes.fromhex(KEY[2:])))
    with pytest.raises(ValueError, match="negative"):
        eth_signer.Signer(bytes.fromhex(KEY[2:])).sign(
            eth_signer.Transaction(1, -1, 0, 0, 21000, bytes(20), 0, b"")
        )


def test_peer_messages_round_trip_and_mismatches_name_both_sides() -> None:
    ours = eth_peering.SettlementAccount(31337, ADDRESS, TOKEN)
    assert eth_peering.parse_request(eth_peering.request(ours)) == ours
    assert eth_peering.parse_reply(eth_peering.reply(ours)) == ours
    other_chain = eth_peering.SettlementAccount(1, ADDRESS, TOKEN)
    problem = eth_peering.disagreement(ours, other_chain)
    assert problem is not None and "31337" in problem and "chain 1" in problem
    eth_only = eth_peering.SettlementAccount(31337, ADDRESS, None)
    problem = eth_peering.disagreement(ours, eth_only)
    assert problem is not None and TOKEN in problem and "ETH" in problem
    for garbage in (b"\x00\xff", b"", b"\x0a\x02\x08\x00"):
        with pytest.raises(ValueError):
            eth_peering.parse_request(garbage)


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {
        "ILP_ETHEREUM_RPC_URL": "http://127.0.0.1:8545",
        "ILP_ADAPTOR_STATE_DB": str(tmp_path / "state.db"),
        **extra,
    }


def test_a_key_file_readable_by_others_is_refused_and_the_key_never_echoed(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(KEY + "\n")
    os.chmod(key_file, 0o644)
    with pytest.raises(ConfigError) as refused:
        Config.from_env(_env(tmp_path, ILP_ETHEREUM_KEY_FILE=str(key_file)))
    assert "0644" in str(refused.value) and "chmod 600" in str(refused.value)
    os.chmod(key_file, 0o600)
    config = Config.from_env(_env(tmp_path, ILP_ETHEREUM_KEY_FILE=str(key_file)))
    assert config.address == ADDRESS
    assert KEY[2:] not in repr(config)
    typo = KEY[:-1] + "z"
    with pytest.raises(ConfigError) as malformed:
        Config.from_env(_env(tmp_path, ILP_ETHEREUM_PRIVATE_KEY=typo))
    assert typo[2:] not in str(malformed.value)


def test_configuration_errors_name_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ILP_ETHEREUM_KEY_FILE or ILP_ETHEREUM_PRIVATE_KEY"):
        Config.from_env(_env(tmp_path))
    with pytest.raises(ConfigError, match="ILP_ETHEREUM_CONFIRMATIONS"):
        Config.from_env(
            _env(tmp_path, ILP_ETHEREUM_PRIVATE_KEY=KEY, ILP_ETHEREUM_CONFIRMATIONS="0")
        )
    with pytest.raises(ConfigError, match="ILP_ETHEREUM_TOKEN"):
        Config.from_env(_env(tmp_path, ILP_ETHEREUM_PRIVATE_KEY=KEY, ILP_ETHEREUM_TOKEN="0x12"))
    finalized = Config.from_env(
        _env(tmp_path, ILP_ETHEREUM_PRIVATE_KEY=KEY, ILP_ETHEREUM_CONFIRMATIONS="finalized")
    )
    assert finalized.finalized
