"""Config of the engine and connector parts: [engine], [[account]], and their cross-checks."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from dataclasses import fields
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from host.assembly import Together, assemble_run
from host.config import ConfigError, connector_api_target, for_role, for_run, load_config
from host.engine import InvalidArgument, Policy
from host.engine.policy import check_policy

BASE = Path("/srv/ilp")
ADAPTOR = """
[[adaptor]]
name = "simledger"
command = ["python", "adaptor.py"]
"""
ACCOUNT = """
[[account]]
id = "bob"
adaptor = "simledger"
asset_code = "USD"
asset_scale = 6
settle_threshold = -100000
settle_to = "0"
min_balance = "-1000000000000000000000000"
max_balance = 1000000
"""
PEER = """
[connector]
address = "test.alice"
port = 7768

[[peer]]
id = "bob"
url = "http://127.0.0.1:7769/"
address = "test.bob"
incoming_token = "token-from-bob"
outgoing_token = "token-to-bob-1"
"""


def test_account_with_big_amounts_and_default_database() -> None:
    config = load_config(ADAPTOR + ACCOUNT, BASE)
    (account,) = config.accounts
    assert account.policy == Policy(-100000, 0, -(10**24), 1000000)
    assert (account.adaptor, account.asset_code, account.asset_scale) == ("simledger", "USD", 6)
    assert config.database == BASE / "var" / "engine.db"
    assert config.connector is None


def test_no_account_no_engine() -> None:
    assert load_config(ADAPTOR, BASE).database is None


def test_engine_database_is_relative_to_the_state_dir() -> None:
    text = '[host]\nstate_dir = "state"\n[engine]\ndatabase = "e.sqlite"\n' + ADAPTOR + ACCOUNT
    assert load_config(text, BASE).database == BASE / "state" / "e.sqlite"


def test_a_postgresql_url_is_kept_as_written_by_every_process() -> None:
    url = "postgresql://ilp@db.internal:5432/ilp?sslmode=verify-full"
    text = f'[engine]\ndatabase = "{url}"\n' + ADAPTOR + ACCOUNT + PEER
    whole = load_config(text, BASE)
    assert whole.database == url
    assert for_role(whole, "engine").database == url  # instances share it, no per-role copy
    assert for_role(whole, "connector").database is None


def test_run_refuses_connector_books_it_would_not_keep() -> None:
    """`ilp-host run` keeps the packets in the engine's store: a connector.database naming
    anything else is refused, not ignored; the engine's own PostgreSQL URL passes."""
    sqlite = PEER.replace("[connector]\n", '[connector]\ndatabase = "books.db"\n')
    whole = load_config(ADAPTOR + ACCOUNT + sqlite, BASE, source="alice.toml")
    with pytest.raises(ConfigError) as refused:
        for_run(whole)
    assert str(refused.value) == (
        "alice.toml: connector.database: `ilp-host run` keeps the packets' books in the "
        "engine's store ([engine] database, /srv/ilp/var/engine.db), not in 'books.db': "
        "remove connector.database, or run the split host (`ilp-host connector` + "
        "`ilp-host engine`)"
    )
    assert for_role(whole, "connector").connector == whole.connector  # the split host's
    url = "postgresql://ilp:secret@db.internal:5432/ilp"
    other = PEER.replace("[connector]\n", f'[connector]\ndatabase = "{url}x"\n')
    engine = f'[engine]\ndatabase = "{url}"\n'
    with pytest.raises(
        ConfigError, match=r"not in PostgreSQL database ilpx on db\.internal:5432:"
    ) as refused:
        for_run(load_config(engine + ADAPTOR + ACCOUNT + other, BASE))
    assert "secret" not in str(refused.value)
    same = PEER.replace("[connector]\n", f'[connector]\ndatabase = "{url}"\n')
    shared = load_config(engine + ADAPTOR + ACCOUNT + same, BASE)
    assert for_run(shared) == shared
    plain = load_config(ADAPTOR + ACCOUNT + PEER, BASE)
    assert for_run(plain) == plain


