"""What the ``ilp-host`` commands print: the adaptor table of ``status`` and its one-line change
notes, the ``accounts``, ``settlements`` and ``peers`` tables, and ``send``'s lines. Pure.

Works on the admin API's messages (what the CLI receives), with ``now`` passed in so that
ages are testable::

    NAME      KIND               STATE    SINCE  PID    ATTEMPTS  LAST ERROR
    memory    adaptor            SERVING  12s    4242   0         -
      host    host-channel       READY    12s    -      0         -
      ledger  settlement-system  READY    11s    -      0         -
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from host.pb.ilphost.admin.v1 import admin_pb2
from sdk.pb.ilphost.types.v1 import types_pb2

HEADER = ("NAME", "KIND", "STATE", "SINCE", "PID", "ATTEMPTS", "LAST ERROR")
EMPTY = "-"


def format_age(seconds: float) -> str:
    """A short age: ``12s``, ``3m04s``, ``2h05m``, ``3d04h`` (negative clock skew: ``0s``)."""
    whole = max(0, int(seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600:02d}h"


def process_state_name(state: int) -> str:
    """``SERVING`` for PROCESS_STATE_SERVING; the number if the value is unknown."""
    return _enum_name(admin_pb2.ProcessState, state, "PROCESS_STATE_")


def connectivity_name(state: int) -> str:
    """``READY`` for CONNECTIVITY_STATE_READY; the number if the value is unknown."""
    return _enum_name(types_pb2.ConnectivityState, state, "CONNECTIVITY_STATE_")


def _enum_name(enum: object, value: int, prefix: str) -> str:
    try:
        name: str = enum.Name(value)  # type: ignore[attr-defined]
    except ValueError:
        return str(value)
    return name.removeprefix(prefix)


def _age(since: Timestamp, has_since: bool, now: datetime) -> str:
    if not has_since:
        return EMPTY
    return format_age((now - since.ToDatetime(tzinfo=now.tzinfo)).total_seconds())


def one_line(text: str) -> str:
    """``text`` on one line (errors may span several), ``-`` if empty."""
    return " ".join(text.split()) or EMPTY


def status_rows(adaptors: Sequence[admin_pb2.Adaptor], now: datetime) -> list[tuple[str, ...]]:
    """The table's rows (header first): each adaptor, then its connections indented."""
    rows: list[tuple[str, ...]] = [HEADER]
    for adaptor in adaptors:
        rows.append(
            (
                adaptor.name,
                "adaptor",
                process_state_name(adaptor.state),
                _age(adaptor.since, adaptor.HasField("since"), now),
                str(adaptor.pid) if adaptor.pid else EMPTY,
                str(adaptor.attempts),
                one_line(adaptor.last_error),
            )
        )
        for connection in adaptor.connections:
            rows.append(
                (
                    f"  {connection.name}",
                    connection.kind or EMPTY,
                    connectivity_name(connection.state),
                    _age(connection.since, connection.HasField("since"), now),
                    EMPTY,
                    str(connection.attempts),
                    one_line(connection.last_error),
                )
            )
    return rows


def render_table(rows: Sequence[tuple[str, ...]]) -> str:
    """Rows as left-aligned columns two spaces apart; the last column is not padded."""
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    lines = []
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*cells, row[-1]]).rstrip())
    return "\n".join(lines)


def render_status(adaptors: Sequence[admin_pb2.Adaptor], now: datetime) -> str:
    """The whole status table, or a note when no adaptor is configured."""
    if not adaptors:
        return "no adaptors configured"
    return render_table(status_rows(adaptors, now))


