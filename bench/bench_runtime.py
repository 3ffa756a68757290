"""Benchmarks of the adaptor runtime: spawn-to-SERVING, idle RSS, host-to-adaptor RPC latency.

Everything goes through the real host code (``host.supervisor.Supervisor``) and real adaptor
processes on unix sockets; figures are printed as Markdown tables, never asserted.

1. Spawn-to-SERVING: a fresh Supervisor per start, timed from the ``start()`` call until it
   returns with the adaptor SERVING; split at the HANDSHAKING and SERVING timestamps of the
   lifecycle. The first start of the run is shown apart (colder caches), then the statistics
   of the next N.
   Bare interpreter starts are shown next to it: they are the part no runtime can save.
2. Idle RSS: VmRSS of the adaptor and its descendants after it has been SERVING a while.
3. Unary latency: sequential GetInfo calls through the Supervisor's channel, next to a floor (a
   bare grpc.aio client calling bench/echo_server.py, a bare grpc.aio server in its own
   process) and to a bare client calling the adaptor's own socket (which separates the
   adaptor's server from the host's side). The paths run interleaved in rounds, in a rotating
   order; the figures are the medians of the per-round medians (and of the per-round p99s).

Usage: ``.venv/bin/python bench/bench_runtime.py [--quick] [--only spawn,rss,rpc]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import math
import os
import platform
import shutil
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
from google import protobuf

from host.lifecycle import ProcessState
from host.supervisor import AdaptorSpec, Supervisor
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2, adaptor_pb2_grpc

REPO = Path(__file__).resolve().parents[1]
ECHO_SERVER = Path(__file__).resolve().parent / "echo_server.py"
#: Generous per-call deadline: the machine is shared; a call never comes near it.
CALL_TIMEOUT = 30.0


class BenchError(RuntimeError):
    """The benchmark could not measure what it set out to (an adaptor did not serve...)."""


@dataclass(frozen=True)
class Subject:
    """An adaptor under test: its name and how the host starts it."""

    name: str
    command: tuple[str, ...]
    #: Why it cannot run here, or "" when it can.
    missing: str = ""

    def spec(self) -> AdaptorSpec:
        """The spec the Supervisor runs it with: the defaults, unix transport."""
        return AdaptorSpec(self.name, self.command, transport="unix")


def subjects() -> list[Subject]:
    """The Python and the Node.js reference adaptors."""
    node_dir = REPO / "adaptors" / "memory-node"
    node = shutil.which("node")
    node_missing = ""
    if node is None:
        node_missing = "node is not installed"
    elif not (node_dir / "node_modules").is_dir():
        node_missing = "adaptors/memory-node/node_modules is missing (npm ci there)"
    return [
        Subject(
            "memory-python",
            (sys.executable, str(REPO / "adaptors" / "memory-python" / "adaptor.py")),
        ),
        Subject("memory-node", (node or "node", str(node_dir / "adaptor.js")), node_missing),
    ]


@dataclass(frozen=True)
class Plan:
    """How much to measure."""

    starts: int
    interpreter_runs: int
    rss_samples: int
    idle_seconds: float
    calls: int
    rounds: int
    warmup: int


FULL = Plan(
    starts=20, interpreter_runs=5, rss_samples=3, idle_seconds=2.0, calls=2000, rounds=5, warmup=300
)
QUICK = Plan(
    starts=5, interpreter_runs=3, rss_samples=1, idle_seconds=2.0, calls=300, rounds=3, warmup=100
)


# --- statistics (pure) ------------------------------------------------------------------------


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least ``fraction`` of all at or
    below it."""
    if not values:
        raise ValueError("no values")
    ordered = sorted(values)
    # Rounded first: 0.9 * 30 is 27.000000000000004 in floating point, and its rank is 27.
    rank = max(1, math.ceil(round(len(ordered) * fraction, 9)))
    return ordered[rank - 1]


def ms(seconds: float) -> str:
    """Seconds as milliseconds for a table cell."""
    return f"{seconds * 1e3:.0f}" if seconds >= 0.1 else f"{seconds * 1e3:.1f}"


