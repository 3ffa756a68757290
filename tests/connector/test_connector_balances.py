"""The balance middleware: credit limits (T04), booked on fulfill, released on reject or
timeout, idempotent on replay, reservations seen by concurrent packets, failing ports."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from connector_harness import network, prepare_to, token

from host.clearing_records import InFlight
from host.connector import InMemoryClearing
from host.connector.middleware import (
    BalanceMiddleware,
    CreditRefused,
    Hold,
    idempotency_key,
    packet_id,
)
from host.ilp import Fulfill, Prepare, Reject, Reply, parse_reply, serialize
from tests.polling import wait_until_async


def test_over_the_credit_limit_is_t04_on_either_side() -> None:
    async def run() -> None:
        async with network(
            [("a", "b"), ("b", "c")],
            routes={"a": [("test.c", "b")]},
            # b lets a owe it at most 20; a lets itself owe b at most 30 (min -30)
            limits={"b": {"a": (-100, 20)}, "a": {"b": (-30, 100)}},
        ) as net:
            a = net["a"].connector
            assert isinstance(await a.handle_prepare(None, prepare_to("test.c", 15)), Fulfill)
            over = await a.handle_prepare(None, prepare_to("test.c", 6))
            assert isinstance(over, Reject)
            assert (over.code, over.triggered_by) == ("T04", "test.b")
            assert isinstance(await a.handle_prepare(None, prepare_to("test.c", 5)), Fulfill)
            assert net["b"].clearing.balances == {"a": 20, "c": -20}

            # a's own limit on what it may owe b: 20 owed, 11 more would make 31
            over = await a.handle_prepare(None, prepare_to("test.b", 11))
            assert isinstance(over, Reject)
            assert (over.code, over.triggered_by) == ("T04", "test.a")
            assert net["a"].clearing.balances == {"b": -20}
            assert net["b"].messages.received == []

    asyncio.run(run())


def test_a_rejected_packet_releases_its_reservation_and_books_nothing() -> None:
    async def run() -> None:
        async with network(
            [("a", "b"), ("b", "c")],
            routes={"a": [("test.c", "b")]},
            limits={"b": {"a": (-100, 10)}},
        ) as net:
            a = net["a"].connector
            for _ in range(3):  # would exceed 10 if reservations leaked
                bad = Prepare(8, prepare_to("test.c", 0).expires_at, bytes(32), "test.c.x")
                reply = await a.handle_prepare(None, bad)
                assert isinstance(reply, Reject) and reply.code == "F06"
            assert net["b"].connector.balances.reserved("a") == (0, 0)
            assert net["b"].connector.balances.reserved("c") == (0, 0)
            assert isinstance(await a.handle_prepare(None, prepare_to("test.c", 10)), Fulfill)
            assert [n.clearing.balances for n in (net["a"], net["b"], net["c"])] == [
                {"b": -10},
                {"a": 10, "c": -10},
                {"b": 10},
            ]

    asyncio.run(run())


def test_a_replayed_prepare_is_answered_but_booked_once() -> None:
    async def run() -> None:
        async with network([("a", "b"), ("b", "c"), ("b", "d")]) as net:
            url = net["b"].connector.url
            from_a = {"Authorization": f"Bearer {token('a', 'b')}"}
            from_c = {"Authorization": f"Bearer {token('c', 'b')}"}
            async with aiohttp.ClientSession() as http:

                async def post(body: bytes, headers: dict[str, str]) -> None:
                    async with http.post(url, data=body, headers=headers) as response:
                        assert isinstance(parse_reply(await response.read()), Fulfill)

                replayed = serialize(prepare_to("test.c.1", 7))
                for _ in range(3):
                    await post(replayed, from_a)
                assert net["b"].clearing.balances == {"a": 7, "c": -7}
                assert net["c"].clearing.balances == {"b": 7}
                assert len(net["c"].clearing.applied) == 1

                # The same bytes from two peers are two packets, on both sides of b.
                shared = serialize(prepare_to("test.d", 5))
                await post(shared, from_a)
                await post(shared, from_c)
            assert net["b"].clearing.balances == {"a": 12, "c": -2, "d": -10}
            assert len(net["b"].clearing.applied) == 6

    asyncio.run(run())


class Gate:
    """A local handler that holds every packet until opened."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.waiting = 0

    async def handle(self, prepare: Prepare) -> Reply:
        self.waiting += 1
        await self.opened.wait()
        return Fulfill(prepare.data[:32])


def test_concurrent_packets_see_each_others_reservations() -> None:
    async def run() -> None:
        gate = Gate()
        async with network(
            [("a", "b")], limits={"b": {"a": (-100, 10)}}, local_handlers={"b": gate}
        ) as net:
            a = net["a"].connector
            first = asyncio.create_task(a.handle_prepare(None, prepare_to("test.b", 6)))
            await wait_until_async(lambda: gate.waiting == 1, "the first packet to be held at b")
            assert net["b"].connector.balances.reserved("a") == (6, 0)
            second = await a.handle_prepare(None, prepare_to("test.b", 6))
            assert isinstance(second, Reject) and second.code == "T04"
            assert "in flight 6" in second.message
            gate.opened.set()
            assert isinstance(await first, Fulfill)
            assert net["b"].clearing.balances == {"a": 6}
            assert net["b"].connector.balances.reserved("a") == (0, 0)

    asyncio.run(run())


