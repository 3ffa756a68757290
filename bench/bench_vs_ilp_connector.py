"""Packets per second through ilp-host and through the JavaScript reference connector, one run.

Every contender forwards the same packets between the same two endpoints: one Node process
(bench/ilp_loadgen.js, ilp-plugin-http 1.6.1) is both the sender and the receiver, each a child
account of the connector, and sends exercise packets (fulfilled by the receiver) to the
receiver's address. Contenders, each started once and kept running:

- ``js``: npm ilp-connector 23.0.2, balances in memory (its only store here);
- ``run``: ``ilp-host run`` (proposal 1), both accounts on the memory adaptor, so every packet's
  balance change is durable in the engine's SQLite store before its Fulfill goes back;
- ``split``: ``ilp-host connector`` + ``ilp-host engine`` (proposal 2): the connector's own
  durable clearing file on the packet path;
- ``run-before``: ``ilp-host run`` of another checkout (``--before DIR``, its packages first on
  the Python path), to compare a change with the code before it in the same run;
- ``js-2hop`` and ``run-2hop``: sender -> A -> B -> receiver, A and B peered, routes learned
  by route broadcast (two JS connectors; two ``ilp-host run``);
- ``floor-aiohttp`` and ``floor-asyncio``: no connector at all, a relay that passes each POST
  on to the receiver and its answer back (bench/ilp_relay.py, on aiohttp and on bare asyncio
  protocols): the most any Python connector on this runtime can forward.

Rounds are interleaved (round 1 of every contender, then round 2, ...) so that a noisy
neighbour hurts every contender alike; the table gives the median of the rounds of packets/s
and of the per-round median latency, and the ratio of each contender to ``js`` (to ``js-2hop``
for the two-hop ones). A second table gives the CPU time the contender's processes (the
connectors and what they started, not the load generator) spent per packet, from
``/proc/<pid>/stat`` (Linux): on a busy machine, where packets/s mostly measure the
neighbours, what a packet costs is the steadier figure. Settlement never triggers: the credit
limits and thresholds are far away. Asserts nothing; a contender whose packets are rejected
says so in its row.

    .venv/bin/python bench/bench_vs_ilp_connector.py [--rounds 3] [--count1 1000]
        [--count16 3000] [--only js,run,split,js-2hop,run-2hop,floor-aiohttp,floor-asyncio]
        [--before DIR --only ...,run-before]

Needs `make setup` (tests/interop/node_modules holds ilp-connector and ilp-plugin-http).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.interop.js_harness import (  # noqa: E402
    NODE_MODULES,
    JsConnector,
    connector_options,
    free_ports,
    http_account,
)

ILP_HOST = Path(sys.executable).with_name("ilp-host")
LOADGEN = ROOT / "bench" / "ilp_loadgen.js"
RELAY = ROOT / "bench" / "ilp_relay.py"
#: Far beyond what a run moves: no packet is refused for credit, no settlement starts.
LIMIT = 10**15
AMOUNT = 100
START_TIMEOUT = 60.0


@dataclass
class Loadgen:
    """One ``node ilp_loadgen.js``: the sender and the receiver of one contender."""

    process: asyncio.subprocess.Process
    stderr: list[bytes] = field(default_factory=list)

    async def request(self, **request: Any) -> dict[str, Any]:
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(request).encode() + b"\n")
        await self.process.stdin.drain()
        line = await self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"the load generator exited: {self.log()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def log(self) -> str:
        return b"".join(self.stderr).decode("utf-8", "replace")[-2000:]


@asynccontextmanager
async def loadgen(
    sender: dict[str, Any] | list[dict[str, Any]], receiver: dict[str, Any]
) -> AsyncIterator[Loadgen]:
    env = {**os.environ, "NODE_PATH": str(NODE_MODULES)}
    process = await asyncio.create_subprocess_exec(
        "node",
        str(LOADGEN),
        json.dumps({"sender": sender, "receiver": receiver}),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        limit=1 << 24,  # an answer lists every latency: past the default 64 KiB at ~3500 packets
    )
    gen = Loadgen(process)

    async def drain() -> None:
        assert process.stderr is not None
        while chunk := await process.stderr.read(4096):
            gen.stderr.append(chunk)

    drainer = asyncio.create_task(drain())
    try:
        assert process.stdout is not None
        async with asyncio.timeout(START_TIMEOUT):
            line = await process.stdout.readline()
        if line.strip() != b"READY":
            raise RuntimeError(f"the load generator did not start: {line!r} {gen.log()}")
        yield gen
    finally:
        if process.returncode is None:
            assert process.stdin is not None
            process.stdin.close()
            try:
                async with asyncio.timeout(5):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()
        await asyncio.gather(drainer, return_exceptions=True)


@dataclass
class Endpoints:
    """Ports and tokens of the two loadgen plugins and the connector's two accounts."""

    sender_port: int
    receiver_port: int
    sender_account_port: int  # JS only: ilp-plugin-http listens per account
    receiver_account_port: int

    def loadgen_sides(self, sender_url: str) -> tuple[dict[str, Any], dict[str, Any]]:
        return (
            {"port": self.sender_port, "url": sender_url, "token": "bench-sender-token"},
            {
                "port": self.receiver_port,
                "url": f"http://127.0.0.1:{self.receiver_account_port}/",
                "token": "bench-receiver-token",
            },
        )


