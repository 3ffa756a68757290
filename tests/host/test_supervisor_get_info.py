"""The start-up GetInfo: UNAVAILABLE is asked again until the start timeout, and the failure
then says what went wrong (not "is it a LedgerAdaptor?", which is for UNIMPLEMENTED)."""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

import grpc
import pytest

from host.supervisor import rpc
from host.supervisor.diagnose import StartFailure
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc


class NotYet(adaptor_pb2_grpc.LedgerAdaptorServicer):
    """An adaptor that never learns its asset: GetInfo is UNAVAILABLE, counted."""

    def __init__(self) -> None:
        self.asked = 0

    async def GetInfo(
        self, request: adaptor_pb2.GetInfoRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> adaptor_pb2.GetInfoResponse:
        self.asked += 1
        await context.abort(grpc.StatusCode.UNAVAILABLE, "the ledger has not answered yet")


async def _get_info(serve_ledger_adaptor: bool) -> tuple[str, int]:
    with tempfile.TemporaryDirectory(prefix="ilp") as directory:
        target = f"unix:{Path(directory) / 'adaptor.sock'}"
        server = grpc.aio.server()
        adaptor = NotYet()
        if serve_ledger_adaptor:
            adaptor_pb2_grpc.add_LedgerAdaptorServicer_to_server(adaptor, server)
        server.add_insecure_port(target)
        await server.start()
        channel = grpc.aio.insecure_channel(target)
        try:
            with pytest.raises(StartFailure) as failure:
                await rpc.get_info(channel, within=1.0, call_timeout=1.0)
            return str(failure.value), adaptor.asked
        finally:
            await channel.close()
            await server.stop(None)


def test_unavailable_past_the_start_timeout_names_the_timeout_not_the_service() -> None:
    message, asked = asyncio.run(_get_info(serve_ledger_adaptor=True))
    assert "GetInfo failed: UNAVAILABLE: the ledger has not answered yet" in message
    assert "the start timeout (is its ledger reachable?)" in message
    assert "LedgerAdaptor" not in message
    assert asked >= 2  # asked again while UNAVAILABLE


def test_unimplemented_asks_whether_it_is_a_ledger_adaptor() -> None:
    message, _ = asyncio.run(_get_info(serve_ledger_adaptor=False))
    assert "UNIMPLEMENTED" in message and "(is it a LedgerAdaptor?)" in message
