"""sdk.stdio: hclog JSON lines, and stdout captured into a bounded buffer for GRPCStdio."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
import threading

from sdk.stdio import CHUNK_BYTES, Log, StdoutSink, capture_stdout, install_hclog


def logged(action: object) -> list[dict[str, object]]:
    stream = io.StringIO()
    handler = install_hclog(stream, level=logging.DEBUG)
    root = logging.getLogger()
    previous = root.level
    try:
        assert callable(action)
        action()
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_log_lines_are_hclog_json_with_fields() -> None:
    log = Log("adaptor.test")

    def action() -> None:
        log.debug("dbg")
        log.info("paid", account="alice", amount="500", **{"@level": "spoof"})
        log.warn("slow")
        log.error("failed", attempt=3)
        try:
            raise RuntimeError("ledger down")
        except RuntimeError:
            log.exception("gave up")

    entries = logged(action)
    assert [(e["@level"], e["@message"]) for e in entries] == [
        ("debug", "dbg"),
        ("info", "paid"),
        ("warn", "slow"),
        ("error", "failed"),
        ("error", "gave up"),
    ]
    paid = entries[1]
    assert paid["account"] == "alice" and paid["amount"] == "500"
    assert paid["@module"] == "adaptor.test"
    stamp = str(paid["@timestamp"])
    assert (
        stamp.endswith("Z")
        and stamp[10] == "T"
        and len(stamp) == len("2024-01-01T00:00:00.000000Z")
    )
    assert entries[3]["attempt"] == 3
    assert entries[4]["error"] == "RuntimeError: ledger down"
    assert "Traceback" in str(entries[4]["stacktrace"])


def test_sink_keeps_a_bounded_tail_and_reports_the_drop() -> None:
    sink = StdoutSink(limit=10)
    sink.write(b"0123456789abc")
    assert sink.dropped == 3

    async def main() -> list[bytes]:
        sink.finish()
        return [chunk async for chunk in sink.chunks()]

    chunks: list[bytes] = []
    entries = logged(lambda: chunks.extend(asyncio.run(main())))
    assert chunks == [b"3456789abc"]
    [warning] = [e for e in entries if e["@module"] == "sdk"]
    assert warning["@message"] == "stdout overflowed before the host read it"
    assert warning["dropped_bytes"] == 3
    assert sink.dropped == 0  # reported once


def test_sink_streams_in_chunks_and_wakes_readers_from_other_threads() -> None:
    sink = StdoutSink()
    big = b"x" * (CHUNK_BYTES + 5)

    async def main() -> list[bytes]:
        received: list[bytes] = []
        reader = sink.chunks()
        sink.write(big)
        received.append(await anext(reader))
        received.append(await anext(reader))
        # The reader now waits; a write from another thread must wake it.
        pending = asyncio.ensure_future(anext(reader))
        await asyncio.sleep(0)
        writer = threading.Thread(target=sink.write, args=(b"from a thread",))
        writer.start()
        received.append(await pending)
        writer.join()
        sink.finish()
        received.extend([chunk async for chunk in reader])
        return received

    received = asyncio.run(main())
    assert [len(c) for c in received[:2]] == [CHUNK_BYTES, 5]
    assert received[2:] == [b"from a thread"]


def test_capture_stdout_redirects_print_and_restores() -> None:
    sink = StdoutSink()
    before = sys.stdout
    with capture_stdout(sink) as real:
        assert real is before
        print("héllo")
        assert sys.stdout.encoding == "utf-8"
    assert sys.stdout is before

    async def main() -> bytes:
        sink.finish()
        return b"".join([chunk async for chunk in sink.chunks()])

    assert asyncio.run(main()) == "héllo\n".encode()
