"""Failpoints: a real crash (SIGKILL of the own process) at an exact point, for crash tests.

``hit(name)`` does nothing unless ``name`` is armed. ``ILP_FAILPOINTS`` (comma-separated names,
read once, at import) arms them. An armed ``hit`` writes one line ``failpoint <name>`` to
stderr and kills its own process with SIGKILL: nothing is flushed, closed or rolled back
beyond what was already committed, exactly like a power cut at that line. Unarmed, a hit costs
one set lookup. ``fail(name)`` is the other kind: armed, it raises :class:`InjectedFailure`
(a bug at that line) instead of killing the process.

``ILP_FAILPOINTS_ONCE_DIR`` (optional) makes each failpoint fire at most once: before killing,
``hit`` creates the file ``<dir>/<name>``, and a failpoint whose file exists is spent. The
supervisor restarts a killed adaptor with the same environment, so without it a failpoint on a
retried path (SendMoney) would kill every restart; with it, the restart is the recovery.
The file is also the test's proof that the failpoint fired.

The failpoints (the name says where the process dies):

``engine.after-debit``
    The engine committed the transaction that debits the clearing balance and writes the
    outbox row (a manual Settle, or a balance change that crossed the threshold); SendMoney
    has not been attempted. Recovery: start-up reconciliation sends it.
``engine.after-send-money``
    The outbox's SendMoney returned OK (the ledger paid), the result is not recorded: the row
    is still PENDING. Recovery: SendMoney again with the same key; the adaptor reports the
    first payment instead of paying twice.
``engine.after-credit``
    The transaction crediting an incoming settlement committed (or found it credited before);
    ReceiveMoney has not acknowledged it. Recovery: the CREDITED row is acknowledged at
    start-up, and the adaptor's re-delivery credits nothing a second time.
``host.engine-binding`` (raises, see :func:`fail`)
    The host's task that binds the adaptors to the engine raises an exception on the next
    adaptor change it sees: a task of the host dies while the process lives. Recovery: none by
    design; the host stops gracefully and exits non-zero (host.app), it does not run half.
``connector.after-fulfill``
    The next hop's Fulfill of a forwarded packet arrived and matches its condition; this host
    has recorded nothing of it (the next hop has: it applied the packet before it answered).
    Recovery: the packet is in the in-flight journal; the restarted host asks the next hop
    (``peer.outcome``), checks the fulfillment and records the next hop's side.
``connector.record-fulfill`` (raises, see :func:`fail`)
    Recording a fulfilled packet's balance changes fails. Recovery: the source gets a Reject;
    the next hop's debit waits in the retry queue (host.connector.inflight) until recorded.
``adaptor.send-money-received``
    The simledger adaptor received SendMoney and has done nothing yet: the adaptor dies with
    the request on the wire, the engine sees the call fail. Recovery: the supervisor restarts
    the adaptor, the outbox retries with the same key.
``adaptor.after-transfer``
    The simledger adaptor's ledger Transfer committed, SendMoney has not answered. Recovery:
    the retry with the same key is the same ledger transfer, which the ledger pays once.
``adaptor.eth-after-sign``
    The Ethereum adaptor stored the signed transaction of a settlement (and moved its nonce
    counter), not broadcast yet. Recovery: the restarted adaptor broadcasts the stored
    transaction; the retry with the same key finds it instead of signing another.
``adaptor.eth-after-broadcast``
    The Ethereum adaptor broadcast the settlement's transaction and has not looked for its
    receipt. Recovery: the retry with the same key finds the transaction on chain.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path
from typing import Final

ENV_FAILPOINTS: Final = "ILP_FAILPOINTS"
ENV_ONCE_DIR: Final = "ILP_FAILPOINTS_ONCE_DIR"

ENGINE_AFTER_DEBIT: Final = "engine.after-debit"
ENGINE_AFTER_SEND_MONEY: Final = "engine.after-send-money"
ENGINE_AFTER_CREDIT: Final = "engine.after-credit"
HOST_ENGINE_BINDING: Final = "host.engine-binding"
CONNECTOR_AFTER_FULFILL: Final = "connector.after-fulfill"
CONNECTOR_RECORD_FULFILL: Final = "connector.record-fulfill"
ADAPTOR_SEND_MONEY_RECEIVED: Final = "adaptor.send-money-received"
ADAPTOR_AFTER_TRANSFER: Final = "adaptor.after-transfer"
ADAPTOR_ETH_AFTER_SIGN: Final = "adaptor.eth-after-sign"
ADAPTOR_ETH_AFTER_BROADCAST: Final = "adaptor.eth-after-broadcast"

#: Every failpoint placed in the code (documented above).
NAMES: Final = frozenset(
    {
        ENGINE_AFTER_DEBIT,
        ENGINE_AFTER_SEND_MONEY,
        ENGINE_AFTER_CREDIT,
        HOST_ENGINE_BINDING,
        CONNECTOR_AFTER_FULFILL,
        CONNECTOR_RECORD_FULFILL,
        ADAPTOR_SEND_MONEY_RECEIVED,
        ADAPTOR_AFTER_TRANSFER,
        ADAPTOR_ETH_AFTER_SIGN,
        ADAPTOR_ETH_AFTER_BROADCAST,
    }
)


def parse(value: str) -> frozenset[str]:
    """The names in an ``ILP_FAILPOINTS`` value (comma-separated, blanks ignored). Pure."""
    return frozenset(name.strip() for name in value.split(",") if name.strip())


def _armed_at_import() -> frozenset[str]:
    armed = parse(os.environ.get(ENV_FAILPOINTS, ""))
    unknown = sorted(armed - NAMES)
    if unknown:
        # A misspelt name would silently never fire and the crash test would wait in vain.
        print(
            f"failpoints: unknown name(s) {', '.join(unknown)} in {ENV_FAILPOINTS}; "
            f"known: {', '.join(sorted(NAMES))}",
            file=sys.stderr,
            flush=True,
        )
    return armed


_ARMED: Final = _armed_at_import()
_ONCE_DIR: Final = os.environ.get(ENV_ONCE_DIR) or None


def _spend(name: str) -> bool:
    """Whether this hit may fire: always without a once-directory, else only the first time."""
    if _ONCE_DIR is None:
        return True
    try:
        fd = os.open(Path(_ONCE_DIR) / name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    os.close(fd)  # a process kill keeps it: only the process dies, not the kernel
    return True


class InjectedFailure(RuntimeError):
    """What an armed :func:`fail` raises: a bug simulated at an exact point."""


def fail(name: str) -> None:
    """Raise :class:`InjectedFailure` here if ``name`` is armed; else nothing.

    For the failures a process must survive or report, not die of: a task that raises.
    ``ILP_FAILPOINTS_ONCE_DIR`` applies as for :func:`hit`.
    """
    if name not in _ARMED or not _spend(name):
        return
    raise InjectedFailure(f"failpoint {name}")


def hit(name: str) -> None:
    """Crash here with SIGKILL if ``name`` is armed (see the module docstring); else nothing."""
    if name not in _ARMED or not _spend(name):
        return
    sys.stderr.flush()
    os.write(2, f"failpoint {name}\n".encode())
    os.kill(os.getpid(), signal.SIGKILL)
