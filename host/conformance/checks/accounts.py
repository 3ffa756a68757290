"""Checks of SetupAccount and DeleteAccount: idempotent, strict about ids, and forgetting."""

from __future__ import annotations

from host.conformance.checks.registry import FORGOTTEN, NEVER, PEER, Code, check, expect, fail_if
from host.conformance.report import CheckFailed
from host.conformance.session import Session
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2


@check("setup_account.idempotent", "SetupAccount twice for one account: OK both times")
async def setup_idempotent(session: Session) -> str:
    request = adaptor_pb2.SetupAccountRequest(account_id=PEER)
    for attempt in ("first", "second"):
        code, details = await session.status("SetupAccount", request)
        if code != Code.OK:
            raise CheckFailed(
                f"the {attempt} SetupAccount({PEER!r}) answered {code.name}: {details}"
            )
        session.set_up_account(PEER)
    return f"SetupAccount({PEER!r}) twice: OK"


@check("setup_account.invalid", "SetupAccount with a malformed account id: INVALID_ARGUMENT")
async def setup_invalid(session: Session) -> str:
    problems: list[str] = []
    for what, account_id in (
        ("an empty id", ""),
        ("an id with a space and '!'", "bad id!"),
        ("an id with a slash", "a/b"),
        ("an id of 129 characters", "a" * 129),
    ):
        got = await session.status(
            "SetupAccount", adaptor_pb2.SetupAccountRequest(account_id=account_id)
        )
        if got[0] == Code.OK:
            session.set_up_account(account_id)  # so that the cleanup deletes it
        expect(got, Code.INVALID_ARGUMENT, what, problems)
    fail_if(problems)
    return "4 malformed ids refused"


@check("delete_account", "DeleteAccount is idempotent, OK for an unknown account, and forgets")
async def delete_account(session: Session) -> str:
    await session.ensure_account(FORGOTTEN)
    problems: list[str] = []
    for what, account_id in (
        ("DeleteAccount", FORGOTTEN),
        ("DeleteAccount again", FORGOTTEN),
        ("DeleteAccount of an account never set up", NEVER),
    ):
        got = await session.status(
            "DeleteAccount", adaptor_pb2.DeleteAccountRequest(account_id=account_id)
        )
        expect(got, Code.OK, what, problems)
    session.forget_account(FORGOTTEN)
    seen = "deleted twice: OK; unknown: OK"
    if {"accounts", "send_money"} <= session.capabilities:
        request = adaptor_pb2.SendMoneyRequest(
            account_id=FORGOTTEN, amount=session.amount(1), idempotency_key=session.new_key()
        )
        expect(
            await session.status("SendMoney", request),
            Code.NOT_FOUND,
            "SendMoney to the deleted account",
            problems,
        )
        seen += "; SendMoney to it: NOT_FOUND"
    fail_if(problems)
    return seen