def us(seconds: float) -> str:
    """Seconds as microseconds for a table cell."""
    return f"{seconds * 1e6:.0f}"


def mib(kib: int) -> str:
    """KiB (as /proc reports them) as MiB for a table cell."""
    return f"{kib / 1024:.1f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


# --- the machine --------------------------------------------------------------------------------


def _node_version() -> str:
    node = shutil.which("node")
    if node is None:
        return "absent"
    done = subprocess.run([node, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.strip() or "unknown"


def machine() -> str:
    """What the figures were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    return (
        f"{datetime.date.today().isoformat()}; {os.cpu_count()} CPUs ({model}); "
        f"{platform.system()} {platform.release()}; Python {platform.python_version()}, "
        f"grpcio {grpc.__version__}, protobuf {protobuf.__version__}, node {_node_version()}; "
        f"load average at start {load}"
    )


# --- 1. spawn-to-SERVING ------------------------------------------------------------------------


@dataclass(frozen=True)
class StartTiming:
    """One start, in seconds."""

    to_serving: float  # start() call to its return with the adaptor SERVING
    to_handshake: float  # start() call to the HANDSHAKING timestamp (the line was read)
    handshake_to_serving: float  # connect, health SERVING, GetInfo, Probe
    stop: float  # stop() call to its return (Shutdown RPC, process gone, cleanup)


async def start_once(subject: Subject) -> StartTiming:
    """Start ``subject`` under a fresh Supervisor, time it, stop it."""
    supervisor = Supervisor([subject.spec()])
    seen: dict[ProcessState, datetime.datetime] = {}

    async def record() -> None:
        async for snapshot in supervisor.watch(subject.name):
            seen.setdefault(snapshot.state, snapshot.since)

    recorder = asyncio.create_task(record())
    await asyncio.sleep(0)  # the recorder is watching before anything changes
    wall = datetime.datetime.now(datetime.UTC)
    began = time.perf_counter()
    try:
        await supervisor.start()
        to_serving = time.perf_counter() - began
        snapshot = supervisor.snapshot(subject.name)
        if snapshot.state != ProcessState.SERVING:
            raise BenchError(f"{subject.name} did not serve: {snapshot.last_error}")
    finally:
        stopping = time.perf_counter()
        await supervisor.stop()
        stop = time.perf_counter() - stopping
        await recorder
    handshake = (seen[ProcessState.HANDSHAKING] - wall).total_seconds()
    serving = (seen[ProcessState.SERVING] - wall).total_seconds()
    return StartTiming(to_serving, handshake, serving - handshake, stop)


async def run_to_line(argv: Sequence[str], cwd: Path) -> float:
    """Seconds from spawning ``argv`` to its first line on stdout (as an adaptor's handshake
    line); it must then exit 0."""
    began = time.perf_counter()
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE
    )
    assert process.stdout is not None
    line = await process.stdout.readline()
    elapsed = time.perf_counter() - began
    await process.stdout.read()
    code = await process.wait()
    if code != 0 or not line:
        raise BenchError(f"{' '.join(argv)} exited {code} (first line {line!r})")
    return elapsed


def interpreter_floors(available: Sequence[Subject]) -> list[tuple[str, list[str], Path]]:
    """Processes that only start an interpreter, import what the adaptor imports and print a
    line: the part of spawn-to-handshake that is not the adaptor's own work."""
    python = [sys.executable, "-c"]
    floors = [
        ("python: print", [*python, "print(1, flush=True)"], REPO),
        ("python: import grpc, print", [*python, "import grpc; print(1, flush=True)"], REPO),
        (
            "python: import sdk (what memory-python imports), print",
            [*python, "import grpc, sdk, sdk.amount; print(1, flush=True)"],
            REPO,
        ),
    ]
    if any(s.name == "memory-node" for s in available):
        node_dir = REPO / "adaptors" / "memory-node"
        floors.append(("node: print", ["node", "-e", "console.log(1)"], node_dir))
        requires = "".join(
            f"require('{module}');"
            for module in ("@grpc/grpc-js", "@grpc/proto-loader", "@grpc/reflection")
        )
        floors.append(
            (
                "node: require grpc-js, proto-loader, reflection, print",
                ["node", "-e", requires + "console.log(1)"],
                node_dir,
            )
        )
    return floors


async def bench_spawn(plan: Plan, available: Sequence[Subject]) -> str:
    """Section 1 as Markdown."""
    rows: list[list[str]] = []
    for subject in available:
        first = await start_once(subject)
        timings = [await start_once(subject) for _ in range(plan.starts)]
        totals = [t.to_serving for t in timings]
        rows.append(
            [
                subject.name,
                ms(first.to_serving),
                ms(statistics.median(totals)),
                ms(min(totals)),
                ms(percentile(totals, 0.9)),
                ms(statistics.median(t.to_handshake for t in timings)),
                ms(statistics.median(t.handshake_to_serving for t in timings)),
                ms(statistics.median(t.stop for t in timings)),
            ]
        )
    spawn = table(
        [
            "adaptor",
            "first start",
            f"median of {plan.starts}",
            "min",
            "p90",
            "to handshake line (median)",
            "handshake to SERVING (median)",
            "stop() (median)",
        ],
        rows,
    )
    floor_rows: list[list[str]] = []
    for label, argv, cwd in interpreter_floors(available):
        runs = [await run_to_line(argv, cwd) for _ in range(plan.interpreter_runs)]
        floor_rows.append([label, ms(statistics.median(runs)), ms(min(runs))])
    floors = table(
        ["process that starts and prints a line", f"median of {plan.interpreter_runs}", "min"],
        floor_rows,
    )
    return (
        "### Spawn to SERVING (ms)\n\n"
        "From `Supervisor.start()` until it returns with the adaptor SERVING, unix transport; "
        "one fresh Supervisor per start.\n\n"
        f"{spawn}\n\n{floors}"
    )


# --- 2. idle RSS ----------------------------------------------------------------------------------


def descendants(root: int) -> list[int]:
    """``root`` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


@dataclass(frozen=True)
class Memory:
    """Memory of a process tree, in KiB as /proc/<pid>/status reports it."""

    processes: int
    threads: int
    rss: int
    rss_anon: int
    rss_file: int


def memory_of(root: int) -> Memory:
    """VmRSS and its parts, summed over ``root`` and its descendants."""
    totals = {"Threads": 0, "VmRSS": 0, "RssAnon": 0, "RssFile": 0}
    pids = descendants(root)
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in totals:
                    totals[key] += int(value.split()[0])
    return Memory(
        len(pids), totals["Threads"], totals["VmRSS"], totals["RssAnon"], totals["RssFile"]
    )


async def idle_memory(subject: Subject, idle_seconds: float) -> Memory:
    """RSS of ``subject`` after it has been SERVING for ``idle_seconds``."""
    async with Supervisor([subject.spec()]) as supervisor:
        snapshot = supervisor.snapshot(subject.name)
        if snapshot.state != ProcessState.SERVING or snapshot.pid is None:
            raise BenchError(f"{subject.name} did not serve: {snapshot.last_error}")
        await asyncio.sleep(idle_seconds)
        return memory_of(snapshot.pid)


def memory_row(label: str, samples: Sequence[Memory]) -> list[str]:
    """One table row: medians over ``samples``."""

    def median(values: Sequence[int]) -> int:
        return int(statistics.median(values))

    return [
        label,
        mib(median([m.rss for m in samples])),
        mib(median([m.rss_anon for m in samples])),
        mib(median([m.rss_file for m in samples])),
        str(median([m.processes for m in samples])),
        str(median([m.threads for m in samples])),
    ]


async def bench_rss(plan: Plan, available: Sequence[Subject]) -> str:
    """Section 2 as Markdown."""
    rows = []
    for subject in available:
        samples = [await idle_memory(subject, plan.idle_seconds) for _ in range(plan.rss_samples)]
        rows.append(memory_row(subject.name, samples))
    echo_samples = []
    for _ in range(plan.rss_samples):
        async with echo_server() as (_, pid):
            await asyncio.sleep(plan.idle_seconds)
            echo_samples.append(memory_of(pid))
    rows.append(memory_row("bare grpc.aio server (bench/echo_server.py)", echo_samples))
    return (
        "### Idle RSS (MiB)\n\n"
        f"VmRSS summed over the process and its descendants, {plan.idle_seconds:g} s after "
        f"SERVING; median of {plan.rss_samples}.\n\n"
        + table(["process", "VmRSS", "RssAnon", "RssFile", "processes", "threads"], rows)
    )


# --- 3. unary latency ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def echo_server() -> AsyncIterator[tuple[str, int]]:
    """bench/echo_server.py running: its gRPC target and pid."""
    socket_dir = tempfile.mkdtemp(prefix="ilpb")
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ECHO_SERVER),
        socket_dir,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), 60)
        if not line.startswith(b"unix:"):
            raise BenchError(f"echo server printed {line!r} instead of its address")
        yield line.decode().strip(), process.pid
    finally:
        if process.stdin is not None:
            process.stdin.close()  # end-of-file: it stops
        try:
            await asyncio.wait_for(process.wait(), 30)
        except TimeoutError:
            process.kill()
            await process.wait()
        shutil.rmtree(socket_dir, ignore_errors=True)


def adaptor_socket(directory: Path) -> str:
    """The gRPC target of the one unix socket an adaptor made under ``directory``."""
    for path in directory.rglob("*"):
        if stat.S_ISSOCK(path.lstat().st_mode):
            return f"unix:{path}"
    raise BenchError(f"no socket under {directory}")


Call = Callable[[], Awaitable[object]]


def bare_call(channel: grpc.aio.Channel) -> Call:
    """GetInfo on ``channel`` with a stub made once."""
    stub = adaptor_pb2_grpc.LedgerAdaptorStub(channel)
    request = adaptor_pb2.GetInfoRequest()
    return lambda: stub.GetInfo(request, timeout=CALL_TIMEOUT)


def host_call(supervisor: Supervisor, name: str) -> Call:
    """GetInfo the way host code calls an adaptor: the channel is asked of the Supervisor for
    every call (it is only valid while SERVING); the stub is remade when the channel changes."""
    request = adaptor_pb2.GetInfoRequest()
    cached: list[tuple[grpc.aio.Channel, adaptor_pb2_grpc.LedgerAdaptorAsyncStub]] = []

    async def call() -> object:
        channel = supervisor.channel(name)
        if channel is None:
            raise BenchError(f"{name} is not SERVING: {supervisor.snapshot(name).last_error}")
        if not cached or cached[0][0] is not channel:
            cached[:] = [(channel, adaptor_pb2_grpc.LedgerAdaptorStub(channel))]
        return await cached[0][1].GetInfo(request, timeout=CALL_TIMEOUT)

    return call


async def timed(call: Call, count: int) -> list[float]:
    """Seconds taken by each of ``count`` sequential calls."""
    took = []
    clock = time.perf_counter
    for _ in range(count):
        began = clock()
        await call()
        took.append(clock() - began)
    return took


@dataclass(frozen=True)
class Path_:
    """One way of calling GetInfo: a label, the call, and the pid of the serving process."""

    label: str
    call: Call
    server_pid: int


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of process ``pid`` (all its threads) so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # Fields 14 and 15 of proc(5), utime and stime; the split starts at field 3.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Round:
    """One round of one path: each call's time, and the CPU both sides used per call."""

    times: list[float]
    client_cpu: float  # this process, all threads (grpc's included)
    server_cpu: float  # the serving process


async def measure_round(path: Path_, calls: int) -> Round:
    """``calls`` sequential calls on ``path``."""
    client, server = time.process_time(), cpu_seconds(path.server_pid)
    times = await timed(path.call, calls)
    client = (time.process_time() - client) / calls
    server = (cpu_seconds(path.server_pid) - server) / calls
    return Round(times, client, server)


async def measure_paths(plan: Plan, paths: Sequence[Path_]) -> dict[str, list[Round]]:
    """Per path, its rounds; paths interleaved, the order rotating by round."""
    for path in paths:
        await timed(path.call, plan.warmup)
    rounds: dict[str, list[Round]] = {path.label: [] for path in paths}
    for number in range(plan.rounds):
        shift = number % len(paths)
        for path in [*paths[shift:], *paths[:shift]]:
            rounds[path.label].append(await measure_round(path, plan.calls))
    return rounds


async def bench_rpc(plan: Plan, available: Sequence[Subject]) -> str:
    """Section 3 as Markdown."""
    socket_root = Path(tempfile.mkdtemp(prefix="ilpb"))
    try:
        # Unwound last-in first-out: the channels close before the servers they talk to.
        async with contextlib.AsyncExitStack() as stack:
            echo_target, echo_pid = await stack.enter_async_context(echo_server())
            supervisor = await stack.enter_async_context(
                Supervisor([s.spec() for s in available], socket_root=socket_root)
            )

            def channel_to(target: str) -> grpc.aio.Channel:
                channel = grpc.aio.insecure_channel(target)
                stack.push_async_callback(channel.close, None)
                return channel

            floor = channel_to(echo_target)
            paths = [
                Path_("floor: bare client -> bare grpc.aio server", bare_call(floor), echo_pid)
            ]
            for index, subject in enumerate(available):
                snapshot = supervisor.snapshot(subject.name)
                if snapshot.state != ProcessState.SERVING or snapshot.pid is None:
                    raise BenchError(f"{subject.name} did not serve: {snapshot.last_error}")
                direct = channel_to(adaptor_socket(socket_root / str(index)))
                paths.append(
                    Path_(
                        f"host: Supervisor channel -> {subject.name}",
                        host_call(supervisor, subject.name),
                        snapshot.pid,
                    )
                )
                paths.append(
                    Path_(f"bare client -> {subject.name}", bare_call(direct), snapshot.pid)
                )
            rounds = await measure_paths(plan, paths)
    finally:
        shutil.rmtree(socket_root, ignore_errors=True)
    floor_median = statistics.median(statistics.median(r.times) for r in rounds[paths[0].label])
    rows = []
    for label, samples in rounds.items():
        medians = [statistics.median(r.times) for r in samples]
        median = statistics.median(medians)
        rows.append(
            [
                label,
                us(median),
                us(statistics.median(percentile(r.times, 0.99) for r in samples)),
                f"{us(min(medians))}-{us(max(medians))}",
                f"{median / floor_median:.2f}x",
                us(statistics.median(r.client_cpu for r in samples)),
                us(statistics.median(r.server_cpu for r in samples)),
            ]
        )
    header = ["path", "median", "p99", "round medians", "vs floor", "client CPU", "server CPU"]
    return (
        "### Unary GetInfo latency (µs)\n\n"
        f"Sequential calls, {plan.rounds} rounds of {plan.calls} per path after {plan.warmup} "
        "warm-up calls each, paths interleaved; medians of the round medians and of the round "
        "p99s. CPU columns: CPU time per call of the calling process (all threads) and of the "
        "serving process, from /proc (tick resolution: rough on short runs). The target is "
        "host/floor within 1.3x for memory-python.\n\n" + table(header, rows)
    )


# --- main ----------------------------------------------------------------------------------------

PARTS: dict[str, Callable[[Plan, Sequence[Subject]], Awaitable[str]]] = {
    "spawn": bench_spawn,
    "rss": bench_rss,
    "rpc": bench_rpc,
}


async def run(plan: Plan, parts: Sequence[str]) -> None:
    """Measure ``parts`` and print each section as it completes."""
    available = []
    for subject in subjects():
        if subject.missing:
            print(f"(skipping {subject.name}: {subject.missing})\n", flush=True)
        else:
            available.append(subject)
    for part in parts:
        print(await PARTS[part](plan, available), "\n", flush=True)


def main() -> None:
    """Parse the command line and run."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer starts, calls and rounds")
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts among {', '.join(PARTS)} (default: all)",
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown parts {unknown}; choose among {list(PARTS)}")
    plan = QUICK if args.quick else FULL
    print(f"## Adaptor runtime: {'quick' if args.quick else 'full'} run\n\n{machine()}\n")
    began = time.perf_counter()
    try:
        asyncio.run(run(plan, parts))
    except BenchError as exc:
        sys.exit(f"bench_runtime: {exc}")
    print(f"(measured in {time.perf_counter() - began:.0f} s)")


if __name__ == "__main__":
    main()
