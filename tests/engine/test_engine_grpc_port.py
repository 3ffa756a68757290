"""The gRPC SettlementPort against a real LedgerAdaptor server on a unix socket: requests on the
wire, results, and the mapping of every status to transient or permanent."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from engine_fakes import socket_dir

from host.engine import PermanentSettlementError, SendResult, TransientSettlementError
from host.engine.grpc_port import GrpcSettlementPort, classify
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc

TRANSIENT = {
    "UNAVAILABLE",
    "DEADLINE_EXCEEDED",
    "RESOURCE_EXHAUSTED",
    "ABORTED",
    "INTERNAL",
    "UNKNOWN",
    "CANCELLED",
    "DATA_LOSS",
    "FAILED_PRECONDITION",
}
PERMANENT = {
    "INVALID_ARGUMENT",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "OUT_OF_RANGE",
    "PERMISSION_DENIED",
    "UNAUTHENTICATED",
    "UNIMPLEMENTED",
}


def test_every_failure_status_is_classified() -> None:
    failures = {code.name for code in grpc.StatusCode if code is not grpc.StatusCode.OK}
    assert failures == TRANSIENT | PERMANENT
    for name in TRANSIENT:
        error = classify(grpc.StatusCode[name], "why", "SendMoney")
        assert isinstance(error, TransientSettlementError), name
    for name in PERMANENT:
        error = classify(grpc.StatusCode[name], "why", "SendMoney")
        assert isinstance(error, PermanentSettlementError), name
    assert str(classify(grpc.StatusCode.NOT_FOUND, "no account bob", "SendMoney")) == (
        "SendMoney: NOT_FOUND: no account bob"
    )


class Adaptor(adaptor_pb2_grpc.LedgerAdaptorServicer):
    """Answers by the idempotency key / settlement id: "ok", "pending", "slow" or a status name."""

    def __init__(self) -> None:
        self.requests: list[object] = []

    async def SendMoney(
        self, request: adaptor_pb2.SendMoneyRequest, context: grpc.aio.ServicerContext
    ) -> adaptor_pb2.SendMoneyResponse:
        self.requests.append(request)
        key = request.idempotency_key
        if key == "slow":
            await asyncio.sleep(30)
        if key == "anonymous":  # completed, but without the ledger's id
            return adaptor_pb2.SendMoneyResponse(status=adaptor_pb2.SETTLEMENT_STATUS_COMPLETED)
        if key in {"ok", "pending"}:
            status = (
                adaptor_pb2.SETTLEMENT_STATUS_COMPLETED
                if key == "ok"
                else adaptor_pb2.SETTLEMENT_STATUS_PENDING
            )
            return adaptor_pb2.SendMoneyResponse(settlement_id=f"L-{key}", status=status)
        await context.abort(grpc.StatusCode[key], f"told to fail with {key}")
        raise AssertionError("unreachable")

    async def ReceiveMoney(
        self, request: adaptor_pb2.ReceiveMoneyRequest, context: grpc.aio.ServicerContext
    ) -> adaptor_pb2.ReceiveMoneyResponse:
        self.requests.append(request)
        if request.settlement_id != "ok":
            await context.abort(grpc.StatusCode[request.settlement_id], "told to fail")
        return adaptor_pb2.ReceiveMoneyResponse()


def test_the_port_speaks_ledger_adaptor_over_a_real_socket() -> None:
    async def main(directory: str) -> None:
        adaptor = Adaptor()
        server = grpc.aio.server()
        adaptor_pb2_grpc.add_LedgerAdaptorServicer_to_server(adaptor, server)
        address = f"unix:{directory}/adaptor.sock"
        server.add_insecure_port(address)
        await server.start()
        channel = grpc.aio.insecure_channel(address)
        try:
            port = GrpcSettlementPort(
                adaptor_pb2_grpc.LedgerAdaptorStub(channel), ledger_scale=18, timeout=0.5
            )
            big = 10**40
            assert await port.send_money("bob", big, "ok") == SendResult("L-ok", completed=True)
            sent = adaptor.requests[-1]
            assert isinstance(sent, adaptor_pb2.SendMoneyRequest)
            assert (sent.account_id, sent.amount.value, sent.amount.scale) == ("bob", str(big), 18)
            assert await port.send_money("bob", 1, "pending") == SendResult("L-pending", False)
            with pytest.raises(TransientSettlementError, match="UNAVAILABLE"):
                await port.send_money("bob", 1, "UNAVAILABLE")
            with pytest.raises(TransientSettlementError, match="FAILED_PRECONDITION"):
                await port.send_money("bob", 1, "FAILED_PRECONDITION")
            with pytest.raises(PermanentSettlementError, match="NOT_FOUND: told to fail"):
                await port.send_money("bob", 1, "NOT_FOUND")
            with pytest.raises(TransientSettlementError, match="DEADLINE_EXCEEDED"):
                await port.send_money("bob", 1, "slow")
            # Recorded as paid (it was), with a warning in the log.
            assert await port.send_money("bob", 1, "anonymous") == SendResult("", completed=True)
            await port.acknowledge_incoming("ok")
            with pytest.raises(PermanentSettlementError, match="ReceiveMoney: NOT_FOUND"):
                await port.acknowledge_incoming("NOT_FOUND")
            with pytest.raises(TransientSettlementError, match="ReceiveMoney: UNAVAILABLE"):
                await port.acknowledge_incoming("UNAVAILABLE")
        finally:
            await channel.close()
            await server.stop(grace=None)
        # Once the adaptor is gone, calls fail transiently (the outcome is unknown).
        channel = grpc.aio.insecure_channel(address)
        try:
            port = GrpcSettlementPort(
                adaptor_pb2_grpc.LedgerAdaptorStub(channel), ledger_scale=18, timeout=2.0
            )
            with pytest.raises(TransientSettlementError):
                await port.send_money("bob", 1, "ok")
        finally:
            await channel.close()

    with socket_dir() as directory:
        asyncio.run(main(directory))
