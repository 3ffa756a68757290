"""One gRPC hop between two Python processes on a unix socket, alone: what it costs, and why.

A settlement crosses six one-way process hops (SendMoney, the ledger's Transfer, the ledger's
watch stream, WatchEvents, ReceiveMoney and its reply), each into a process that had nothing
to do for a while. This measures one such hop in isolation, after an idle gap and back to back:

- **unary**: the client sleeps ``--gap`` ms, stamps the request and calls; the server stamps
  its arrival in the handler (the one-way figure: arrival - sent) and its reply, and the
  client stamps the reply's arrival (the reply's one-way figure).
- **stream**: a server-streaming call, as WatchEvents and the ledger's WatchTransfers: the
  server sleeps ``--gap`` ms, stamps a message and sends it; the client stamps its arrival.
- **raw**: the unary exchange over a bare asyncio unix socket, no gRPC: what it costs this
  machine to wake a process that sleeps in epoll.

Each variant runs a server process and a client process (``sys.executable`` running this file)
with its own environment and kinds: grpc.aio or the blocking stack (its thread pool), the
knobs grpcio reads (``GRPC_POLL_STRATEGY``, ``GRPC_EXPERIMENTS``), channel and server options,
and three experiments on the receiver: its event loop kept ticking every 200 µs (is the
loop asleep?), a 100 µs scheduler slice for both processes (Linux ≥ 6.12: do wake-ups wait
for another task's slice?), and another call on the same channel 1 ms before the measured
one (does a process that just ran its gRPC path take the next call faster?). Clocks:
``time.monotonic_ns()``, one clock for every process of the machine. Variants run interleaved
in rounds, in a rotating order, so that all see the same load; the figures are medians of the
per-round medians. ``--curve`` prints the one-way cost against the length of the idle gap.

Usage: ``.venv/bin/python bench/bench_hops.py [--quick] [--curve] [--gap 20]``
Prints Markdown; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

SERVICE = "bench.Hop"
_STAMP = struct.Struct("<q")
_PAIR = struct.Struct("<qq")
_STREAM_REQUEST = struct.Struct("<ii")  # messages, gap in microseconds
#: The bench's own knobs, read by its server and client processes.
LOOP_TICK = "BENCH_HOPS_LOOP_TICK_US"
SLICE = "BENCH_HOPS_SLICE_US"
CALL_BEFORE = "BENCH_HOPS_CALL_BEFORE_US"
_SYS_SCHED_SETATTR = 314  # x86-64


def _now() -> int:
    return time.monotonic_ns()


def _identity(data: bytes) -> bytes:
    return data


def _request_slice() -> None:
    """``SLICE``: ask the scheduler for this slice (sched_setattr, Linux ≥ 6.12 with EEVDF)."""
    slice_us = os.environ.get(SLICE)
    if not slice_us:
        return
    if not sys.platform.startswith("linux") or os.uname().machine != "x86_64":
        raise OSError(f"{SLICE} needs Linux on x86-64 (the sched_setattr number used here)")
    nice = os.getpriority(os.PRIO_PROCESS, 0)
    # struct sched_attr: size, policy (SCHED_OTHER), flags, nice, priority, runtime (the slice).
    attr = struct.pack("<IIQiIQQQ", 48, 0, 0, nice, 0, int(slice_us) * 1000, 0, 0)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.syscall(_SYS_SCHED_SETATTR, 0, ctypes.create_string_buffer(attr), 0) != 0:
        raise OSError(ctypes.get_errno(), "sched_setattr")


async def _tick(period: float) -> None:
    while True:  # noqa: ASYNC110 - the point: a loop that never sleeps long
        await asyncio.sleep(period)


def _keep_loop_ticking() -> None:
    """``LOOP_TICK``: wake this process's event loop every so many µs."""
    tick = os.environ.get(LOOP_TICK)
    if tick:
        loop = asyncio.get_running_loop()
        task = loop.create_task(_tick(float(tick) / 1e6))
        setattr(loop, "_bench_tick", task)  # keep a reference  # noqa: B010


# --- servers -----------------------------------------------------------------------------------


async def _aio_unary(request: bytes, context: Any) -> bytes:
    arrived = _now()
    return _PAIR.pack(arrived, _now())


