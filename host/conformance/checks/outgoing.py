"""Checks of SendMoney: it pays, once per idempotency key, and refuses what is malformed.

Where the suite can see money (on its own ledger both sides of the payment, else GetBalance
when declared) it checks that exactly the amount moved; at least the amount when the ledger
takes fees from the balance GetBalance reports (capability ``fees``), and then that the same key
once more moves nothing at all. Off the suite's ledger, an adaptor that
cannot pay (FAILED_PRECONDITION: no liquidity, peer unknown) is skipped, not failed: the suite
cannot fund a ledger it does not run.
"""

from __future__ import annotations

import asyncio

import grpc

from host.conformance.checks.registry import NEVER, OTHER, PEER, Code, check, expect, fail_if
from host.conformance.report import CheckFailed, CheckSkipped
from host.conformance.session import Balances, Session
from sdk import amount
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2


def _request(
    session: Session,
    value: int | str,
    *,
    key: str,
    account_id: str = PEER,
    scale: int | None = None,
) -> adaptor_pb2.SendMoneyRequest:
    return adaptor_pb2.SendMoneyRequest(
        account_id=account_id, amount=session.amount(value, scale), idempotency_key=key
    )


async def _pay(
    session: Session, request: adaptor_pb2.SendMoneyRequest
) -> adaptor_pb2.SendMoneyResponse:
    """SendMoney that must succeed; CheckSkipped when the adaptor cannot pay off our ledger."""
    try:
        reply: adaptor_pb2.SendMoneyResponse = await session.adaptor.SendMoney(
            request, timeout=session.options.call_timeout
        )
    except grpc.aio.AioRpcError as exc:
        status = f"SendMoney answered {exc.code().name}: {exc.details()}"
        if exc.code() == Code.FAILED_PRECONDITION and not session.on_suite_ledger:
            raise CheckSkipped(
                f"the adaptor cannot pay here ({status}); the suite funds accounts only on its "
                "own ledger"
            ) from exc
        raise CheckFailed(status) from exc
    return reply


def _difference(larger: int | None, smaller: int | None) -> int | None:
    return None if larger is None or smaller is None else larger - smaller


async def _paid_once(session: Session, before: Balances, value: int) -> str:
    """Check the money moved by exactly ``value`` since ``before`` (polled while less moved: a
    PENDING payment may land later); what was seen."""
    if not before.observable:
        return "(payments not observable: not on the suite's ledger, no balance capability)"
    latest = before
    fees = before.peer is None and "fees" in session.capabilities

    def moved(now: Balances) -> tuple[int | None, int | None]:
        """(what left the adaptor's account, what reached the peer's), None where unseen."""
        return _difference(before.adaptor, now.adaptor), _difference(now.peer, before.peer)

    async def settled() -> bool:
        nonlocal latest
        latest = await session.balances(PEER)
        return all(m is None or m >= value for m in moved(latest))

    await session.poll(settled, session.options.event_timeout)
    paid, got = moved(latest)
    problems = []
    if paid is not None and (paid < value if fees else paid != value):
        problems.append(f"the adaptor's settlement account went down by {paid}, not {value}")
    if got is not None and got != value:
        problems.append(f"the peer's ledger account received {got}, not {value}")
    fail_if(problems)
    if got is not None:
        return f"paid {value} once (on the ledger)"
    return f"paid {value} once (by GetBalance{', with the fees' if fees else ''})"


async def _pays_nothing_more(session: Session, request: adaptor_pb2.SendMoneyRequest) -> str:
    """With fees, "paid once" is "at least the amount": check besides that the key once more,
    after its payment is seen, moves nothing (watched for the quiet period)."""
    settled = await session.balances(PEER)
    await session.call("SendMoney", request)
    quiet = session.options.quiet_period
    await asyncio.sleep(quiet)
    after = await session.balances(PEER)
    if after != settled:
        raise CheckFailed(f"the same key once more moved money: {settled} became {after}")
    return f"the key once more moved nothing in {quiet:g} s"


