"""The latency floor of bench_runtime.py: a bare grpc.aio server answering GetInfo, nothing else.

No SDK, no handshake, no health, reflection, stdio or controller services, no background tasks:
only the ``LedgerAdaptor`` service with the GetInfo answer of adaptors/memory-python (built per
call, as the adaptor builds it), on a unix socket. What the host path costs beyond this server
and a bare client is the price of the runtime. (Importing the generated stubs imports the
``sdk`` package too, so the process holds the SDK's modules even though it uses none of them.)

Usage: ``python bench/echo_server.py SOCKET_DIR``. It prints ``unix:<path>`` on stdout once it
serves, and serves until its stdin reaches end-of-file (the benchmark closes it, or dies).
"""

from __future__ import annotations

import asyncio
import os
import sys

import grpc

from sdk.contract import CONTRACT_VERSIONS
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc

SOCKET_NAME = "echo.sock"


class EchoAdaptor(adaptor_pb2_grpc.LedgerAdaptorServicer):
    """GetInfo with the same fields as memory-python's answer; every other RPC UNIMPLEMENTED."""

    async def GetInfo(
        self,
        request: adaptor_pb2.GetInfoRequest,
        context: grpc.aio.ServicerContext[adaptor_pb2.GetInfoRequest, adaptor_pb2.GetInfoResponse],
    ) -> adaptor_pb2.GetInfoResponse:
        return adaptor_pb2.GetInfoResponse(
            name="memory-python",
            version="0.1.0",
            ledger="memory",
            asset_code="USD",
            asset_scale=2,
            capabilities=("send_money", "receive_money", "balance", "accounts"),
            contract_versions=CONTRACT_VERSIONS,
        )


class _UntilEof(asyncio.Protocol):
    def __init__(self, done: asyncio.Event) -> None:
        self._done = done

    def connection_lost(self, exc: Exception | None) -> None:
        self._done.set()


async def serve(socket_dir: str) -> None:
    """Serve on ``socket_dir``/echo.sock until stdin closes."""
    address = "unix:" + os.path.join(socket_dir, SOCKET_NAME)
    server = grpc.aio.server()
    # The other RPCs keep the generated base class's answer, UNIMPLEMENTED.
    echo = EchoAdaptor()  # type: ignore[abstract]
    adaptor_pb2_grpc.add_LedgerAdaptorServicer_to_server(echo, server)
    server.add_insecure_port(address)
    await server.start()
    eof = asyncio.Event()
    # Read stdin on the event loop itself: no extra thread in the process being measured.
    transport, _ = await asyncio.get_running_loop().connect_read_pipe(
        lambda: _UntilEof(eof), sys.stdin
    )
    print(address, flush=True)
    try:
        await eof.wait()
    finally:
        transport.close()
        await server.stop(None)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: echo_server.py SOCKET_DIR")
    asyncio.run(serve(sys.argv[1]))