def js_account(relation: str, port: int, url: str, incoming: str, outgoing: str) -> dict[str, Any]:
    """An ilp-connector account over ilp-plugin-http whose limits a run never reaches: its
    balance bounds, and its packet rate limit (by default 10000 packets a minute per account,
    which a run of five rounds exceeds: T05 rejects in the last round)."""
    far = {"minimum": str(-LIMIT), "maximum": str(LIMIT)}
    unthrottled = {"refillPeriod": 1000, "refillCount": LIMIT}
    return http_account(relation, port, url, incoming, outgoing, balance=far, rateLimit=unthrottled)


def js_children(ends: Endpoints) -> dict[str, dict[str, Any]]:
    """The JS connector's child accounts of the load generator's sender and receiver."""
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{ends.sender_account_port}/")
    return {
        "sender": js_account(
            "child",
            ends.sender_account_port,
            f"http://127.0.0.1:{ends.sender_port}/",
            sender["token"],
            sender["token"],
        ),
        "receiver": js_account(
            "child",
            ends.receiver_account_port,
            f"http://127.0.0.1:{ends.receiver_port}/",
            receiver["token"],
            receiver["token"],
        ),
    }


def endpoints() -> Endpoints:
    return Endpoints(*free_ports(4))


class Processes:
    """Subprocesses of ilp-host, stopped with SIGTERM (SIGKILL after 10 s)."""

    def __init__(self) -> None:
        self.procs: list[asyncio.subprocess.Process] = []

    async def start(
        self, *args: str, log: Path, program: Path = ILP_HOST, env: dict[str, str] | None = None
    ) -> None:
        with log.open("ab") as out:
            self.procs.append(
                await asyncio.create_subprocess_exec(
                    str(program),
                    *args,
                    stdout=out,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                )
            )

    async def stop(self) -> None:
        for proc in reversed(self.procs):
            if proc.returncode is None:
                proc.terminate()
                try:
                    async with asyncio.timeout(10):
                        await proc.wait()
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


def _account(peer_id: str) -> str:
    return (
        f'[[account]]\nid = "{peer_id}"\nadaptor = "memory"\nasset_code = "USD"\n'
        f"asset_scale = 6\nmin_balance = -{LIMIT}\nmax_balance = {LIMIT}\n"
        f"settle_threshold = -{LIMIT}\nsettle_to = 0\n\n"
    )


