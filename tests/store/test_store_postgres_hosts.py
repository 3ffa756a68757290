"""Two `ilp-host run` processes, each with its own state directory and adaptor, share one
PostgreSQL database through ``[engine] database = "postgresql://..."``: both show the same books,
the incoming settlement both adaptors report (the memory adaptor's stable "memory-in-1") is
credited once, and an operator's settlement key is honoured whichever instance is asked.

The hosts are asked through their admin sockets (the API the CLI uses; tests/host covers the CLI).
"""

from __future__ import annotations

import grpc
import pytest

from host.pb.ilphost.admin.v1 import admin_pb2, admin_pb2_grpc
from sdk.pb.ilphost.types.v1 import types_pb2
from tests.host.test_cli_engine import BOB, Host
from tests.polling import wait_until
from tests.postgres_server import PostgresServer

COMPLETED = admin_pb2.SETTLEMENT_STATE_COMPLETED
INCOMING = admin_pb2.SETTLEMENT_DIRECTION_INCOMING


def admin_channel(host: Host) -> grpc.Channel:
    """A channel to the host's admin socket (it connects once the host listens)."""
    return grpc.insecure_channel(f"unix:{host.dir / 'state' / 'admin.sock'}")


def serving(admin: admin_pb2_grpc.HostAdminStub) -> bool:
    """Whether the host's adaptor serves: it settles only then (another instance's adaptor may
    have credited the shared account before)."""
    try:
        reply = admin.ListAdaptors(admin_pb2.ListAdaptorsRequest(), timeout=10)
    except grpc.RpcError:
        return False
    return [a.state for a in reply.adaptors] == [admin_pb2.PROCESS_STATE_SERVING]


def balance(admin: admin_pb2_grpc.HostAdminStub) -> str:
    """Bob's balance, or "" while the engine does not answer yet."""
    try:
        reply = admin.GetAccount(admin_pb2.GetAccountRequest(account_id="bob"), timeout=10)
    except grpc.RpcError:
        return ""
    return reply.account.clearing_balance.value


@pytest.mark.slow
def test_two_hosts_on_one_database_share_the_books(postgres: PostgresServer) -> None:
    database = f'\n[engine]\ndatabase = "{postgres.new_schema()}"\n'
    first, second = Host(BOB + database), Host(BOB + database)
    channels = [admin_channel(first), admin_channel(second)]
    try:
        one, two = (admin_pb2_grpc.HostAdminStub(channel) for channel in channels)
        for admin in (one, two):
            wait_until(lambda a=admin: serving(a), "both hosts' adaptors to serve")
            wait_until(lambda a=admin: balance(a) == "-5000000", "bob's incoming 5.00, once")

        request = admin_pb2.SettleRequest(
            account_id="bob",
            amount=types_pb2.Amount(value="1230000", scale=6),
            idempotency_key="operator-1",
        )
        paid = one.Settle(request, timeout=30).settlement
        assert two.Settle(request, timeout=30).settlement.id == paid.id
        assert balance(one) == balance(two) == "-3770000"  # debited once

        def settlements() -> list[admin_pb2.Settlement]:
            reply = two.ListSettlements(admin_pb2.ListSettlementsRequest(), timeout=10)
            return list(reply.settlements)

        wait_until(
            lambda: [s.state for s in settlements() if s.id == paid.id] == [COMPLETED],
            "the settlement to be paid",
        )
        # Both adaptors reported the incoming settlement; one credit.
        assert len([s for s in settlements() if s.direction == INCOMING]) == 1
    finally:
        for channel in channels:
            channel.close()
        first.close()
        second.close()
