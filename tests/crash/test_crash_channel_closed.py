"""The adaptor's channel closes while SendMoney is in flight (what the supervisor does when the
adaptor process dies): the outbox must record a transient failure and retry soon.

Found by test_crash_outgoing.py's kill -9 test: when the supervisor closes the channel of a
killed adaptor before gRPC reported the broken connection, the pending call raises
``asyncio.CancelledError`` (grpc.aio's way of ending calls on a closed channel), which the
outbox does not treat as an outcome. The attempt then leaves no trace and the row stays
leased: the settlement waits for the lease to expire (30 s by default) before anyone retries.

Here the race is removed: a real Engine on SQLite, a GrpcSettlementPort over a real unix
socket to an in-process LedgerAdaptor whose SendMoney never answers, and the channel closed
once the call is in.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from pathlib import Path

import grpc

from host.engine import Engine, Policy, SettlementState
from host.engine.grpc_port import GrpcSettlementPort
from host.store.sqlite import SqliteStore
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc


class SendMoneyHangs(adaptor_pb2_grpc.LedgerAdaptorServicer):
    """Receives SendMoney and never answers."""

    def __init__(self) -> None:
        self.received = asyncio.Event()

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: object
    ) -> adaptor_pb2.SendMoneyResponse:
        self.received.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def attempt_with_channel_closed(database: Path, socket_dir: Path) -> tuple[int, bool, str]:
    """(attempts, still leased, last error) of the settlement after the attempt ended."""
    servicer = SendMoneyHangs()
    server = grpc.aio.server()
    adaptor_pb2_grpc.add_LedgerAdaptorServicer_to_server(servicer, server)
    server.add_insecure_port(f"unix:{socket_dir / 'adaptor.sock'}")
    await server.start()
    store = await SqliteStore.open(database)
    channel = grpc.aio.insecure_channel(f"unix:{socket_dir / 'adaptor.sock'}")
    try:
        port = GrpcSettlementPort(adaptor_pb2_grpc.LedgerAdaptorStub(channel), 2)
        engine = Engine(store, {"ledger": port})
        await engine.create_account(
            "bob",
            adaptor="ledger",
            asset_code="USD",
            asset_scale=2,
            ledger_scale=2,
            policy=Policy(-1000, 0, -1000, 1000),
        )
        await engine.apply_balance_change("bob", -500)
        row = await engine.settle("bob", 500)
        attempt = asyncio.create_task(engine.outbox.run_once())
        await asyncio.wait_for(servicer.received.wait(), 30)
        await channel.close()
        await asyncio.wait({attempt}, timeout=30)
        assert attempt.done(), "the attempt did not end when its channel closed"
        after = await engine.get_settlement(row.id)
        assert after.state is SettlementState.PENDING
        return after.attempts, after.lease_until is not None, after.last_error
    finally:
        await channel.close()
        await store.close()
        await server.stop(0)


def test_send_money_cut_by_a_closed_channel_is_a_transient_failure(tmp_path: Path) -> None:
    socket_dir = Path(tempfile.mkdtemp(prefix="ilpcc"))  # short: unix socket path
    try:
        attempts, leased, error = asyncio.run(
            attempt_with_channel_closed(tmp_path / "engine.db", socket_dir)
        )
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)
    assert (attempts, leased) == (1, False), f"attempts {attempts}, leased {leased}"
    assert error
