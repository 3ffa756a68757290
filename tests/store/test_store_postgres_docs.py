"""What docs/operations.md shows for PostgreSQL works as written: its shell commands (creating
the role and the database, the backups) run against the suite's server, a host's store opens
the database they made, and every query of its "What to watch" table runs on the tables.
"""

from __future__ import annotations

import asyncio
import os
import pty
import re
import select
import shlex
import signal
import time
from pathlib import Path

from host.metrics.families import Families
from host.store.postgres import PostgresStore
from tests.postgres_server import PostgresServer

DOC = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
PASSWORD = "correct horse battery staple"


def postgres_section() -> str:
    text = DOC.read_text()
    start = text.index("## Run several instances on PostgreSQL")
    return text[start : text.index("\n## ", start + 1)]


def shell_lines(section: str) -> list[list[str]]:
    """Each command line of the section's ``sh`` blocks, as argv (comments dropped)."""
    blocks = re.findall(r"```sh\n(.*?)```", section, re.S)
    lines = [line.split("#", 1)[0].strip() for block in blocks for line in block.splitlines()]
    return [shlex.split(line) for line in lines if line]


def run(argv: list[str], server: PostgresServer, cwd: Path) -> str:
    """Run a client program of the server's binaries under a terminal of its own (as an
    operator would: ``--pwprompt`` reads the password from the terminal), answering every
    password prompt; its output. AssertionError when it fails."""
    env = {**os.environ, "PGHOST": str(server.socket_dir), "PGUSER": "postgres"}
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session with the pty as its controlling terminal
        try:
            os.chdir(cwd)
            os.execve(str(server.bindir / argv[0]), argv, env)
        finally:
            os._exit(127)
    output = b""
    answered = 0  # where the output stood at the last answer
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if not select.select([fd], [], [], 1.0)[0]:
            continue
        try:
            chunk = os.read(fd, 1024)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
        # A prompt: "Enter password for new role: ", "Enter it again: ", "Password: ".
        if output[answered:].rstrip().endswith(b":"):
            os.write(fd, PASSWORD.encode() + b"\n")
            answered = len(output)
    else:
        os.kill(pid, signal.SIGKILL)
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    text = output.decode(errors="replace")
    assert os.waitstatus_to_exitcode(status) == 0, f"{shlex.join(argv)}:\n{text}"
    return text


def test_the_documented_commands_create_the_database_and_back_it_up(
    postgres: PostgresServer, tmp_path: Path
) -> None:
    commands = shell_lines(postgres_section())
    programs = [argv[0] for argv in commands]
    assert programs == ["createuser", "createdb", "pg_dump", "pg_basebackup"], programs
    create, backup = commands[:2], commands[2:]
    for argv in create:
        run(argv, postgres, tmp_path)
    hashed = postgres.psql("SELECT rolpassword FROM pg_authid WHERE rolname = 'ilp'")
    assert hashed.startswith("SCRAM-SHA-256$")  # the password typed at the prompt

    url = postgres.url(database="ilp").replace("postgres@", "ilp@")

    async def first_start() -> None:  # the host creates its tables, as the role ilp
        store = await PostgresStore.open(url)
        await store.close()

    asyncio.run(first_start())
    assert postgres.psql(
        "SELECT tableowner FROM pg_tables WHERE tablename = 'settlements'", url
    ) == ("ilp")
    for argv in backup:
        run(argv, postgres, tmp_path)
    listing = run(["pg_restore", "--list", str(tmp_path / "ilp.dump")], postgres, tmp_path)
    assert "TABLE public settlements ilp" in listing
    assert (tmp_path / "ilp-base" / "PG_VERSION").is_file()
    assert (tmp_path / "ilp-base" / "backup_manifest").is_file()


def test_every_query_the_docs_show_runs(postgres: PostgresServer) -> None:
    queries = re.findall(r"`(SELECT [^`]+)`", postgres_section())
    assert len(queries) >= 8, queries
    url = postgres.new_schema()

    async def migrate() -> None:
        store = await PostgresStore.open(url)
        await store.close()

    asyncio.run(migrate())
    for query in queries:
        postgres.psql(query, url)  # CalledProcessError (with psql's message) if it fails


def test_every_metric_the_section_names_exists() -> None:
    section = postgres_section()
    named = set(re.findall(r"`(ilp_host_[a-z_]+)`", section))
    # "`ilp_host_settlements_requested`, `_sent`, ...": the same family's siblings.
    named |= {
        "ilp_host_settlements" + suffix
        for suffix in re.findall(r"`(_[a-z]+)`", section.split("ilp_host_settlements_", 1)[1])
    }
    exported = {metric.name.removesuffix("_total") for metric in Families().registry.collect()}
    assert len(named) >= 10 and named <= exported, sorted(named - exported)