def describe_change(before: admin_pb2.Adaptor | None, after: admin_pb2.Adaptor) -> list[str]:
    """One line per difference between two states of an adaptor (``--watch`` output).

    ``before`` None means the adaptor is seen for the first time. An error is shown when it is
    new, not repeated on every later line; a new timestamp alone gives no line, so a watch that
    repeats the current state prints nothing.
    """
    name = after.name
    state = process_state_name(after.state)
    if before is None:
        return [f"{name}: {state}{_details(after, None)}"]
    lines = []
    if before.state != after.state:
        old = process_state_name(before.state)
        lines.append(f"{name}: {old} -> {state}{_details(after, before)}")
    elif before.pid != after.pid:
        lines.append(f"{name}: pid {before.pid or EMPTY} -> {after.pid or EMPTY}")
    elif before.last_error != after.last_error and after.last_error:
        lines.append(f"{name}: {state}, error: {_short(after.last_error)}")
    old_connections = {connection.name: connection for connection in before.connections}
    for connection in after.connections:
        old_connection = old_connections.pop(connection.name, None)
        new_state = connectivity_name(connection.state)
        new_error = old_connection is None or old_connection.last_error != connection.last_error
        error = f": {_short(connection.last_error)}" if connection.last_error and new_error else ""
        if old_connection is None:
            lines.append(f"{name}/{connection.name}: {new_state}{error}")
        elif old_connection.state != connection.state:
            old_state = connectivity_name(old_connection.state)
            lines.append(f"{name}/{connection.name}: {old_state} -> {new_state}{error}")
    lines.extend(f"{name}/{gone}: removed" for gone in old_connections)
    return lines


#: Longest error quoted in a change line; the table and --json have it whole.
MAX_ERROR_CHARS = 200


def _short(error: str) -> str:
    text = one_line(error)
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def _details(after: admin_pb2.Adaptor, before: admin_pb2.Adaptor | None) -> str:
    parts = []
    if after.pid:
        parts.append(f"pid {after.pid}")
    if after.attempts:
        parts.append(f"attempt {after.attempts}")
    text = f" ({', '.join(parts)})" if parts else ""
    new_error = after.last_error and (before is None or before.last_error != after.last_error)
    return f"{text}: {_short(after.last_error)}" if new_error else text


# -- accounts, settlements, peers, test packets ---------------------------------------------
#
# The tables of ``ilp-host accounts``, ``settlements`` and ``peers``, and the lines of
# ``ilp-host send``. Amounts are shown in human form with their scale (``-0.024690 USD``).

ACCOUNTS_HEADER = (
    *("ACCOUNT", "ADAPTOR", "ASSET", "BALANCE", "SETTLE AT", "SETTLE TO"),
    *("PENDING", "LEFTOVER", "LIQUIDITY"),
)
SETTLEMENTS_HEADER = (
    *("ID", "ACCOUNT", "DIRECTION", "STATE", "AMOUNT", "LEDGER AMOUNT"),
    *("LEDGER ID", "ATTEMPTS", "AGE", "LAST ERROR"),
)
UNRESOLVED_HEADER = ("PEER", "PACKET", "AMOUNT", "EXPIRES", "STATE", "ATTEMPTS", "LAST ERROR")
PEERS_HEADER = (
    *("PEER", "RELATION", "ADDRESS", "URL", "BALANCE", "LINK", "SINCE", "ROUTES"),
    "LAST ERROR",
)
ROUTES_HEADER = ("PREFIX", "NEXT HOP", "SOURCE", "PATH")
#: Settlement ids the host makes are 32 hex digits; tables show this many (``--wide``: all).
SHORT_ID_CHARS = 12
_HEX_ID = re.compile(r"[0-9a-f]{32}")


def format_amount(value: str, scale: int, asset_code: str = "") -> str:
    """An integer amount at ``scale`` as a decimal: ``("-24690", 6, "USD")`` -> ``-0.024690 USD``.

    A value that is not an integer (a server bug) is shown as it came, never hidden.
    """
    digits = value.removeprefix("-")
    if not digits.isascii() or not digits.isdigit():
        return f"{value}?" if value else EMPTY
    sign = "-" if value.startswith("-") and digits.strip("0") else ""
    if scale > 0:
        digits = digits.rjust(scale + 1, "0")
        digits = f"{digits[:-scale]}.{digits[-scale:]}"
    text = f"{sign}{digits}"
    return f"{text} {asset_code}" if asset_code else text


def _amount_of(amount: types_pb2.Amount | types_pb2.SignedAmount, code: str = "") -> str:
    return format_amount(amount.value, amount.scale, code)


def short_id(settlement_id: str) -> str:
    """A settlement id for a table: the host's hex ids shortened, ledger-derived ids whole."""
    if _HEX_ID.fullmatch(settlement_id):
        return settlement_id[:SHORT_ID_CHARS]
    return settlement_id


