"""Probing failed peer links, so that their state recovers without waiting for traffic.

ILP-over-HTTP has no connection: a link's state is known only from the exchanges made on it
(host.connector.links). A link that failed, say because the peer started after us, would stay
TRANSIENT_FAILURE until something happened to be sent to that peer. The prober sends such a
link a probe with backoff: a Prepare of amount 0 to the peer's own address, with a random
condition nobody can fulfil. Any ILP reply, the Reject it gets included, proves the link works
and makes it READY; a zero amount moves no balance on either side.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random as _random
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta

from host.ilp import Prepare, Reply
from sdk.backoff import Backoff
from sdk.connectivity import Connectivity

log = logging.getLogger("ilp_host.connector")

#: Pauses between probes of one failed link.
PROBE_BACKOFF = Backoff(initial=1.0, cap=30.0)
#: How long a probe may take.
PROBE_TIMEOUT = 5.0

#: Sends one Prepare to a peer within a time limit (the connector's exchange, which updates
#: the link state and raises on a link failure).
Exchange = Callable[[str, Prepare, float], Awaitable[Reply]]


def probe_packet(peer_address: str, now: datetime) -> Prepare:
    """The probe for a peer: amount 0, to its own address, a condition nobody can fulfil."""
    return Prepare(
        amount=0,
        expires_at=now + timedelta(seconds=PROBE_TIMEOUT),
        execution_condition=os.urandom(32),
        destination=peer_address,
    )


async def probe_failed_links(
    peers: Mapping[str, str],
    state_of: Callable[[str], Connectivity],
    exchange: Exchange,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
    random: Callable[[], float] = _random.random,
) -> None:
    """Until cancelled: probe each peer (id -> ILP address) whose link is TRANSIENT_FAILURE."""
    failures = dict.fromkeys(peers, 0)  # failed probes in a row, per peer
    due = dict.fromkeys(peers, 0.0)
    loop = asyncio.get_running_loop()
    while True:
        for peer_id, address in peers.items():
            if state_of(peer_id) != Connectivity.TRANSIENT_FAILURE:
                failures[peer_id], due[peer_id] = 0, 0.0
                continue
            if due[peer_id] == 0.0:  # just failed: the first probe after the initial delay
                due[peer_id] = loop.time() + PROBE_BACKOFF.delay(1, random)
            if loop.time() < due[peer_id]:
                continue
            try:
                await exchange(peer_id, probe_packet(address, now()), PROBE_TIMEOUT)
                log.info("link to peer %s works again (probe answered)", peer_id)
            except Exception as exc:  # the exchange recorded the failure in the link state
                log.debug("probe of peer %s failed: %s", peer_id, exc)
                failures[peer_id] += 1
                due[peer_id] = loop.time() + PROBE_BACKOFF.delay(failures[peer_id] + 1, random)
        await asyncio.sleep(min(PROBE_BACKOFF.initial / 2, 0.5))
