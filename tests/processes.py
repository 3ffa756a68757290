"""Ending a child process started with asyncio in a test, leaving nothing open behind it.

``process.wait()`` returns as soon as the exit status is known, while the process's pipes may
still be open in the event loop: asyncio closes the process's transport only once it has read
the end of each pipe. A test whose ``asyncio.run`` ends first leaves an unclosed transport,
which the garbage collector reports later, as a ResourceWarning in whatever test runs then (an
error under ``filterwarnings = error``): the more loaded the machine, the likelier.
"""

from __future__ import annotations

import asyncio

#: How long a killed process may take to go, with its pipes (generous: a loaded machine).
DEADLINE = 30.0


async def reap(process: asyncio.subprocess.Process, deadline: float = DEADLINE) -> int:
    """Kill ``process`` if it still runs, read its pipes to their end and wait for it; its exit
    status. Afterwards its transport is closed."""
    if process.returncode is None:
        process.kill()
    # communicate() reads every pipe to its end (each pipe's end closes it) and waits.
    await asyncio.wait_for(process.communicate(), deadline)
    # The transport closes in the callback that reports the exit to the process's protocol,
    # which may still be queued when the exit status was already known: let it run.
    await asyncio.sleep(0)
    assert process.returncode is not None
    return process.returncode