async def _aio_watch(request: bytes, context: Any) -> AsyncIterator[bytes]:
    count, gap_us = _STREAM_REQUEST.unpack(request)
    for _ in range(count):
        await asyncio.sleep(gap_us / 1e6)
        yield _STAMP.pack(_now())


def _sync_unary(request: bytes, context: Any) -> bytes:
    arrived = _now()
    return _PAIR.pack(arrived, _now())


def _sync_watch(request: bytes, context: Any) -> Iterator[bytes]:
    count, gap_us = _STREAM_REQUEST.unpack(request)
    for _ in range(count):
        time.sleep(gap_us / 1e6)
        yield _STAMP.pack(_now())


def _handlers(kind: str) -> Any:
    import grpc

    unary, watch = (_aio_unary, _aio_watch) if kind == "aio" else (_sync_unary, _sync_watch)
    return grpc.method_handlers_generic_handler(
        SERVICE,
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary, _identity, _identity),
            "Watch": grpc.unary_stream_rpc_method_handler(watch, _identity, _identity),
        },
    )


def serve(kind: str, socket: str, options: list[tuple[str, Any]]) -> None:
    """Serve until stdin closes; print one line once listening."""
    import grpc

    if kind == "aio":

        async def main() -> None:
            server = grpc.aio.server(options=options)
            server.add_generic_rpc_handlers((_handlers("aio"),))
            server.add_insecure_port(f"unix:{socket}")
            await server.start()
            _keep_loop_ticking()
            print("ready", flush=True)
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
            await server.stop(None)

        asyncio.run(main())
        return
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=10), options=options)
    server.add_generic_rpc_handlers((_handlers("sync"),))
    server.add_insecure_port(f"unix:{socket}")
    server.start()
    print("ready", flush=True)
    sys.stdin.read()
    server.stop(None)


def serve_raw(socket: str) -> None:
    """The raw exchange's server: 8 bytes in (the sent stamp), 16 out (arrival, reply)."""

    async def session(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                await reader.readexactly(_STAMP.size)
            except asyncio.IncompleteReadError:
                return
            arrived = _now()
            writer.write(_PAIR.pack(arrived, _now()))

    async def main() -> None:
        server = await asyncio.start_unix_server(session, socket)
        _keep_loop_ticking()
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        server.close()

    asyncio.run(main())


# --- clients: each prints a JSON list of [one_way_us, reply_us] -------------------------------

Samples = list[tuple[float, float]]


def _sample(sent: int, pair: bytes, received: int) -> tuple[float, float]:
    arrived, replied = _PAIR.unpack(pair)
    return (arrived - sent) / 1e3, (received - replied) / 1e3


async def _aio_client(mode: str, target: str, calls: int, gap: float, options: Any) -> Samples:
    import grpc

    samples: Samples = []
    before = float(os.environ.get(CALL_BEFORE, "0")) / 1e6
    _keep_loop_ticking()
    async with grpc.aio.insecure_channel(target, options=options) as channel:
        await channel.channel_ready()
        if mode == "stream":
            stream = channel.unary_stream(f"/{SERVICE}/Watch", _identity, _identity)
            async for message in stream(_STREAM_REQUEST.pack(calls, int(gap * 1000)), timeout=600):
                received = _now()
                samples.append(((received - _STAMP.unpack(message)[0]) / 1e3, 0.0))
            return samples
        call = channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)
        await call(_STAMP.pack(_now()), timeout=30)  # the connection is up and used
        for _ in range(calls):
            await asyncio.sleep(gap / 1000)
            earlier = None
            if before:
                earlier = asyncio.ensure_future(call(_STAMP.pack(_now()), timeout=30))
                await asyncio.sleep(before)
            sent = _now()
            reply = await call(_STAMP.pack(sent), timeout=30)
            samples.append(_sample(sent, reply, _now()))
            if earlier is not None:
                await earlier
    return samples


def _sync_client(mode: str, target: str, calls: int, gap: float, options: Any) -> Samples:
    import grpc

    samples: Samples = []
    with grpc.insecure_channel(target, options=options) as channel:
        grpc.channel_ready_future(channel).result(timeout=30)
        if mode == "stream":
            stream = channel.unary_stream(f"/{SERVICE}/Watch", _identity, _identity)
            for message in stream(_STREAM_REQUEST.pack(calls, int(gap * 1000)), timeout=600):
                received = _now()
                samples.append(((received - _STAMP.unpack(message)[0]) / 1e3, 0.0))
            return samples
        call = channel.unary_unary(f"/{SERVICE}/Unary", _identity, _identity)
        call(_STAMP.pack(_now()), timeout=30)
        for _ in range(calls):
            time.sleep(gap / 1000)
            sent = _now()
            reply = call(_STAMP.pack(sent), timeout=30)
            samples.append(_sample(sent, reply, _now()))
    return samples