def accounts_rows(accounts: Sequence[admin_pb2.Account]) -> list[tuple[str, ...]]:
    """The accounts table's rows, header first."""
    rows: list[tuple[str, ...]] = [ACCOUNTS_HEADER]
    for account in accounts:
        code = account.asset_code
        liquidity = (
            _amount_of(account.settlement_liquidity, code)
            if account.HasField("settlement_liquidity")
            else EMPTY
        )
        rows.append(
            (
                account.account_id,
                account.adaptor,
                f"{code}/{account.asset_scale}",
                _amount_of(account.clearing_balance, code),
                _amount_of(account.settle_threshold),
                _amount_of(account.settle_to),
                _amount_of(account.pending_settlement),
                _amount_of(account.leftover),
                liquidity,
            )
        )
    return rows


def render_accounts(accounts: Sequence[admin_pb2.Account]) -> str:
    """The whole accounts table, or a note when the host has no account."""
    if not accounts:
        return "no accounts configured"
    return render_table(accounts_rows(accounts))


def settlement_state_name(state: int) -> str:
    """``COMPLETED`` for SETTLEMENT_STATE_COMPLETED; the number if the value is unknown."""
    return _enum_name(admin_pb2.SettlementState, state, "SETTLEMENT_STATE_")


def settlement_direction_name(direction: int) -> str:
    """``outgoing`` for SETTLEMENT_DIRECTION_OUTGOING; the number if the value is unknown."""
    return _enum_name(admin_pb2.SettlementDirection, direction, "SETTLEMENT_DIRECTION_").lower()


def settlements_rows(
    settlements: Sequence[admin_pb2.Settlement], now: datetime, *, wide: bool = False
) -> list[tuple[str, ...]]:
    """The settlements table's rows, header first, in the order given (the server's: newest
    first). ``wide`` shows whole ids."""
    rows: list[tuple[str, ...]] = [SETTLEMENTS_HEADER]
    for settlement in settlements:
        rows.append(
            (
                settlement.id if wide else short_id(settlement.id),
                settlement.account_id,
                settlement_direction_name(settlement.direction),
                settlement_state_name(settlement.state),
                _amount_of(settlement.amount),
                _amount_of(settlement.ledger_amount),
                settlement.ledger_settlement_id or EMPTY,
                str(settlement.attempts),
                _age(settlement.created, settlement.HasField("created"), now),
                one_line(settlement.last_error),
            )
        )
    return rows


def render_settlements(
    settlements: Sequence[admin_pb2.Settlement], now: datetime, *, wide: bool = False
) -> str:
    """The whole settlements table, or a note when there is none."""
    if not settlements:
        return "no settlements"
    return render_table(settlements_rows(settlements, now, wide=wide))


def peers_rows(peers: Sequence[admin_pb2.Peer], now: datetime) -> list[tuple[str, ...]]:
    """The peers table's rows, header first."""
    rows: list[tuple[str, ...]] = [PEERS_HEADER]
    for peer in peers:
        link = peer.link
        rows.append(
            (
                peer.id,
                peer.relation or EMPTY,
                peer.address or EMPTY,
                peer.url or EMPTY,
                _amount_of(peer.clearing_balance) if peer.HasField("clearing_balance") else EMPTY,
                connectivity_name(link.state),
                _age(link.since, link.HasField("since"), now),
                _route_exchange(peer.routes),
                one_line(
                    link.last_error or peer.routes.last_error or _refusal(peer) or _books(peer)
                ),
            )
        )
    return rows


def _route_exchange(routes: admin_pb2.RouteExchange) -> str:
    """The route exchange in a few words: what we send, what we learned."""
    sending = routes.send_mode.lower() or "off"
    return f"send {sending}, learned {routes.learned_routes}"


def _refusal(peer: admin_pb2.Peer) -> str:
    """Why the peer refuses settlement messages, if it does."""
    state = peer.settlement_messages
    return f"settlement messages: {state}" if state and state != "ok" else ""


def _books(peer: admin_pb2.Peer) -> str:
    """What the last reconciliation found, when the books differ (ilp-host reconcile PEER)."""
    outcome = peer.reconciliation
    if outcome.status != "differ":
        return ""
    return f"reconciliation: {outcome.detail}"


def _address_source(source: str) -> str:
    if source.startswith("ildcp:"):
        return f" (from parent {source.removeprefix('ildcp:')} by ILDCP)"
    return " (configured)" if source == "config" else ""


