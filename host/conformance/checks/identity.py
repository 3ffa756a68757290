"""Checks of what the adaptor says of itself and its ledger: GetInfo, Probe, GetBalance."""

from __future__ import annotations

from typing import Final

from host.conformance.checks.registry import check, fail_if
from host.conformance.report import CheckFailed
from host.conformance.session import Phase, Session
from host.conformance.world import ADAPTOR_LEDGER_ACCOUNT
from sdk import amount
from sdk.connectivity import Connectivity
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2

KNOWN_CAPABILITIES: Final = frozenset(
    {"send_money", "receive_money", "data", "balance", "accounts", "fees"}
)


@check(
    "get_info",
    "GetInfo: every field present, known capabilities, the negotiated version, read-only",
    needs=Phase.CONNECTED,
)
async def get_info(session: Session) -> str:
    info: adaptor_pb2.GetInfoResponse = await session.call("GetInfo", adaptor_pb2.GetInfoRequest())
    problems = [
        f"{name} is empty"
        for name in ("name", "version", "ledger", "asset_code")
        if not getattr(info, name)
    ]
    if info.asset_scale > amount.MAX_SCALE:
        problems.append(f"asset_scale {info.asset_scale} is above {amount.MAX_SCALE}")
    unknown = sorted(set(info.capabilities) - KNOWN_CAPABILITIES)
    if unknown:
        problems.append(
            f"unknown capabilities {unknown} (the contract knows {sorted(KNOWN_CAPABILITIES)})"
        )
    if len(set(info.capabilities)) != len(info.capabilities):
        problems.append(f"capabilities repeat: {list(info.capabilities)}")
    negotiated = session.handshake.app_version if session.handshake else None
    if negotiated not in info.contract_versions:
        problems.append(
            f"contract_versions {list(info.contract_versions)} lacks the negotiated {negotiated}"
        )
    again = await session.call("GetInfo", adaptor_pb2.GetInfoRequest())
    if again != info:
        problems.append("a second GetInfo answered differently")
    fail_if(problems)
    return (
        f"{info.name} {info.version}, ledger {info.ledger}, {info.asset_code} at scale "
        f"{info.asset_scale}, capabilities [{' '.join(info.capabilities)}], contract versions "
        f"{list(info.contract_versions)}"
    )


@check("probe", "Probe answers; connections have unique names and legal states")
async def probe(session: Session) -> str:
    reply: adaptor_pb2.ProbeResponse = await session.call("Probe", adaptor_pb2.ProbeRequest())
    problems, names = [], set()
    legal = {int(state) for state in Connectivity}
    for connection in reply.connections:
        if not connection.name:
            problems.append("a connection has no name")
        elif connection.name in names:
            problems.append(f"two connections are named {connection.name!r}")
        names.add(connection.name)
        if connection.state not in legal:
            problems.append(f"connection {connection.name!r} has state {connection.state}")
    fail_if(problems)
    ready = str(reply.ready.value).lower() if reply.HasField("ready") else "unset"
    shown = ", ".join(f"{c.name} {Connectivity(c.state).name}" for c in reply.connections) or "none"
    return f"ready {ready}; connections: {shown}"


@check(
    "get_balance", "GetBalance answers a valid amount at the ledger's scale", requires=("balance",)
)
async def get_balance(session: Session) -> str:
    reply: adaptor_pb2.GetBalanceResponse = await session.call(
        "GetBalance", adaptor_pb2.GetBalanceRequest()
    )
    try:
        value = amount.unsigned_of(reply.balance, "balance")
    except amount.AmountError as exc:
        raise CheckFailed(str(exc)) from exc
    scale = session.info.asset_scale
    if reply.balance.scale != scale:
        raise CheckFailed(
            f"balance at scale {reply.balance.scale}; the ledger's (GetInfo) is {scale}"
        )
    ledger = session.world.ledger
    if ledger is not None and session.on_suite_ledger:
        on_ledger = await ledger.balance(ADAPTOR_LEDGER_ACCOUNT)
        if value != on_ledger:
            raise CheckFailed(f"GetBalance says {value}; the ledger says {on_ledger}")
        return f"{value} at scale {scale}, as on the ledger"
    return f"{value} at scale {scale}"