def _peer(peer_id: str, relation: str, url: str, incoming: str, outgoing: str) -> str:
    return (
        f'[[peer]]\nid = "{peer_id}"\nrelation = "{relation}"\nurl = "{url}"\n'
        f'incoming_token = "{incoming}"\noutgoing_token = "{outgoing}"\n\n'
    )


def host_config(
    state_dir: Path, address: str, port: int, peers: list[tuple[str, str, str, str, str]]
) -> str:
    """An ``ilp-host`` configuration: the memory adaptor, one account per peer."""
    adaptor = ROOT / "adaptors" / "memory-python" / "adaptor.py"
    text = (
        f'[host]\nstate_dir = "{state_dir}"\n\n'
        f'[[adaptor]]\nname = "memory"\ncommand = ["python", "{adaptor}"]\n'
        'env = { ILP_ADAPTOR_ASSET_CODE = "USD", ILP_ADAPTOR_ASSET_SCALE = "6" }\n\n'
    )
    text += "".join(_account(peer[0]) for peer in peers)
    text += f'[connector]\naddress = "{address}"\nport = {port}\nroute_broadcast_interval = 0.5\n\n'
    text += "".join(_peer(*peer) for peer in peers)
    return text


def _children() -> dict[int, list[int]]:
    """Every process's children, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # gone meanwhile
        parent = int(stat.rpartition(")")[2].split()[1])
        children.setdefault(parent, []).append(int(entry))
    return children


def _descendants(root: int, children: dict[int, list[int]]) -> set[int]:
    found: set[int] = set()
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def cpu_seconds(pids: set[int]) -> float:
    """User + system CPU time of ``pids`` and their descendants so far."""
    children = _children()
    every = set(pids)
    for pid in pids:
        every |= _descendants(pid, children)
    ticks = 0
    for pid in every:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        ticks += int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


@dataclass
class Contender:
    name: str
    #: Starts the contender's connector(s) and load generator; yields (loadgen, destination).
    start: Callable[[AsyncExitStack, Path], Any]
    baseline: str


async def start_js(stack: AsyncExitStack, _: Path) -> tuple[Loadgen, str]:
    ends = endpoints()
    (admin_port,) = free_ports(1)
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{ends.sender_account_port}/")
    accounts = js_children(ends)
    js = JsConnector(connector_options(accounts, address="test.js", admin_port=admin_port))
    await js.start()
    stack.push_async_callback(js.stop)
    gen = await stack.enter_async_context(loadgen(sender, receiver))
    return gen, "test.js.receiver.bench"


async def start_js_two_hops(stack: AsyncExitStack, _: Path) -> tuple[Loadgen, str]:
    ends = endpoints()
    a_port, b_port, admin_a, admin_b = free_ports(4)
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{ends.sender_account_port}/")
    children = js_children(ends)
    a_accounts = {
        "sender": children["sender"],
        "b": js_account(
            "peer", a_port, f"http://127.0.0.1:{b_port}/", "token-b-to-a", "token-a-to-b"
        ),
    }
    b_accounts = {
        "receiver": children["receiver"],
        "a": js_account(
            "peer", b_port, f"http://127.0.0.1:{a_port}/", "token-a-to-b", "token-b-to-a"
        ),
    }
    js_a = JsConnector(connector_options(a_accounts, address="test.a", admin_port=admin_a))
    js_b = JsConnector(connector_options(b_accounts, address="test.b", admin_port=admin_b))
    await asyncio.gather(js_a.start(), js_b.start())
    stack.push_async_callback(js_a.stop)
    stack.push_async_callback(js_b.stop)
    gen = await stack.enter_async_context(loadgen(sender, receiver))
    return gen, "test.b.receiver.bench"


def _host_peers(ends: Endpoints) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            "sender",
            "child",
            f"http://127.0.0.1:{ends.sender_port}/",
            "bench-sender-token",
            "bench-sender-token",
        ),
        (
            "receiver",
            "child",
            f"http://127.0.0.1:{ends.receiver_port}/",
            "bench-receiver-token",
            "bench-receiver-token",
        ),
    ]


#: Another checkout of the repository whose host ``run-before`` runs (--before).
BEFORE: list[Path] = []


async def _ilp_host(
    stack: AsyncExitStack,
    workdir: Path,
    name: str,
    config: str,
    commands: list[str],
    code: Path | None = None,
) -> Path:
    path = workdir / f"{name}.toml"
    path.write_text(config)
    procs = Processes()
    stack.push_async_callback(procs.stop)
    # The other checkout's packages come first on the path: the same environment, its code.
    env = {**os.environ, "PYTHONPATH": str(code)} if code is not None else None
    for command in commands:
        await procs.start(command, "-c", str(path), log=workdir / f"{name}-{command}.log", env=env)
    return path


async def start_host(
    stack: AsyncExitStack, workdir: Path, split: bool, code: Path | None = None
) -> tuple[Loadgen, str]:
    ends = endpoints()
    name = "split" if split else "run-before" if code is not None else "run"
    # ilp-host serves every peer on one port: the sender's account port is it.
    config = host_config(workdir / name, "test.host", ends.sender_account_port, _host_peers(ends))
    commands = ["connector", "engine"] if split else ["run"]
    await _ilp_host(stack, workdir, name, config, commands, code)
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{ends.sender_account_port}/")
    # Our host posts to the receiver's URL itself; the receiver's account port is unused.
    gen = await stack.enter_async_context(loadgen(sender, receiver))
    return gen, "test.host.receiver.bench"


async def start_run(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    return await start_host(stack, workdir, split=False)


async def start_split(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    return await start_host(stack, workdir, split=True)


async def start_run_before(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    return await start_host(stack, workdir, split=False, code=BEFORE[0])


async def start_run_two_hops(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    ends = endpoints()
    (b_port,) = free_ports(1)
    sender_peer, receiver_peer = _host_peers(ends)
    a_port = ends.sender_account_port
    a_peers = [
        sender_peer,
        ("b", "peer", f"http://127.0.0.1:{b_port}/", "token-b-to-a", "token-a-to-b"),
    ]
    b_peers = [
        receiver_peer,
        ("a", "peer", f"http://127.0.0.1:{a_port}/", "token-a-to-b", "token-b-to-a"),
    ]
    await _ilp_host(
        stack, workdir, "a", host_config(workdir / "a", "test.a", a_port, a_peers), ["run"]
    )
    await _ilp_host(
        stack, workdir, "b", host_config(workdir / "b", "test.b", b_port, b_peers), ["run"]
    )
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{a_port}/")
    gen = await stack.enter_async_context(loadgen(sender, receiver))
    return gen, "test.b.receiver.bench"


async def start_relay(stack: AsyncExitStack, workdir: Path, kind: str) -> tuple[Loadgen, str]:
    ends = endpoints()
    sender, receiver = ends.loadgen_sides(f"http://127.0.0.1:{ends.sender_account_port}/")
    procs = Processes()
    stack.push_async_callback(procs.stop)
    await procs.start(
        str(RELAY),
        kind,
        f"--port={ends.sender_account_port}",
        f"--token={sender['token']}",
        f"--to=http://127.0.0.1:{ends.receiver_port}/",
        f"--to-token={receiver['token']}",
        log=workdir / f"relay-{kind}.log",
        program=Path(sys.executable),
    )
    gen = await stack.enter_async_context(loadgen(sender, receiver))
    # The relay routes nothing: any address reaches the receiver, which fulfils every
    # exercise packet.
    return gen, "test.relay.receiver.bench"


async def start_floor_aiohttp(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    return await start_relay(stack, workdir, "aiohttp")


async def start_floor_asyncio(stack: AsyncExitStack, workdir: Path) -> tuple[Loadgen, str]:
    return await start_relay(stack, workdir, "asyncio")


CONTENDERS = [
    Contender("js", start_js, "js"),
    Contender("run", start_run, "js"),
    Contender("run-before", start_run_before, "js"),
    Contender("split", start_split, "js"),
    Contender("js-2hop", start_js_two_hops, "js-2hop"),
    Contender("run-2hop", start_run_two_hops, "js-2hop"),
    Contender("floor-aiohttp", start_floor_aiohttp, "js"),
    Contender("floor-asyncio", start_floor_asyncio, "js"),
]


@dataclass
class Figures:
    pps: dict[int, list[float]] = field(default_factory=dict)
    p50: dict[int, list[float]] = field(default_factory=dict)
    p99: dict[int, list[float]] = field(default_factory=dict)
    #: CPU milliseconds per packet of the contender's processes, per round.
    cpu_ms: dict[int, list[float]] = field(default_factory=dict)
    #: The same of its load generator (the Node sender and receiver), per round.
    loadgen_cpu_ms: dict[int, list[float]] = field(default_factory=dict)
    rejects: list[str] = field(default_factory=list)


def _quantile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


async def measure(args: argparse.Namespace) -> dict[str, Figures]:
    chosen = [c for c in CONTENDERS if c.name in args.only]
    loads = [(1, args.count1), (16, args.count16)]
    figures = {c.name: Figures() for c in chosen}
    workdir = Path(tempfile.mkdtemp(prefix="bench-vs-js-"))
    try:
        async with AsyncExitStack() as stack:
            started: dict[str, tuple[Loadgen, str]] = {}
            processes: dict[str, set[int]] = {}
            for contender in chosen:
                print(f"starting {contender.name} ...", file=sys.stderr, flush=True)
                before = _descendants(os.getpid(), _children())
                gen, destination = await contender.start(stack, workdir)
                # Its processes: the children of this one it started, but the load generator.
                processes[contender.name] = (
                    _descendants(os.getpid(), _children()) - before - {gen.process.pid}
                ) & set(_children().get(os.getpid(), []))
                warm = await gen.request(op="warm", destination=destination, seconds=60)
                if not warm.get("ok"):
                    raise RuntimeError(
                        f"{contender.name}: packets are not fulfilled: {warm.get('last')}"
                        f" (logs in {workdir})"
                    )
                started[contender.name] = (gen, destination)
            for round_no in range(1, args.rounds + 1):
                for contender in chosen:
                    gen, destination = started[contender.name]
                    for concurrency, count in loads:
                        cpu_before = cpu_seconds(processes[contender.name])
                        loadgen_before = cpu_seconds({gen.process.pid})
                        result = await gen.request(
                            op="run",
                            destination=destination,
                            count=count,
                            concurrency=concurrency,
                            amount=AMOUNT,
                        )
                        cpu = cpu_seconds(processes[contender.name]) - cpu_before
                        loadgen_cpu = cpu_seconds({gen.process.pid}) - loadgen_before
                        fig = figures[contender.name]
                        fig.cpu_ms.setdefault(concurrency, []).append(
                            1000 * cpu / max(1, result["fulfilled"])
                        )
                        fig.loadgen_cpu_ms.setdefault(concurrency, []).append(
                            1000 * loadgen_cpu / max(1, result["fulfilled"])
                        )
                        latencies = result["latencies_ms"]
                        fig.pps.setdefault(concurrency, []).append(
                            result["fulfilled"] / result["seconds"]
                        )
                        fig.p50.setdefault(concurrency, []).append(_quantile(latencies, 0.5))
                        fig.p99.setdefault(concurrency, []).append(_quantile(latencies, 0.99))
                        if result["rejected"]:
                            fig.rejects.append(
                                f"{result['rejected']} rejected, first: {result['first_reject']}"
                            )
                        print(
                            f"round {round_no} {contender.name} c={concurrency}: "
                            f"{result['fulfilled'] / result['seconds']:.0f} pkt/s",
                            file=sys.stderr,
                            flush=True,
                        )
    finally:
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    return figures


def report(figures: dict[str, Figures], args: argparse.Namespace) -> None:
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}")
    print(
        f"Rounds: {args.rounds} interleaved; {args.count1} packets at c=1, "
        f"{args.count16} at c=16; medians of the rounds\n"
    )
    print(
        "| contender | c=1 pkt/s (p50 ms) | c=16 pkt/s (p50 ms, p99 ms) | ratio c=1 | ratio c=16 |"
    )
    print("|---|---|---|---|---|")
    baselines = {c.name: c.baseline for c in CONTENDERS}
    for name, fig in figures.items():
        med = {c: statistics.median(v) for c, v in fig.pps.items()}
        base = figures.get(baselines[name])
        ratios = []
        for c in (1, 16):
            if base is not None and base.pps.get(c):
                ratios.append(f"{med[c] / statistics.median(base.pps[c]):.2f}x")
            else:
                ratios.append("-")
        print(
            f"| {name} | {med[1]:.0f} ({statistics.median(fig.p50[1]):.1f}) "
            f"| {med[16]:.0f} ({statistics.median(fig.p50[16]):.1f}, "
            f"{statistics.median(fig.p99[16]):.1f}) | {ratios[0]} | {ratios[1]} |"
        )
    print(
        "\nCPU time of the contender's processes per packet (ms, median of the rounds), and of "
        "its load generator (the Node sender and receiver, on the same cores):\n"
    )
    print(
        "| contender | c=1 CPU ms/pkt | c=16 CPU ms/pkt | ratio c=1 | ratio c=16 "
        "| load generator c=1 / c=16 |"
    )
    print("|---|---|---|---|---|---|")
    for name, fig in figures.items():
        cpu = {c: statistics.median(v) for c, v in fig.cpu_ms.items()}
        base = figures.get(baselines[name])
        # A ratio > 1 is a cheaper packet than the baseline's, as for packets/s.
        cpu_ratios = [
            f"{statistics.median(base.cpu_ms[c]) / cpu[c]:.2f}x"
            if base is not None and base.cpu_ms.get(c) and cpu[c] > 0
            else "-"
            for c in (1, 16)
        ]
        loadgen = {c: statistics.median(v) for c, v in fig.loadgen_cpu_ms.items()}
        print(
            f"| {name} | {cpu[1]:.2f} | {cpu[16]:.2f} | {cpu_ratios[0]} | {cpu_ratios[1]} "
            f"| {loadgen[1]:.2f} / {loadgen[16]:.2f} |"
        )
    for name, fig in figures.items():
        for line in fig.rejects[:3]:
            print(f"{name}: {line}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--count1", type=int, default=1000, help="packets per round at c=1")
    parser.add_argument("--count16", type=int, default=3000, help="packets per round at c=16")
    parser.add_argument(
        "--only",
        type=lambda s: s.split(","),
        default=[c.name for c in CONTENDERS if c.name != "run-before"],
        help="contenders, comma-separated: " + ",".join(c.name for c in CONTENDERS),
    )
    parser.add_argument("--keep", action="store_true", help="keep the work directory (logs)")
    parser.add_argument(
        "--before",
        type=Path,
        help="another checkout of this repository (e.g. `git worktree add ../before main`): "
        "the run-before contender is its `ilp-host run`, in this environment",
    )
    args = parser.parse_args()
    if "run-before" in args.only and args.before is None:
        parser.error("run-before needs --before")
    if args.before is not None:
        BEFORE.append(args.before.resolve())
    unknown = set(args.only) - {c.name for c in CONTENDERS}
    if unknown:
        parser.error(f"unknown contender(s): {', '.join(sorted(unknown))}")
    if not (NODE_MODULES / "ilp-connector").is_dir():
        parser.error(f"{NODE_MODULES.relative_to(ROOT)} lacks ilp-connector: run `make setup`")
    report(asyncio.run(measure(args)), args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