async def _raw_client(socket: str, calls: int, gap: float) -> Samples:
    samples: Samples = []
    _keep_loop_ticking()
    reader, writer = await asyncio.open_unix_connection(socket)
    for _ in range(calls + 1):
        await asyncio.sleep(gap / 1000)
        sent = _now()
        writer.write(_STAMP.pack(sent))
        reply = await reader.readexactly(_PAIR.size)
        samples.append(_sample(sent, reply, _now()))
    writer.close()
    return samples[1:]


# --- the driver --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    """One way of making the hop: which server and client, which call, which environment."""

    name: str
    mode: str  # unary, stream or raw
    server: str = "aio"  # aio or sync
    client: str = "aio"
    env: dict[str, str] = field(default_factory=dict)
    options: tuple[tuple[str, Any], ...] = ()
    #: Measured after the idle gap only: a stream sent back to back measures its own queue;
    #: "another call before" is itself a gap.
    idle_only: bool = False


VARIANTS = (
    Variant("raw asyncio unix socket, no gRPC", "raw"),
    Variant("unary, aio client -> aio server (host -> adaptor)", "unary"),
    Variant("unary, blocking client -> aio server", "unary", client="sync"),
    Variant("unary, aio client -> blocking server", "unary", server="sync"),
    Variant("unary, blocking client -> blocking server", "unary", server="sync", client="sync"),
    Variant("unary, aio, GRPC_POLL_STRATEGY=poll", "unary", env={"GRPC_POLL_STRATEGY": "poll"}),
    Variant(
        "unary, aio, EventEngine client and listener off",
        "unary",
        env={"GRPC_EXPERIMENTS": "-event_engine_client,-event_engine_listener"},
    ),
    Variant("unary, aio, grpc.http2.bdp_probe=0", "unary", options=(("grpc.http2.bdp_probe", 0),)),
    Variant("unary, aio, both loops ticking every 200 µs", "unary", env={LOOP_TICK: "200"}),
    Variant("unary, aio, 100 µs scheduler slice", "unary", env={SLICE: "100"}),
    Variant(
        "unary, aio, another call 1 ms before", "unary", env={CALL_BEFORE: "1000"}, idle_only=True
    ),
    Variant("stream, aio server -> aio client (WatchEvents)", "stream", idle_only=True),
    Variant("stream, blocking server -> aio client", "stream", server="sync", idle_only=True),
    Variant("stream, aio server -> blocking client", "stream", client="sync", idle_only=True),
)


def _spawn(args: list[str], env: dict[str, str], **kwargs: Any) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, *args], env={**os.environ, **env}, text=True, **kwargs
    )


def run_once(variant: Variant, calls: int, gap: float) -> Samples:
    """One server and one client process for ``variant``: the client's samples (µs)."""
    directory = tempfile.mkdtemp(prefix="hops")
    os.chmod(directory, 0o700)
    socket = os.path.join(directory, "s.sock")
    common = ["--socket", socket, "--options", json.dumps(variant.options)]
    role = ["--role", "rawserver"] if variant.mode == "raw" else ["--role", "server"]
    server = _spawn(
        [*role, "--kind", variant.server, *common],
        variant.env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert server.stdout is not None
        if server.stdout.readline().strip() != "ready":
            raise RuntimeError(f"{variant.name}: the server did not start")
        client = _spawn(
            [
                *("--role", "client", "--kind", variant.client, "--mode", variant.mode),
                *common,
                *("--calls", str(calls), "--gap", str(gap)),
            ],
            variant.env,
            stdout=subprocess.PIPE,
        )
        output, _ = client.communicate(timeout=600)
        if client.returncode != 0:
            raise RuntimeError(f"{variant.name}: the client failed ({client.returncode})")
        return [(one_way, reply) for one_way, reply in json.loads(output)]
    finally:
        assert server.stdin is not None
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        shutil.rmtree(directory, ignore_errors=True)


def _medians(samples: Samples) -> tuple[float, float]:
    return statistics.median(s[0] for s in samples), statistics.median(s[1] for s in samples)


def measure(
    variants: list[Variant], gaps: list[float], calls: int, rounds: int
) -> dict[tuple[str, float], tuple[float, float]]:
    """Per (variant, gap): the medians over rounds of each round's median one-way and reply."""
    per: dict[tuple[str, float], list[tuple[float, float]]] = {}
    for number in range(rounds):
        shift = number % len(variants)
        for variant in variants[shift:] + variants[:shift]:
            for gap in gaps:
                if variant.idle_only and gap == 0:
                    continue
                per.setdefault((variant.name, gap), []).append(
                    _medians(run_once(variant, calls, gap))
                )
    return {
        key: (statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs))
        for key, runs in per.items()
    }


