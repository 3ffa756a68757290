"""Two Ethereum adaptors (alice, bob) as the host runs them, on a real anvil node: real adaptor
processes (cookie, versions, handshake), fake engines that carry SendData to the other side's
ReceiveData, and helpers to watch what each side reports."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from host.demo.anvil import DEV_KEYS, Anvil, address_of_key
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from sdk.pb.ilphost.engine.v1 import engine_pb2
from sdk.testing import AdaptorProcess, Refuse, fake_engine, run_adaptor
from tests.polling import wait_until_async

ADAPTOR = [
    sys.executable,
    str(Path(__file__).resolve().parents[2] / "adaptors" / "ethereum" / "adaptor.py"),
]
#: Generous: the machine is shared; every wait polls a condition until this deadline.
DEADLINE = 60.0
KEYS = {"alice": DEV_KEYS[1], "bob": DEV_KEYS[2]}
ADDRESSES = {side: address_of_key(key) for side, key in KEYS.items()}
PEER = {"alice": "bob", "bob": "alice"}


async def until(check: Callable[[], Awaitable[Any]], what: str, deadline: float = DEADLINE) -> Any:
    """tests.polling's wait with this module's deadline (a chain is slower than a socket)."""
    return await wait_until_async(check, what, timeout=deadline, interval=0.05)


def write_key(directory: Path, side: str) -> Path:
    path = directory / f"{side}.key"
    path.write_text(KEYS[side] + "\n")
    os.chmod(path, 0o600)
    return path


def adaptor_env(
    node: Anvil, directory: Path, side: str, *, token: str | None = None, **extra: str
) -> dict[str, str]:
    env = {
        "ILP_ETHEREUM_RPC_URL": node.url,
        "ILP_ETHEREUM_KEY_FILE": str(write_key(directory, side)),
        "ILP_ADAPTOR_STATE_DB": str(directory / f"{side}.db"),
        "ILP_ETHEREUM_CONFIRMATIONS": "1",
        "ILP_ETHEREUM_POLL_INTERVAL": "0.05",
        "ILP_ETHEREUM_START_BLOCK": "0",
    }
    if token is not None:
        env["ILP_ETHEREUM_TOKEN"] = token
    env.update(extra)
    return env


@dataclass
class Side:
    """One adaptor process and what its WatchEvents stream delivered."""

    name: str
    env: dict[str, str]
    process: AdaptorProcess | None = None
    incoming: list[apb.IncomingSettlement] = field(default_factory=list)
    stack: AsyncExitStack | None = None

    @property
    def adaptor(self) -> Any:
        assert self.process is not None
        return self.process.client.adaptor

    async def send(self, key: str, value: int, scale: int) -> apb.SendMoneyResponse:
        from sdk.pb.ilphost.types.v1 import types_pb2

        return await self.adaptor.SendMoney(
            apb.SendMoneyRequest(
                account_id=PEER[self.name],
                amount=types_pb2.Amount(value=str(value), scale=scale),
                idempotency_key=key,
            ),
            timeout=30,
        )


class Pair:
    """alice and bob, each with a fake engine that calls the other's ReceiveData."""

    def __init__(self, sides: Mapping[str, Side]) -> None:
        self.sides = dict(sides)
        self.engines: dict[str, Any] = {}

    def __getitem__(self, name: str) -> Side:
        return self.sides[name]

    def _reply(self, name: str) -> Callable[[engine_pb2.SendDataRequest], Awaitable[bytes]]:
        async def reply(request: engine_pb2.SendDataRequest) -> bytes:
            peer = self.sides[PEER[name]]
            if peer.process is None:
                raise Refuse(grpc.StatusCode.UNAVAILABLE, f"{peer.name} is not running")
            try:
                answer = await peer.adaptor.ReceiveData(
                    apb.ReceiveDataRequest(account_id=name, data=request.data), timeout=10
                )
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                if code != grpc.StatusCode.UNAVAILABLE:
                    code = grpc.StatusCode.FAILED_PRECONDITION
                raise Refuse(code, f"the peer's adaptor: {exc.details()}") from exc
            return bytes(answer.data)

        return reply

    async def start(self, name: str, **extra_env: str) -> Side:
        """Start (or restart) one side's adaptor and follow its events."""
        side = self.sides[name]
        stack = AsyncExitStack()
        engine = await stack.enter_async_context(fake_engine(self._reply(name), set_environ=False))
        self.engines[name] = engine
        env = {**side.env, **extra_env, "ILP_HOST_ENGINE_ADDR": engine.address}
        side.process = await stack.enter_async_context(run_adaptor(ADAPTOR, env=env))
        side.stack = stack
        task = asyncio.create_task(self._follow(side))
        stack.callback(task.cancel)
        await until(lambda: self.ready(name), f"{name}'s node link is READY")
        return side

    async def ready(self, name: str) -> bool:
        probe = await self.sides[name].adaptor.Probe(apb.ProbeRequest(), timeout=10)
        return bool(probe.ready.value)

    async def stop(self, name: str) -> None:
        side = self.sides[name]
        if side.stack is not None:
            stack, side.stack, side.process = side.stack, None, None
            await stack.aclose()

    async def _follow(self, side: Side) -> None:
        while side.process is not None:
            try:
                async for event in side.adaptor.WatchEvents(apb.WatchEventsRequest()):
                    if event.HasField("incoming_settlement"):
                        side.incoming.append(event.incoming_settlement)
            except (grpc.aio.AioRpcError, AssertionError):
                pass
            await asyncio.sleep(0.1)

    async def setup_accounts(self) -> None:
        """SetupAccount on both sides, each retried (as the host does) until both are OK: the
        first to ask finds the other's account not set up yet."""
        pending = set(self.sides)

        async def attempt() -> bool:
            for name in sorted(pending):
                try:
                    await self.sides[name].adaptor.SetupAccount(
                        apb.SetupAccountRequest(account_id=PEER[name]), timeout=30
                    )
                    pending.discard(name)
                except grpc.aio.AioRpcError:
                    pass
            return not pending

        await until(attempt, "both sides set up their accounts")


@asynccontextmanager
async def pair(alice_env: dict[str, str], bob_env: dict[str, str]) -> AsyncIterator[Pair]:
    both = Pair({"alice": Side("alice", alice_env), "bob": Side("bob", bob_env)})
    try:
        for name in ("alice", "bob"):
            await both.start(name)
        yield both
    finally:
        for name in ("bob", "alice"):
            await both.stop(name)