# -- the middleware alone, over ports that misbehave ---------------------------------------


class CountingClearing(InMemoryClearing):
    def __init__(self, fail_apply_for: str | None = None, fail_check: bool = False) -> None:
        super().__init__({"x": (-50, 50), "y": (-50, 50)})
        self.checks: list[tuple[str, int]] = []
        self.fail_apply_for = fail_apply_for
        self.fail_check = fail_check

    async def check_credit(self, account_id: str, delta: int) -> bool:
        self.checks.append((account_id, delta))
        if self.fail_check:
            raise ConnectionError("store down")
        return await super().check_credit(account_id, delta)

    async def apply_balance_change(self, account_id: str, delta: int, idempotency_key: str) -> int:
        if account_id == self.fail_apply_for:
            raise ConnectionError("store down")
        return await super().apply_balance_change(account_id, delta, idempotency_key)


def in_flight(hold: Hold, raw: bytes) -> InFlight:
    """The journal's record of a packet held by ``hold`` (ids made from ``raw``)."""
    return InFlight(
        packet_id(hold.source, raw).hex(),
        hold.source,
        b"s" * 32,
        hold.target,
        b"t" * 32,
        hold.amount,
        0.0,
        bytes(32),
    )


def test_amount_zero_skips_the_middleware() -> None:
    async def run() -> None:
        clearing = CountingClearing()
        middleware = BalanceMiddleware(clearing)
        hold = await middleware.reserve("x", "y", 0)
        await middleware.commit(hold, in_flight(hold, b"p"), bytes(32))
        assert clearing.checks == [] and clearing.applied == []

    asyncio.run(run())


def test_checks_include_what_is_in_flight() -> None:
    async def run() -> None:
        clearing = CountingClearing()
        middleware = BalanceMiddleware(clearing)
        first = await middleware.reserve("x", "y", 20)
        second = await middleware.reserve("x", "y", 30)
        assert clearing.checks == [("x", 20), ("y", -20), ("x", 50), ("y", -50)]
        with pytest.raises(CreditRefused, match="credit limit"):
            await middleware.reserve("x", None, 1)
        with pytest.raises(CreditRefused, match="liquidity"):
            await middleware.reserve(None, "y", 1)
        assert middleware.reserved("x") == (50, 0) and middleware.reserved("y") == (0, 50)
        middleware.release(first)
        await middleware.commit(second, in_flight(second, b"p2"), bytes(32))
        assert middleware.reserved("x") == (0, 0) and middleware.reserved("y") == (0, 0)
        assert clearing.balances == {"x": 30, "y": -30}

    asyncio.run(run())


def test_a_failing_credit_check_leaves_no_reservation() -> None:
    async def run() -> None:
        middleware = BalanceMiddleware(CountingClearing(fail_check=True))
        with pytest.raises(ConnectionError):
            await middleware.reserve("x", "y", 5)
        assert middleware.reserved("x") == (0, 0) and middleware.reserved("y") == (0, 0)

    asyncio.run(run())


def test_commit_raises_when_a_side_fails_and_leaves_the_packet_unresolved() -> None:
    async def run() -> None:
        for failing in ("x", "y"):
            clearing = CountingClearing(fail_apply_for=failing)
            middleware = BalanceMiddleware(clearing)
            hold = await middleware.reserve("x", "y", 5)
            packet = in_flight(hold, b"p")
            with pytest.raises(ConnectionError):
                await middleware.commit(hold, packet, bytes(32))
            assert middleware.reserved("x") == (0, 0) and middleware.reserved("y") == (0, 0)
            # The caller answers the source with a Reject and retries the next hop's debit
            # (host.connector.inflight): the packet is not resolved yet.
            assert packet.key not in clearing.journal

    asyncio.run(run())


def test_a_fulfill_that_cannot_be_charged_becomes_a_t00_reject() -> None:
    async def run() -> None:
        async with network([("a", "b")]) as net:
            b = net["b"]
            b.clearing.apply_balance_change = CountingClearing(  # type: ignore[method-assign]
                fail_apply_for="a"
            ).apply_balance_change
            headers = {"Authorization": f"Bearer {token('a', 'b')}"}
            async with (
                aiohttp.ClientSession() as http,
                http.post(
                    b.connector.url, data=serialize(prepare_to("test.b", 5)), headers=headers
                ) as r,
            ):
                reply = parse_reply(await r.read())
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("T00", "test.b")
            assert b.connector.balances.reserved("a") == (0, 0)

    asyncio.run(run())


def test_keys_differ_by_source_side_and_account_and_fit_the_engine() -> None:
    body = b"the same prepare bytes"
    ids = {packet_id(source, body) for source in (None, "a", "b", "local")}
    assert len(ids) == 4
    packet = packet_id("a", body)
    keys = {idempotency_key(packet, side, acct) for side in ("in", "out") for acct in "ab"}
    assert len(keys) == 4
    assert all(len(key) <= 128 and key.isascii() and key.isprintable() for key in keys)
    assert idempotency_key(packet, "in", "a") == idempotency_key(packet_id("a", body), "in", "a")