def test_the_outbox_lease_is_configured_and_exceeds_the_adaptor_call_deadline() -> None:
    assert load_config(ADAPTOR + ACCOUNT, BASE).outbox_lease == 30.0
    text = "[engine]\noutbox_lease = 45\n" + ADAPTOR + ACCOUNT + PEER
    whole = load_config(text, BASE)
    assert whole.outbox_lease == 45.0
    assert for_role(whole, "engine").outbox_lease == 45.0
    for value, problem in (
        ("10", "must exceed the adaptor call deadline (10 s), got 10.0"),
        ("2.5", "must exceed the adaptor call deadline (10 s), got 2.5"),
        ("0", "must be a positive number, got 0"),
        ('"1m"', 'must be a positive number, got "1m"'),
    ):
        with pytest.raises(ConfigError) as refused:
            load_config(f"[engine]\noutbox_lease = {value}\n" + ADAPTOR + ACCOUNT, BASE)
        assert str(refused.value) == f"host.toml: engine.outbox_lease: {problem}"


def test_the_assembled_engine_leases_for_the_configured_time() -> None:
    async def lease(text: str) -> float:
        with tempfile.TemporaryDirectory(prefix="ilp") as directory:  # short: the socket
            config = load_config(text, Path(directory))
            config.state_dir.mkdir()
            async with contextlib.AsyncExitStack() as stack:
                parts = await assemble_run(config, stack)
                assert isinstance(parts, Together)
                return parts.engine.engine.outbox.lease

    assert asyncio.run(lease("[engine]\noutbox_lease = 45\n" + ADAPTOR + ACCOUNT)) == 45.0
    assert asyncio.run(lease(ADAPTOR + ACCOUNT)) == 30.0


def test_connector_with_its_account() -> None:
    config = load_config(ADAPTOR + ACCOUNT + PEER, BASE)
    assert config.connector is not None
    assert [peer.id for peer in config.connector.peers] == ["bob"]


