"""The two server streams the suite reads: WatchEvents and plugin.GRPCStdio.

``EventStream`` is one WatchEvents call read by a task into a queue, so that a wait can time
out without cancelling the call (a re-delivery is only seen on a stream that stays open).
``StdioDrain`` reads StreamStdio from the handshake on, as the host must: a go-plugin adaptor
stalls when nobody reads it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf import empty_pb2

from host.conformance import launch
from host.conformance.report import CheckFailed
from host.supervisor.logs import LineBuffer, LineParser, emit
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2
from sdk.pb.plugin import grpc_stdio_pb2, grpc_stdio_pb2_grpc

if TYPE_CHECKING:
    from sdk.pb.ilphost.adaptor.v1.adaptor_pb2_grpc import LedgerAdaptorAsyncStub


@dataclass(frozen=True)
class _StreamEnd:
    reason: str


class EventStream:
    """One WatchEvents call. A task reads it into a queue, so that a wait can time out without
    cancelling the call; connection changes are dropped, incoming settlements kept in order."""

    def __init__(self, stub: LedgerAdaptorAsyncStub) -> None:
        self._call = stub.WatchEvents(adaptor_pb2.WatchEventsRequest())
        self._queue: asyncio.Queue[adaptor_pb2.IncomingSettlement | _StreamEnd] = asyncio.Queue()
        self._reader = asyncio.create_task(self._read(), name="conformance-events")

    async def _read(self) -> None:
        reason = "the adaptor ended the stream"
        try:
            async for event in self._call:
                if event.WhichOneof("event") == "incoming_settlement":
                    self._queue.put_nowait(event.incoming_settlement)
        except grpc.aio.AioRpcError as exc:
            reason = f"the stream failed: {exc.code().name}: {exc.details()}"
        self._queue.put_nowait(_StreamEnd(reason))

    async def next_incoming(self, within: float) -> adaptor_pb2.IncomingSettlement | None:
        """The next incoming settlement; None if none came within ``within`` seconds.
        CheckFailed if the stream ended."""
        try:
            async with asyncio.timeout(within):
                item = await self._queue.get()
        except TimeoutError:
            return None
        if isinstance(item, _StreamEnd):
            self._queue.put_nowait(item)  # every later read sees the end too
            raise CheckFailed(f"WatchEvents ended early: {item.reason}")
        return item

    async def first(
        self, wanted: Callable[[adaptor_pb2.IncomingSettlement], bool], within: float
    ) -> tuple[adaptor_pb2.IncomingSettlement | None, list[adaptor_pb2.IncomingSettlement]]:
        """Read until a settlement ``wanted`` accepts, within ``within`` seconds: (it or None,
        the settlements that came before it)."""
        before: list[adaptor_pb2.IncomingSettlement] = []
        deadline = time.monotonic() + within
        while (left := deadline - time.monotonic()) > 0:
            settlement = await self.next_incoming(left)
            if settlement is None:
                break
            if wanted(settlement):
                return settlement, before
            before.append(settlement)
        return None, before

    async def collect(
        self, first_within: float, quiet: float
    ) -> list[adaptor_pb2.IncomingSettlement]:
        """Every settlement that comes: the first within ``first_within`` seconds, each next
        within ``quiet`` seconds of the one before."""
        collected: list[adaptor_pb2.IncomingSettlement] = []
        wait = first_within
        while (settlement := await self.next_incoming(wait)) is not None:
            collected.append(settlement)
            wait = quiet
        return collected

    async def close(self) -> None:
        """Cancel the call and stop reading."""
        self._call.cancel()
        self._reader.cancel()
        await asyncio.gather(self._reader, return_exceptions=True)


class StdioDrain:
    """Reads ``plugin.GRPCStdio/StreamStdio`` from the handshake on, each line logged as the
    host logs it; remembers how it ended."""

    def __init__(self, channel: grpc.aio.Channel) -> None:
        #: How the stream ended (None while it runs) and the details of an error.
        self.code: grpc.StatusCode | None = None
        self.details = ""
        #: Set once the stream opened or ended.
        self.settled = asyncio.Event()
        self._call = grpc_stdio_pb2_grpc.GRPCStdioStub(channel).StreamStdio(empty_pb2.Empty())
        self._task = asyncio.create_task(self._drain(), name="conformance-stdio")

    async def _drain(self) -> None:
        streams = {
            grpc_stdio_pb2.StdioData.STDOUT: ("stdout", LineBuffer(), LineParser()),
            grpc_stdio_pb2.StdioData.STDERR: ("stderr", LineBuffer(), LineParser()),
        }
        try:
            # Returns once the headers came, which may be with the first output, or the end.
            await self._call.initial_metadata()
            if not self._call.done():
                self.settled.set()
            async for chunk in self._call:
                self.settled.set()
                if chunk.channel in streams:
                    name, buffer, parser = streams[chunk.channel]
                    for line in buffer.feed(chunk.data):
                        if line.strip():
                            emit(launch.LOGGER, launch.ADAPTOR_NAME, name, parser.parse(line))
            self.code = grpc.StatusCode.OK
        except grpc.aio.AioRpcError as exc:
            self.code, self.details = exc.code(), exc.details() or ""
        finally:
            self.settled.set()

    async def close(self) -> None:
        """Stop reading."""
        self._call.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
