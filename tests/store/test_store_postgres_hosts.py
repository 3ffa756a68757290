"""Two `ilp-host run` processes, each with its own state directory and adaptor, share one
PostgreSQL database through ``[engine] database = "postgresql://..."``: both show the same books,
the incoming settlement both adaptors report (the memory adaptor's stable "memory-in-1") is
credited once, and an operator's settlement key is honoured whichever instance is asked."""

from __future__ import annotations

import pytest

from tests.host.test_cli_engine import BOB, EXIT_OK, Host, balance, settlements, wait_for
from tests.postgres_server import PostgresServer


@pytest.mark.slow
def test_two_hosts_on_one_database_share_the_books(postgres: PostgresServer) -> None:
    database = f'\n[engine]\ndatabase = "{postgres.new_schema()}"\n'
    first, second = Host(BOB + database), Host(BOB + database)
    try:
        for host in (first, second):
            wait_for(lambda h=host: h.cli("health").returncode == EXIT_OK, "both hosts to serve")
        for host in (first, second):
            wait_for(lambda h=host: balance(h) == "-5000000", "bob's incoming 5.00, once")

        paid = first.json("settle", "bob", "--amount", "1230000", "--key", "operator-1")
        again = second.json("settle", "bob", "--amount", "1230000", "--key", "operator-1")
        assert again["settlement"]["id"] == paid["settlement"]["id"]
        assert balance(first) == balance(second) == "-3770000"  # debited once

        def completed() -> bool:
            rows = settlements(second)
            return [r["state"] for r in rows if r["id"] == paid["settlement"]["id"]] == [
                "SETTLEMENT_STATE_COMPLETED"
            ]

        wait_for(completed, "the settlement to be paid")
        incoming = [r for r in settlements(first) if r["direction"].endswith("INCOMING")]
        assert len(incoming) == 1  # both adaptors reported it, one credit
    finally:
        first.close()
        second.close()