def render_peers(listing: admin_pb2.ListPeersResponse, now: datetime) -> str:
    """This host's ILP address, then the peers table (or a note when there is no peer)."""
    address = f"{listing.address or EMPTY}{_address_source(listing.address_source)}"
    head = f"address {address}\n{engine_line(listing.engine, now)}"
    if not listing.peers:
        return f"{head}\nno peers configured"
    text = f"{head}\n{render_table(peers_rows(listing.peers, now))}"
    unresolved = unresolved_rows(listing.peers, now)
    if len(unresolved) > 1:
        text += f"\nunresolved packets (outcome not known yet)\n{render_table(unresolved)}"
    unsupported = [
        f"{peer.id} {peer.outcome_unsupported}"
        for peer in listing.peers
        if peer.outcome_unsupported
    ]
    if unsupported:
        text += "\npackets released without an answer to peer.outcome: " + ", ".join(unsupported)
    return text


def unresolved_rows(peers: Sequence[admin_pb2.Peer], now: datetime) -> list[tuple[str, ...]]:
    """The unresolved packets of every peer (the clearing retry queue), header first."""
    rows: list[tuple[str, ...]] = [UNRESOLVED_HEADER]
    for peer in peers:
        for packet in peer.unresolved_packets:
            expires = packet.expires_at.ToDatetime(tzinfo=UTC)
            left = (expires - now).total_seconds()
            rows.append(
                (
                    peer.id,
                    packet.key[:16],
                    _amount_of(packet.amount),
                    f"in {format_age(left)}" if left > 0 else f"{format_age(-left)} ago",
                    "debit to record" if packet.fulfilled else "asking the peer",
                    str(packet.attempts),
                    one_line(packet.last_error) or EMPTY,
                )
            )
    return rows


def render_routes(listing: admin_pb2.ListRoutesResponse) -> str:
    """The routing table, then the table id and epoch this host advertises."""
    rows: list[tuple[str, ...]] = [ROUTES_HEADER]
    for route in listing.routes:
        rows.append(
            (
                route.prefix or '"" (default)',
                route.next_hop or "self",
                route.source,
                " > ".join(route.path) or EMPTY,
            )
        )
    return f"{render_table(rows)}\nrouting table {listing.routing_table_id}, epoch {listing.epoch}"


def render_connector_link(link: admin_pb2.GetConnectorLinkResponse) -> str:
    """The engine's link to its connector process, for ``ilp-host status``."""
    state = "connected" if link.connected else "NOT connected"
    return (
        f"connector {link.address}: {state}; applied cursor {link.applied_cursor}, "
        f"acknowledged {link.acknowledged_cursor}; settlement effects pushed "
        f"{link.effects_pushed}, waiting {link.effects_waiting}"
    )


def engine_line(engine: admin_pb2.EngineLink, now: datetime) -> str:
    """Where the connector's settlement engine runs and, when external, how it keeps up."""
    if not engine.external:
        return "engine in this process"
    state = "connected" if engine.connected else "NOT connected"
    age = _age(engine.since, engine.HasField("since"), now)
    return (
        f"engine external, {state} for {age}; {engine.unacknowledged} balance change(s) "
        f"not yet acknowledged (cursor {engine.last_cursor})"
    )


def _by_code(progress: admin_pb2.SendPacketsResponse) -> str:
    codes = sorted(progress.rejected_by_code.items())
    return ", ".join(f"{code} {count}" for code, count in codes)


def send_progress_line(progress: admin_pb2.SendPacketsResponse, count: int) -> str:
    """One progress line of ``ilp-host send``: ``sent 120/200  fulfilled 118  rejected 2``."""
    line = f"sent {progress.sent}/{count}  fulfilled {progress.fulfilled}"
    line += f"  rejected {progress.rejected}"
    if progress.rejected_by_code:
        line += f" ({_by_code(progress)})"
    return line


def send_summary(summary: admin_pb2.SendPacketsResponse) -> str:
    """The summary after the last message of ``ilp-host send``."""
    lines = [
        f"sent       {summary.sent}",
        f"fulfilled  {summary.fulfilled}",
        f"rejected   {summary.rejected}" + (f" ({_by_code(summary)})" if summary.rejected else ""),
        f"latency    median {summary.median_latency_ms:.2f} ms, "
        f"p99 {summary.p99_latency_ms:.2f} ms",
    ]
    if summary.last_reject:
        lines.append(f"last reject  {one_line(summary.last_reject)}")
    return "\n".join(lines)
