"""Durability: every change acknowledged before a SIGKILL is in the database afterwards.

A child process (a real interpreter) applies balance changes through the engine and the SQLite
store with many concurrent callers, printing "acked <key>" once each call returned; the test
kills it with SIGKILL in full flight, reopens the file and looks for every acknowledged key.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from host.engine.engine import BALANCE_SCOPE
from host.store.sqlite import SqliteStore

REPO = Path(__file__).resolve().parents[2]
WANTED = 400  # acknowledgements to see before the kill

CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from host.engine import Engine, Policy
    from host.store.sqlite import SqliteStore

    async def main(path):
        store = await SqliteStore.open(path)
        engine = Engine(store, {})
        await engine.create_account(
            "alice", adaptor="sim", asset_code="USD", asset_scale=2, ledger_scale=2,
            policy=Policy(-(10**30), 0, -(10**30), 0),
        )
        print("ready", flush=True)
        n = 0

        async def change(key):
            await engine.apply_balance_change("alice", 1, key)
            print("acked", key, flush=True)

        while True:  # until killed
            await asyncio.gather(*(change(f"k{n + i}") for i in range(16)))
            n += 16

    asyncio.run(main(sys.argv[1]))
    """
)


def test_acknowledged_changes_survive_sigkill(tmp_path: Path) -> None:
    path = tmp_path / "host.db"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    acked: list[str] = []
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "ready\n"
        while len(acked) < WANTED:
            line = child.stdout.readline()
            assert line, "the child stopped early"
            word, key = line.split()
            assert word == "acked"
            acked.append(key)
    finally:
        child.kill()  # SIGKILL: no cleanup, no final commit
        _, stderr = child.communicate()
    assert child.returncode == -9, stderr

    async def check() -> tuple[int, int]:
        store = await SqliteStore.open(path)  # the kernel released the dead child's lock
        try:
            async with store.transaction() as tx:
                missing = [k for k in acked if await tx.get_idempotency(BALANCE_SCOPE, k) is None]
                recorded = await tx.lock_account("alice")
            assert not missing, f"acknowledged but lost: {missing[:5]}"
            assert recorded is not None
            return recorded.balance, len(acked)
        finally:
            await store.close()

    balance, count = asyncio.run(check())
    # Every acknowledged change is there; some unacknowledged ones may be too, never half of one.
    assert count <= balance
    with sqlite3.connect(path) as conn:
        (keys,) = conn.execute("SELECT COUNT(*) FROM idempotency").fetchone()
    conn.close()
    assert keys == balance