def test_default_policy_never_settles_by_itself() -> None:
    """Without any policy key an account extends no credit, so no debt to settle arises."""
    bare = "\n".join(
        line for line in ACCOUNT.splitlines() if not line.startswith(("settle", "min_", "max_"))
    )
    (account,) = load_config(ADAPTOR + bare, BASE).accounts
    assert (account.policy.min_balance, account.policy.settle_threshold) == (0, 0)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        (ADAPTOR + ACCOUNT.replace('"simledger"', '"nope"'), "account[0].adaptor: no [[adaptor]]"),
        (ADAPTOR + ACCOUNT.replace("asset_scale = 6", "asset_scale = 300"), "asset_scale"),
        (ADAPTOR + ACCOUNT.replace('id = "bob"', 'id = "b o b"'), "account[0].id"),
        (ADAPTOR + ACCOUNT + ACCOUNT, "duplicate account id"),
        (
            ADAPTOR + ACCOUNT.replace('settle_to = "0"', 'settle_to = "1.5"'),
            "account[0].settle_to: must be an integer or a decimal string (base 10, no leading "
            'zeros, at most 78 digits), got "1.5"',
        ),
        (
            ADAPTOR + ACCOUNT.replace('asset_code = "USD"', 'asset_code = "U S D"'),
            "account[0].asset_code: must be 1 to 32 printable ASCII characters without the space",
        ),
        (ADAPTOR + ACCOUNT.replace("[[account]]", "[[acount]]"), "acount: unknown key (did you"),
        (ADAPTOR + ACCOUNT.replace('settle_to = "0"', "settle_to = true"), "settle_to"),
        (
            ADAPTOR + ACCOUNT.replace("max_balance = 1000000", "max_balance = -1"),
            "account[0].max_balance: must be >= 0 (the credit we extend to the peer), got -1",
        ),
        (
            ADAPTOR + ACCOUNT.replace("settle_threshold = -100000", "settle_threshold = 5"),
            "account[0].settle_threshold: must be <= 0 (we settle when we owe the peer; "
            "min_balance <= settle_threshold <= settle_to <= 0), got 5",
        ),
        (ADAPTOR + ACCOUNT.replace("max_balance", "max_balanse"), "did you mean 'max_balance'"),
        # The default settle_threshold (0) with credit extended would settle every debt at once.
        (
            ADAPTOR + ACCOUNT.replace("settle_threshold = -100000\n", ""),
            "account[0].settle_threshold: required when min_balance is negative",
        ),
        (ADAPTOR + ACCOUNT.replace('asset_code = "USD"\n', ""), "account[0].asset_code: missing"),
        (
            ADAPTOR + ACCOUNT + PEER.replace('id = "bob"', 'id = "carol"'),
            "peer[0].id: no [[account]]",
        ),
        (ADAPTOR + ACCOUNT.replace('id = "bob"', 'id = "carol"') + PEER, "no [[account]]"),
        (ADAPTOR + ACCOUNT + "[engine]\ndb = 1\n", "engine.db: unknown key"),
    ],
)
def test_refusals_name_the_key(text: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load_config(text, BASE, source="alice.toml")
    assert words in str(refused.value)
    assert str(refused.value).startswith("alice.toml: ")


@given(
    threshold=st.integers(-3, 3),
    settle_to=st.integers(-3, 3),
    min_balance=st.integers(-3, 3),
    max_balance=st.integers(-3, 3),
)
@settings(max_examples=200, deadline=None)
def test_the_config_and_the_engine_accept_the_same_policies(
    threshold: int, settle_to: int, min_balance: int, max_balance: int
) -> None:
    """One rule (host.clearing_rules): a policy the file accepts is one the engine accepts."""
    policy = Policy(threshold, settle_to, min_balance, max_balance)
    account = "\n".join(
        line for line in ACCOUNT.splitlines() if not line.startswith(("settle", "min_", "max_"))
    )
    keys = "".join(
        f"{name} = {getattr(policy, name)}\n" for name in (f.name for f in fields(Policy))
    )
    try:
        (spec,) = load_config(f"{ADAPTOR}{account}\n{keys}", BASE).accounts
    except ConfigError:
        with pytest.raises(InvalidArgument):
            check_policy(policy)
    else:
        assert spec.policy == policy
        assert check_policy(policy) is policy


# -- one file, two processes (proposal 2) ---------------------------------------------------------


def test_each_process_of_a_split_host_gets_its_own_state_directory() -> None:
    whole = load_config('[host]\nstate_dir = "state"\n' + ADAPTOR + ACCOUNT + PEER, BASE)
    connector = for_role(whole, "connector")
    engine = for_role(whole, "engine")
    assert connector.state_dir == BASE / "state" / "connector"
    assert connector.admin.socket == BASE / "state" / "connector" / "admin.sock"
    assert connector.adaptors == () and connector.database is None
    assert connector.accounts == whole.accounts  # their limits bound the connector's packets
    assert engine.state_dir == BASE / "state" / "engine"
    assert engine.admin.socket == BASE / "state" / "engine" / "admin.sock"
    assert engine.database == BASE / "state" / "engine" / "engine.db"
    assert engine.adaptors == whole.adaptors
    # What the engine connects to by default: where the connector serves the API.
    assert connector_api_target(whole) == f"unix:{BASE / 'state' / 'connector' / 'connector.sock'}"


def test_the_connector_api_address() -> None:
    credentials = (
        'api_tls_cert = "tls/c.crt"\napi_tls_key = "tls/c.key"\napi_token_file = "tls/c.token"'
    )
    tcp = PEER.replace("port = 7768", f'port = 7768\napi = "127.0.0.1:7771"\n{credentials}')
    assert connector_api_target(load_config(ADAPTOR + ACCOUNT + tcp, BASE)) == "127.0.0.1:7771"
    for bad, words in [
        ('"127.0.0.1:7771"', "needs TLS and a bearer token"),
        ('"0.0.0.0:7771"', "needs TLS and a bearer token"),
        ('"unix:"', "needs a socket path"),
        ('"7771"', "must be unix:PATH or HOST:PORT"),
    ]:
        text = ADAPTOR + ACCOUNT + PEER.replace("port = 7768", f"port = 7768\napi = {bad}")
        with pytest.raises(ConfigError, match=r"connector\.api") as refused:
            load_config(text, BASE)
        assert words in str(refused.value)


def test_a_role_needs_its_tables() -> None:
    with pytest.raises(ConfigError, match=r"`ilp-host connector` needs a \[connector\]"):
        for_role(load_config(ADAPTOR + ACCOUNT, BASE), "connector")
    with pytest.raises(ConfigError, match=r"`ilp-host engine` needs at least one \[\[account\]\]"):
        for_role(load_config(ADAPTOR, BASE), "engine")
