"""The adaptor's standard streams: logs on stderr as hclog JSON, stdout into ``GRPCStdio``.

stderr stays the process's real stderr (the host reads it directly and understands hclog JSON
lines: ``{"@level": "info", "@message": "...", "@timestamp": "...", ...fields}``). stdout belongs
to the handshake: once the adaptor serves, what Python code prints is captured and streamed to
the host on ``plugin.GRPCStdio/StreamStdio`` instead, so a stray print can never corrupt the
handshake line. Until the host reads the stream a bounded amount is kept; beyond it the oldest
output is dropped (and the drop is logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from typing import IO, Any, Final

import grpc
from google.protobuf import empty_pb2

from sdk.pb.plugin import grpc_stdio_pb2, grpc_stdio_pb2_grpc

#: What is kept of stdout while nobody reads the stream.
STDOUT_LIMIT: Final = 1 << 20
#: Largest StdioData message: well under gRPC's 4 MiB default.
CHUNK_BYTES: Final = 64 * 1024


# --- logs -------------------------------------------------------------------------------------


def _hclog_level(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warn"
    if levelno >= logging.INFO:
        return "info"
    if levelno >= logging.DEBUG:
        return "debug"
    return "trace"


class HclogFormatter(logging.Formatter):
    """Formats records as hclog JSON lines; ``extra={"fields": {...}}`` become top-level keys."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = datetime.fromtimestamp(record.created, UTC)
        entry: dict[str, Any] = {
            "@level": _hclog_level(record.levelno),
            "@message": record.getMessage(),
            "@module": record.name,
            "@timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        }
        if record.exc_info and record.exc_info[1] is not None:
            entry["error"] = f"{type(record.exc_info[1]).__name__}: {record.exc_info[1]}"
            entry["stacktrace"] = self.formatException(record.exc_info)
        for key, value in (getattr(record, "fields", None) or {}).items():
            # A field never overrides the "@" keys the host parses.
            entry.setdefault(key, value)
        return json.dumps(entry, default=str, ensure_ascii=False)


class Log:
    """A structured logger: ``log.info("paid", account="alice", amount="500")``.

    Keyword arguments become fields of the hclog JSON line. It wraps a standard
    ``logging.Logger`` of the same name, so the usual levels and handlers apply.
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)

    def _log(self, level: int, message: str, fields: dict[str, object], exc: bool = False) -> None:
        if self.logger.isEnabledFor(level):
            # stacklevel 3: the record names the caller of info()/error(), not this helper.
            self.logger.log(level, message, extra={"fields": fields}, exc_info=exc, stacklevel=3)

    def debug(self, message: str, **fields: object) -> None:
        """Log at debug level."""
        self._log(logging.DEBUG, message, fields)

    def info(self, message: str, **fields: object) -> None:
        """Log at info level."""
        self._log(logging.INFO, message, fields)

    def warn(self, message: str, **fields: object) -> None:
        """Log at warn level."""
        self._log(logging.WARNING, message, fields)

    def error(self, message: str, **fields: object) -> None:
        """Log at error level."""
        self._log(logging.ERROR, message, fields)

    def exception(self, message: str, **fields: object) -> None:
        """Log at error level with the exception being handled (its message and stack)."""
        self._log(logging.ERROR, message, fields, exc=True)


def install_hclog(stream: IO[str] | None = None, level: int = logging.INFO) -> logging.Handler:
    """Send every log record of this process to ``stream`` (default: stderr) as hclog JSON.

    Called by ``sdk.serve``: the process is then an adaptor whose stderr the host parses.
    Returns the handler so that a caller can remove it.
    """
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(HclogFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


_log = Log("sdk")


# --- stdout -----------------------------------------------------------------------------------


class StdoutSink(io.BufferedIOBase):
    """A bounded byte buffer that ``sys.stdout`` writes into and stdio streams read from.

    Writes may come from any thread; readers are asyncio tasks woken thread-safely.
    """

    def __init__(self, limit: int = STDOUT_LIMIT) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._pending = bytearray()
        self._limit = limit
        self._waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []
        self._finished = False
        self.dropped = 0

    @property
    def name(self) -> str:
        """What ``sys.stdout.name`` says while captured."""
        return "<stdout captured for GRPCStdio>"

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        chunk = bytes(data)
        with self._lock:
            self._pending += chunk
            excess = len(self._pending) - self._limit
            if excess > 0:
                del self._pending[:excess]
                self.dropped += excess
            waiters = list(self._waiters)
        self._wake(waiters)
        return len(chunk)

    def finish(self) -> None:
        """End every stream once what is pending has been sent (the adaptor is stopping)."""
        with self._lock:
            self._finished = True
            waiters = list(self._waiters)
        self._wake(waiters)

    @staticmethod
    def _wake(waiters: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]]) -> None:
        for loop, event in waiters:
            # A closed loop means that reader is gone; nothing to wake.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(event.set)

    def _take(self) -> tuple[bytes, int]:
        with self._lock:
            data = bytes(self._pending[:CHUNK_BYTES])
            del self._pending[:CHUNK_BYTES]
            dropped, self.dropped = self.dropped, 0
            return data, dropped

    async def chunks(self) -> AsyncIterator[bytes]:
        """What is written, chunk by chunk, until ``finish()``; each byte goes to one reader."""
        waiter = (asyncio.get_running_loop(), asyncio.Event())
        with self._lock:
            self._waiters.append(waiter)
        try:
            while True:
                # Clear before taking: a write after the take sets the event again.
                waiter[1].clear()
                data, dropped = self._take()
                if dropped:
                    _log.warn("stdout overflowed before the host read it", dropped_bytes=dropped)
                if data:
                    yield data
                    continue
                if self._finished:
                    return
                await waiter[1].wait()
        finally:
            with self._lock:
                self._waiters.remove(waiter)


@contextlib.contextmanager
def capture_stdout(sink: StdoutSink) -> Iterator[IO[str]]:
    """Point ``sys.stdout`` at ``sink`` for the duration; yields the real stdout."""
    real = sys.stdout
    wrapper = io.TextIOWrapper(
        sink, encoding="utf-8", errors="backslashreplace", write_through=True
    )
    sys.stdout = wrapper
    try:
        yield real
    finally:
        sys.stdout = real
        wrapper.flush()


class StdioServicer(grpc_stdio_pb2_grpc.GRPCStdioServicer):
    """``plugin.GRPCStdio``: streams captured stdout as STDOUT chunks."""

    def __init__(self, sink: StdoutSink) -> None:
        self._sink = sink

    async def StreamStdio(
        self, request: empty_pb2.Empty, context: grpc.aio.ServicerContext[Any, Any]
    ) -> AsyncIterator[grpc_stdio_pb2.StdioData]:
        async for chunk in self._sink.chunks():
            yield grpc_stdio_pb2.StdioData(channel=grpc_stdio_pb2.StdioData.STDOUT, data=chunk)
