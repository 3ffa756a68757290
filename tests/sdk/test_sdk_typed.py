"""sdk.LedgerAdaptor served in this process over a real unix socket: requests checked before
the typed methods run, every sdk.errors refusal answered with its status, a bug with INTERNAL
and a traceback in the log; and the request checks of sdk.requests on their own."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import pytest

import sdk
from sdk import amount, contract, requests, stdio
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2 as apb
from sdk.pb.ilphost.types.v1 import types_pb2
from sdk.testing import serve_in_process
from tests.grpc_status import ended


def run(body: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:
        async with asyncio.timeout(60):
            await body()

    asyncio.run(bounded())


def test_the_checks_name_the_field_and_raise_one_error_type() -> None:
    assert requests.check_account_id("bob.B-1_~") == "bob.B-1_~"
    assert requests.check_idempotency_key("settle now: #42") == "settle now: #42"
    for check, bad, words in (
        (requests.check_account_id, "bad id", "account_id must be 1 to 128"),
        (requests.check_idempotency_key, "k" * 129, "idempotency_key must be 1 to 128"),
        (requests.check_acknowledged_id, "", "settlement_id is empty"),
    ):
        with pytest.raises(sdk.InvalidRequest, match=words):
            check(bad)
    assert requests.check_data(b"x" * contract.MAX_DATA_BYTES)
    with pytest.raises(sdk.InvalidRequest, match="32768 bytes, at most 32767"):
        requests.check_data(b"x" * (contract.MAX_DATA_BYTES + 1))
    payment = types_pb2.Amount(value="5", scale=2)
    assert requests.check_payment(payment, 2) == 5
    for value, scale, words in (
        ("0", 2, "greater than zero"),
        ("5", 3, "the ledger's scale 2, got 3"),
        ("-5", 2, "must not be negative"),
    ):
        with pytest.raises(sdk.InvalidRequest, match=words):
            requests.check_payment(types_pb2.Amount(value=value, scale=scale), 2)
    assert issubclass(amount.AmountError, sdk.InvalidRequest)
    assert sdk.InvalidRequest.code == grpc.StatusCode.INVALID_ARGUMENT
    assert contract.is_adaptor_name("simledger-go_2.x")
    assert not contract.is_adaptor_name("a/b") and not contract.is_adaptor_name("a" * 65)


class Scripted(sdk.LedgerAdaptor):
    """Raises what the test puts in ``raises``; records what its methods were given."""

    def __init__(self) -> None:
        super().__init__()
        self.raises: BaseException | None = None
        self.calls: list[Any] = []
        self.reply = b"pong"

    def _step(self, call: Any) -> None:
        self.calls.append(call)
        if self.raises is not None:
            raise self.raises

    async def info(self) -> sdk.Info:
        return sdk.Info("scripted", "1", "test", "USD", 2, ("send_money", "data", "accounts"))

    async def setup_account(self, account_id: str) -> None:
        self._step(("setup", account_id))

    async def send_money(self, request: sdk.SendMoney) -> sdk.Sent:
        self._step(request)
        return sdk.Sent(f"paid-{request.idempotency_key}", completed=request.amount < 100)

    async def receive_data(self, message: sdk.PeerMessage) -> bytes:
        self._step(message)
        return self.reply


def send(value: str = "5", scale: int = 2, key: str = "k", account: str = "bob") -> Any:
    return apb.SendMoneyRequest(
        account_id=account,
        amount=types_pb2.Amount(value=value, scale=scale),
        idempotency_key=key,
    )


def test_typed_methods_get_checked_requests_and_their_answers_go_back() -> None:
    adaptor = Scripted()

    async def body() -> None:
        async with serve_in_process(adaptor) as client:
            info = await client.adaptor.GetInfo(apb.GetInfoRequest())
            assert (info.name, info.asset_scale, list(info.contract_versions)) == (
                "scripted",
                2,
                [1],
            )
            done = await client.adaptor.SendMoney(send("5", key="a key"))
            assert (done.settlement_id, done.status) == (
                "paid-a key",
                apb.SETTLEMENT_STATUS_COMPLETED,
            )
            pending = await client.adaptor.SendMoney(send("100", key="b"))
            assert pending.status == apb.SETTLEMENT_STATUS_PENDING
            assert adaptor.calls == [
                sdk.SendMoney("bob", 5, 2, "a key"),
                sdk.SendMoney("bob", 100, 2, "b"),
            ]
            reply = await client.adaptor.ReceiveData(
                apb.ReceiveDataRequest(account_id="bob", data=b"ping")
            )
            assert reply.data == b"pong"
            assert adaptor.calls[-1] == sdk.PeerMessage("bob", b"ping")
            # Not overridden: the account methods are no-ops, the others UNIMPLEMENTED.
            await client.adaptor.DeleteAccount(apb.DeleteAccountRequest(account_id="bob"))
            assert await ended(client.adaptor.GetBalance(apb.GetBalanceRequest())) == (
                grpc.StatusCode.UNIMPLEMENTED,
                "Scripted does not implement LedgerAdaptor.GetBalance",
            )
            probe = await client.adaptor.Probe(apb.ProbeRequest())
            assert probe.ready.value and list(probe.connections) == []

    run(body)


def test_malformed_requests_are_refused_before_the_adaptor_sees_them() -> None:
    adaptor = Scripted()

    async def body() -> None:
        async with serve_in_process(adaptor) as client:
            stub = client.adaptor
            for call in (
                stub.SendMoney(send("0")),
                stub.SendMoney(send("5", scale=3)),
                stub.SendMoney(send("05")),
                stub.SendMoney(send(key="")),
                stub.SendMoney(send(key="tab\t")),
                stub.SendMoney(send(account="bad id")),
                stub.SetupAccount(apb.SetupAccountRequest(account_id="")),
                stub.ReceiveMoney(apb.ReceiveMoneyRequest(settlement_id="")),
                stub.ReceiveData(apb.ReceiveDataRequest(account_id="bob", data=b"x" * 32768)),
            ):
                assert (await ended(call))[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert adaptor.calls == []
            # The default receive_money: ids are those reported on self.events.
            code, details = await ended(
                stub.ReceiveMoney(apb.ReceiveMoneyRequest(settlement_id="x"))
            )
            assert (code, "'x'" in details) == (grpc.StatusCode.NOT_FOUND, True)
            adaptor.events.report_incoming(sdk.Incoming("x", "bob", 5, 2))
            for _ in range(2):
                await stub.ReceiveMoney(apb.ReceiveMoneyRequest(settlement_id="x"))
            assert adaptor.events.settlements.is_acknowledged("x")

    run(body)


@pytest.mark.parametrize(
    ("raised", "code"),
    [
        (sdk.InvalidRequest("bad"), grpc.StatusCode.INVALID_ARGUMENT),
        (sdk.NotFound("bad"), grpc.StatusCode.NOT_FOUND),
        (sdk.Conflict("bad"), grpc.StatusCode.ALREADY_EXISTS),
        (sdk.Refused("bad"), grpc.StatusCode.FAILED_PRECONDITION),
        (sdk.Unavailable("bad"), grpc.StatusCode.UNAVAILABLE),
        (sdk.AdaptorError("bad"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_refusal_is_its_status_with_its_message(
    raised: sdk.AdaptorError, code: grpc.StatusCode
) -> None:
    adaptor = Scripted()
    adaptor.raises = raised

    async def body() -> None:
        async with serve_in_process(adaptor) as client:
            assert await ended(client.adaptor.SendMoney(send())) == (code, "bad")
            setup = client.adaptor.SetupAccount(apb.SetupAccountRequest(account_id="bob"))
            assert await ended(setup) == (code, "bad")

    run(body)


def test_a_bug_is_internal_and_logged_with_its_traceback_a_mistake_is_one_warning() -> None:
    adaptor = Scripted()
    adaptor.raises = KeyError("oops")
    log = io.StringIO()
    handler = stdio.install_hclog(log)

    async def body() -> None:
        async with serve_in_process(adaptor) as client:
            code, details = await ended(client.adaptor.SendMoney(send()))
            assert code == grpc.StatusCode.INTERNAL
            assert details == "Scripted failed in SendMoney (KeyError); its log has the traceback"
            adaptor.raises = None
            await ended(client.adaptor.SendMoney(send(account="bad id")))
            adaptor.reply = b"x" * 32768
            call = client.adaptor.ReceiveData(apb.ReceiveDataRequest(account_id="bob"))
            code, details = await ended(call)
            assert (code, "replied 32768 bytes" in details) == (grpc.StatusCode.INTERNAL, True)

    try:
        run(body)
    finally:
        logging.getLogger().removeHandler(handler)
    records = [json.loads(line) for line in log.getvalue().splitlines() if line.startswith("{")]
    failed = [r for r in records if r.get("@message") == "SendMoney failed"]
    assert len(failed) == 1 and "Traceback" in failed[0]["stacktrace"]
    (refused,) = [r for r in records if r.get("@message") == "SendMoney refused"]
    assert (refused["@level"], refused["status"]) == ("warn", "INVALID_ARGUMENT")
    assert "stacktrace" not in refused


class Untyped(sdk.LedgerAdaptor):
    async def info(self) -> sdk.Info:
        raise sdk.Unavailable("the ledger has not answered yet")


def test_an_adaptor_that_does_not_pay_says_unimplemented_before_any_check() -> None:
    async def body() -> None:
        async with serve_in_process(Untyped()) as client:
            expected = "Untyped does not implement LedgerAdaptor"
            for rpc, request in (
                ("SendMoney", send(account="bad id")),
                ("ReceiveData", apb.ReceiveDataRequest(account_id="bad id")),
            ):
                call = getattr(client.adaptor, rpc)(request)
                assert await ended(call) == (grpc.StatusCode.UNIMPLEMENTED, f"{expected}.{rpc}")
            assert await ended(client.adaptor.GetInfo(apb.GetInfoRequest())) == (
                grpc.StatusCode.UNAVAILABLE,
                "the ledger has not answered yet",
            )

    run(body)


def test_send_money_checks_the_form_before_asking_the_ledger_its_scale() -> None:
    class Down(Scripted):
        async def info(self) -> sdk.Info:
            raise sdk.Unavailable("ledger down")

    async def body() -> None:
        async with serve_in_process(Down()) as client:
            invalid = await ended(client.adaptor.SendMoney(send("-1")))
            assert invalid[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert await ended(client.adaptor.SendMoney(send())) == (
                grpc.StatusCode.UNAVAILABLE,
                "ledger down",
            )

    run(body)