@check(
    "send_money.idempotent",
    "SendMoney pays; the same key again answers the same settlement id and pays nothing more",
    requires=("send_money",),
)
async def send_idempotent(session: Session) -> str:
    await session.ensure_account(PEER)
    value = 123
    before = await session.balances(PEER)
    request = _request(session, value, key=session.new_key())
    first = await _pay(session, request)
    problems = []
    if not first.settlement_id:
        problems.append("SendMoney answered an empty settlement_id")
    if first.status == adaptor_pb2.SETTLEMENT_STATUS_UNSPECIFIED:
        problems.append("SendMoney answered status SETTLEMENT_STATUS_UNSPECIFIED")
    second: adaptor_pb2.SendMoneyResponse = await session.call("SendMoney", request)
    if second.settlement_id != first.settlement_id:
        problems.append(
            f"the same key answered settlement {first.settlement_id!r}, then "
            f"{second.settlement_id!r}: a retry must return the first result"
        )
    try:
        seen = await _paid_once(session, before, value)
        if before.peer is None and "fees" in session.capabilities:
            seen += "; " + await _pays_nothing_more(session, request)
    except CheckFailed as exc:
        problems.append(str(exc))
    fail_if(problems)
    return f"settlement {first.settlement_id!r} twice; {seen}"


@check(
    "send_money.key_conflict",
    "SendMoney with a used key and another amount or account: ALREADY_EXISTS, nothing paid",
    requires=("send_money",),
)
async def send_key_conflict(session: Session) -> str:
    await session.ensure_account(PEER)
    await session.ensure_account(OTHER)
    key, value = session.new_key(), 100
    before = await session.balances(PEER)
    await _pay(session, _request(session, value, key=key))
    problems: list[str] = []
    for what, request in (
        ("the same key with another amount", _request(session, value + 1, key=key)),
        ("the same key with another account", _request(session, value, key=key, account_id=OTHER)),
    ):
        expect(await session.status("SendMoney", request), Code.ALREADY_EXISTS, what, problems)
    fail_if(problems)
    seen = await _paid_once(session, before, value)
    return f"ALREADY_EXISTS for another amount and another account; {seen}"


@check(
    "send_money.invalid",
    "SendMoney refuses malformed amounts and keys (INVALID_ARGUMENT) and unknown accounts "
    "(NOT_FOUND), and pays nothing",
    requires=("send_money",),
)
async def send_invalid(session: Session) -> str:
    await session.ensure_account(PEER)
    scale = session.info.asset_scale
    wrong = scale + 1 if scale < amount.MAX_SCALE else scale - 1
    invalid = Code.INVALID_ARGUMENT
    cases = (
        ("a zero amount", _request(session, 0, key=session.new_key()), invalid),
        ("a negative amount", _request(session, "-100", key=session.new_key()), invalid),
        ("a fractional amount", _request(session, "1.5", key=session.new_key()), invalid),
        ("79 digits", _request(session, "1" + "0" * 78, key=session.new_key()), invalid),
        ("an empty amount", _request(session, "", key=session.new_key()), invalid),
        (
            f"scale {wrong} (the ledger's is {scale})",
            _request(session, 100, key=session.new_key(), scale=wrong),
            invalid,
        ),
        ("an empty idempotency key", _request(session, 100, key=""), invalid),
        (
            "an account never set up",
            _request(session, 100, key=session.new_key(), account_id=NEVER),
            Code.NOT_FOUND,
        ),
    )
    before = await session.balances(PEER)
    problems: list[str] = []
    for what, request, expected in cases:
        expect(await session.status("SendMoney", request), expected, what, problems)
    after = await session.balances(PEER)
    if after != before:
        problems.append(f"money moved: balances were {before}, are {after}")
    fail_if(problems)
    return f"{len(cases)} malformed requests refused, nothing paid"
