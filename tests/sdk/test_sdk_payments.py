"""sdk.Payments over both PaymentStores: each idempotency key pays once, a reuse with other
content is a Conflict, a refusal leaves nothing behind, an unknown outcome keeps the claim."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

import sdk

REQUEST = sdk.SendMoney(account_id="bob", amount=500, scale=2, idempotency_key="k1")
OTHER = sdk.SendMoney(account_id="bob", amount=501, scale=2, idempotency_key="k1")


class Ledger:
    """A payment function that counts its calls and fails as told."""

    def __init__(self) -> None:
        self.paid: list[sdk.SendMoney] = []
        self.fail: sdk.AdaptorError | None = None
        self.completed = True
        self.gate: asyncio.Event | None = None

    async def pay(self, request: sdk.SendMoney) -> sdk.Sent:
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        self.paid.append(request)
        return sdk.Sent(f"tx-{len(self.paid)}", completed=self.completed)


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(30):
            await body()

    asyncio.run(bounded())


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_key_pays_once_and_refuses_other_content(kind: str, tmp_path: Path) -> None:
    async def body() -> None:
        payments = make(kind, tmp_path)
        ledger = Ledger()
        first = await payments.once(REQUEST, ledger.pay)
        assert await payments.once(REQUEST, ledger.pay) == first == sdk.Sent("tx-1")
        assert ledger.paid == [REQUEST]
        for other in (
            OTHER,
            sdk.SendMoney("carol", 500, 2, "k1"),
            sdk.SendMoney("bob", 500, 3, "k1"),
        ):
            with pytest.raises(sdk.Conflict, match="'k1' was used for 500 at scale 2 to 'bob'"):
                await payments.once(other, ledger.pay)
        assert ledger.paid == [REQUEST]

    run(body)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("refusal", [sdk.Refused("no liquidity"), sdk.NotFound("no such account")])
def test_a_refusal_gives_the_key_back(kind: str, refusal: sdk.AdaptorError, tmp_path: Path) -> None:
    async def body() -> None:
        payments = make(kind, tmp_path)
        ledger = Ledger()
        ledger.fail = refusal
        with pytest.raises(type(refusal)):
            await payments.once(REQUEST, ledger.pay)
        ledger.fail = None
        assert await payments.once(OTHER, ledger.pay) == sdk.Sent("tx-1")  # the key was free
        assert ledger.paid == [OTHER]

    run(body)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
@pytest.mark.parametrize("failure", [sdk.Unavailable("ledger down"), sdk.AdaptorError("odd")])
def test_an_unknown_outcome_keeps_the_claim_and_pays_again_through_pay(
    kind: str, failure: sdk.AdaptorError, tmp_path: Path
) -> None:
    async def body() -> None:
        payments = make(kind, tmp_path)
        ledger = Ledger()
        ledger.fail = failure
        with pytest.raises(type(failure)):
            await payments.once(REQUEST, ledger.pay)
        ledger.fail = None
        with pytest.raises(sdk.Conflict):
            await payments.once(OTHER, ledger.pay)
        assert await payments.once(REQUEST, ledger.pay) == sdk.Sent("tx-1")

    run(body)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_the_same_key_while_its_payment_runs_is_unavailable(kind: str, tmp_path: Path) -> None:
    async def body() -> None:
        payments = make(kind, tmp_path)
        ledger = Ledger()
        ledger.gate = asyncio.Event()
        running = asyncio.create_task(payments.once(REQUEST, ledger.pay))
        await asyncio.sleep(0)
        with pytest.raises(sdk.Unavailable, match="in progress; retry with the same key"):
            await payments.once(REQUEST, ledger.pay)
        ledger.gate.set()
        assert await running == sdk.Sent("tx-1")
        assert await payments.once(REQUEST, ledger.pay) == sdk.Sent("tx-1")
        assert ledger.paid == [REQUEST]

    run(body)


@pytest.mark.parametrize("kind", ["memory", "sqlite"])
def test_a_pending_payment_is_asked_again(kind: str, tmp_path: Path) -> None:
    async def body() -> None:
        payments = make(kind, tmp_path)
        ledger = Ledger()
        ledger.completed = False
        assert await payments.once(REQUEST, ledger.pay) == sdk.Sent("tx-1", completed=False)
        ledger.completed = True
        assert await payments.once(REQUEST, ledger.pay) == sdk.Sent("tx-2")
        assert await payments.once(REQUEST, ledger.pay) == sdk.Sent("tx-2")
        assert len(ledger.paid) == 2

    run(body)


def test_the_sqlite_store_remembers_across_a_reopen(tmp_path: Path) -> None:
    async def body() -> None:
        path = tmp_path / "payments.db"
        store = sdk.SqlitePaymentStore(path)
        ledger = Ledger()
        await sdk.Payments(store).once(REQUEST, ledger.pay)
        unknown = sdk.SendMoney("bob", 7, 2, "k2 with a space")
        ledger.fail = sdk.Unavailable("down")
        with pytest.raises(sdk.Unavailable):
            await sdk.Payments(store).once(unknown, ledger.pay)
        store.close()

        reopened = sdk.SqlitePaymentStore(path)
        assert await reopened.claim(OTHER) == sdk.PaymentRecord(REQUEST, sdk.Sent("tx-1"))
        assert await reopened.claim(unknown) == sdk.PaymentRecord(unknown, None)
        big = sdk.SendMoney("bob", 10**77, 18, "k3")
        assert (await reopened.claim(big)).request == big
        reopened.close()

    run(body)


def make(kind: str, tmp_path: Path) -> sdk.Payments:
    if kind == "memory":
        return sdk.Payments(sdk.MemoryPaymentStore())
    return sdk.Payments(sdk.SqlitePaymentStore(tmp_path / f"{kind}.db"))
