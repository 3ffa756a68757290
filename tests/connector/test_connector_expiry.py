"""Expiry decisions (pure), then on real sockets: the expiry each hop sees, R02, and R00 when
the next hop never answers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from connector_harness import network, prepare_to

from host.connector import ExpiryPolicy
from host.connector.expiry import Forward, Refuse, check_expired, forwarding
from host.ilp import ErrorCode, Fulfill, Prepare, Reject, Reply
from sdk.connectivity import Connectivity

NOW = datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=UTC)
POLICY = ExpiryPolicy()  # margin 1 s, safety margin 1 s, max hold 30 s


def at(seconds: float) -> datetime:
    return NOW + timedelta(seconds=seconds)


def test_an_expired_prepare_is_r00() -> None:
    for expires in (at(0), at(-0.001), at(-60)):
        decision = forwarding(expires, NOW, POLICY)
        assert isinstance(decision, Refuse)
        assert decision.code == ErrorCode.R00_TRANSFER_TIMED_OUT
        assert check_expired(expires, NOW) == decision
    assert check_expired(at(0.001), NOW) is None


@pytest.mark.parametrize("left", [0.001, 1.0, 1.999])
def test_too_little_time_to_forward_is_r02(left: float) -> None:
    decision = forwarding(at(left), NOW, POLICY)
    assert isinstance(decision, Refuse)
    assert decision.code == ErrorCode.R02_INSUFFICIENT_TIMEOUT
    assert "forwarding needs at least 2.000 s" in decision.message


def test_the_forwarded_expiry_keeps_our_margin_and_the_wait_ends_with_it() -> None:
    assert forwarding(at(2), NOW, POLICY) == Forward(at(1), 1.0)
    assert forwarding(at(2.001), NOW, POLICY) == Forward(at(1.001), 1.001)
    assert forwarding(at(10), NOW, POLICY) == Forward(at(9), 9.0)


def test_the_forwarded_expiry_is_capped_at_max_hold() -> None:
    assert forwarding(at(3600), NOW, POLICY) == Forward(at(30), 30.0)


def test_the_forwarded_expiry_is_whole_milliseconds_rounded_down() -> None:
    now = NOW + timedelta(microseconds=400)  # the clock is finer than the wire
    decision = forwarding(at(3600), now, POLICY)
    assert isinstance(decision, Forward)
    assert decision.expires_at == at(30)
    assert decision.timeout == pytest.approx(29.9996)


def test_policy_is_checked() -> None:
    with pytest.raises(ValueError, match="negative"):
        ExpiryPolicy(margin=timedelta(seconds=-1))
    with pytest.raises(ValueError, match="max_hold"):
        ExpiryPolicy(max_hold=timedelta(seconds=1))


class ExpiryRecorder:
    """A local handler that records the Prepares it gets and fulfills them."""

    def __init__(self) -> None:
        self.seen: list[Prepare] = []

    async def handle(self, prepare: Prepare) -> Reply:
        self.seen.append(prepare)
        return Fulfill(prepare.data[:32])


def test_each_hop_forwards_with_an_earlier_expiry() -> None:
    async def run() -> None:
        recorder = ExpiryRecorder()
        async with network(
            [("a", "b"), ("b", "c")],
            routes={"a": [("test.c", "b")]},
            local_handlers={"c": recorder},
        ) as net:
            prepare = prepare_to("test.c.x", 5, lifetime=timedelta(seconds=20))
            reply = await net["a"].connector.handle_prepare(None, prepare)
            assert isinstance(reply, Fulfill)
            [seen] = recorder.seen
            assert seen.expires_at == prepare.expires_at - timedelta(seconds=2)
            assert (seen.amount, seen.destination, seen.data) == (5, "test.c.x", prepare.data)

            short = prepare_to("test.c.x", 5, lifetime=timedelta(seconds=1.5))
            reply = await net["a"].connector.handle_prepare(None, short)
            assert isinstance(reply, Reject)
            assert (reply.code, reply.triggered_by) == ("R02", "test.a")
            assert len(recorder.seen) == 1
            assert net["a"].clearing.balances == {"b": -5}

    asyncio.run(run())


def test_a_next_hop_that_never_answers_gets_r00_from_us_and_a_failed_link() -> None:
    async def run() -> None:
        release = asyncio.Event()

        async def hang(request: web.Request) -> web.Response:
            await release.wait()
            return web.Response(status=503)

        app = web.Application()
        app.router.add_post("/", hang)
        runner = web.AppRunner(app, shutdown_timeout=0.1)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            policy = ExpiryPolicy(
                margin=timedelta(seconds=0.5), safety_margin=timedelta(seconds=0.2)
            )
            async with network(
                [("a", "b")],
                url_overrides={("a", "b"): f"http://127.0.0.1:{port}/"},
                expiry=policy,
            ) as net:
                prepare = prepare_to("test.b.x", 7, lifetime=timedelta(seconds=1.5))
                reply = await net["a"].connector.handle_prepare(None, prepare)
                assert isinstance(reply, Reject)
                assert (reply.code, reply.triggered_by) == ("R00", "test.a")
                link = net["a"].connector.links.state("b")
                assert link.state == Connectivity.TRANSIENT_FAILURE
                assert "no reply" in link.last_error
                assert net["a"].clearing.balances == {}
                # b may have fulfilled it all the same: until b says what became of it (or it
                # expired and b says it never saw it), its amount stays reserved on b's side.
                (waiting,) = net["a"].connector.inflight.waiting()
                assert (waiting.packet.target, waiting.packet.amount) == ("b", 7)
                assert net["a"].connector.balances.reserved("b") == (0, 7)
        finally:
            release.set()
            await runner.cleanup()

    asyncio.run(run())