def table(variants: list[Variant], gap: float, calls: int, rounds: int) -> list[str]:
    figures = measure(variants, [gap, 0.0], calls, rounds)
    rows = [
        f"| variant | one way after {gap:g} ms idle | back to back | idle / back to back "
        "| reply after idle | reply back to back |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for variant in variants:
        idle, reply = figures[(variant.name, gap)]
        if variant.idle_only:
            replied = f"{reply:.0f} µs" if variant.mode != "stream" else ""
            rows.append(f"| {variant.name} | {idle:.0f} µs | | | {replied} | |")
            continue
        busy, busy_reply = figures[(variant.name, 0.0)]
        rows.append(
            f"| {variant.name} | {idle:.0f} µs | {busy:.0f} µs | {idle / busy:.1f}x "
            f"| {reply:.0f} µs | {busy_reply:.0f} µs |"
        )
    return rows


def curve(calls: int, rounds: int) -> list[str]:
    gaps = [0.0, 0.3, 1.0, 3.0, 10.0, 20.0]
    chosen = [VARIANTS[0], VARIANTS[1], VARIANTS[11]]
    figures = measure(chosen, gaps, calls, rounds)
    rows = [
        "| variant | " + " | ".join(f"{gap:g} ms" for gap in gaps) + " |",
        "|---|" + "---:|" * len(gaps),
    ]
    for variant in chosen:
        cells = [
            f"{figures[(variant.name, gap)][0]:.0f} µs" if (variant.name, gap) in figures else ""
            for gap in gaps
        ]
        rows.append(f"| {variant.name} | " + " | ".join(cells) + " |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", default="driver", help=argparse.SUPPRESS)
    parser.add_argument("--kind", default="aio", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="unary", help=argparse.SUPPRESS)
    parser.add_argument("--socket", default="", help=argparse.SUPPRESS)
    parser.add_argument("--options", default="[]", help=argparse.SUPPRESS)
    parser.add_argument("--calls", type=int, default=40, help="messages per run")
    parser.add_argument("--gap", type=float, default=20.0, help="idle ms before each message")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--curve", action="store_true", help="one way against the idle gap")
    parser.add_argument("--quick", action="store_true", help="fewer messages and rounds")
    args = parser.parse_args()
    options = [(name, value) for name, value in json.loads(args.options)]
    if args.role != "driver":
        _request_slice()
    if args.role == "server":
        serve(args.kind, args.socket, options)
        return 0
    if args.role == "rawserver":
        serve_raw(args.socket)
        return 0
    if args.role == "client":
        target = f"unix:{args.socket}"
        if args.mode == "raw":
            samples = asyncio.run(_raw_client(args.socket, args.calls, args.gap))
        elif args.kind == "aio":
            samples = asyncio.run(_aio_client(args.mode, target, args.calls, args.gap, options))
        else:
            samples = _sync_client(args.mode, target, args.calls, args.gap, options)
        print(json.dumps(samples))
        return 0

    calls, rounds = (25, 2) if args.quick else (args.calls, args.rounds)
    load = os.getloadavg()[0]
    rows = curve(calls, rounds) if args.curve else table(list(VARIANTS), args.gap, calls, rounds)
    print(
        f"# One hop between two processes ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{os.cpu_count()} cores, load {load:.1f} -> {os.getloadavg()[0]:.1f}, "
        f"{calls} messages x {rounds} rounds)\n"
    )
    print("\n".join(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
