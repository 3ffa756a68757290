"""A throwaway PostgreSQL server for the tests and benchmarks: started from the server binaries of
the machine (Debian's ``postgresql`` package, installed by ``make setup``) on a unix socket in a
private temporary directory, no TCP listener, stopped and deleted at the end.

``initdb`` is the slow part, so its result is kept as a template data directory (in memory,
/dev/shm, where there is one) and copied for each server. ``initdb`` refuses to run as root: as
root, the directories belong to the ``postgres`` user and the server binaries run as it
(``runuser``).
Each test gets a schema of its own (``PostgresServer.new_schema``): the store finds its tables
through the ``search_path`` of the URL, so tests never see each other's rows.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from urllib.parse import quote

#: Overrides where the server binaries are (a directory with initdb, pg_ctl, postgres).
ENV_BIN = "ILP_HOST_PG_BIN"
#: The tests share the server's default database; each takes a schema of its own.
DATABASE = "postgres"


class PostgresUnavailable(RuntimeError):
    """No server binaries on this machine (run ``make setup``), or the server did not start."""


def server_binaries() -> Path:
    """The directory of the newest installed server binaries."""
    configured = os.environ.get(ENV_BIN)
    candidates = [configured] if configured else glob.glob("/usr/lib/postgresql/*/bin")
    found = [Path(c) for c in candidates if (Path(c) / "initdb").is_file()]
    if not found:
        raise PostgresUnavailable(
            "no PostgreSQL server binaries (initdb) under /usr/lib/postgresql/*/bin: run "
            f"`make setup` (installs Debian's postgresql package) or set {ENV_BIN}"
        )
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)


class PostgresServer:
    """A running server; ``url`` connects to its test database."""

    def __init__(self, root: Path, bindir: Path, settings: Sequence[str]) -> None:
        self.root = root
        self.bindir = bindir
        self.data = root / "data"
        self.socket_dir = root / "socket"
        self._settings = settings
        self._owner = _server_user()

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        self._chown(self.socket_dir)
        self._copy_template()
        options = " ".join(
            [
                "-c listen_addresses=''",
                f"-c unix_socket_directories={self.socket_dir}",
                "-c unix_socket_permissions=0700",
                *(f"-c {setting}" for setting in self._settings),
            ]
        )
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.data / "server.log"), "-w",
            "-t", "60", "-o", options, "start",
        )  # fmt: skip

    def stop(self) -> None:
        with contextlib.suppress(PostgresUnavailable):
            self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    # -- URLs -----------------------------------------------------------------------------------

    def url(self, database: str = DATABASE, schema: str | None = None) -> str:
        """A libpq URL to ``database`` over the socket; with ``schema`` as its search_path."""
        url = f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir), safe='/')}"
        if schema is not None:
            url += "&options=" + quote(f"-csearch_path={schema}")
        return url

    def new_schema(self) -> str:
        """A URL to a new, empty schema of the test database: a deployment of its own."""
        schema = f"t_{uuid.uuid4().hex[:16]}"
        self.psql(f"CREATE SCHEMA {schema}")
        return self.url(schema=schema)

    def psql(self, sql: str, url: str | None = None) -> str:
        """Run ``sql`` with psql (as a client, like an operator would); its output."""
        result = subprocess.run(
            [str(self.bindir / "psql"), "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1",
             "-d", url or self.url(), "-c", sql],
            check=True, capture_output=True, text=True,
        )  # fmt: skip
        return result.stdout.strip()

    # -- helpers --------------------------------------------------------------------------------

    def _copy_template(self) -> None:
        version = self.bindir.parent.name
        template = Path(_fast_dir()) / f"ilp-host-pgdata-{version}-template-1"
        if not (template / "PG_VERSION").is_file():
            fresh = Path(tempfile.mkdtemp(prefix="ilp-host-pgdata-", dir=_fast_dir()))
            self._chown(fresh)
            self._run(
                "initdb", "-D", str(fresh / "data"), "-U", "postgres", "--auth=trust",
                "-E", "UTF8", "--locale=C", "--no-sync", "--wal-segsize=1",
            )  # fmt: skip
            with contextlib.suppress(OSError):  # another session may have made one meanwhile
                (fresh / "data").rename(template)
            shutil.rmtree(fresh, ignore_errors=True)
        shutil.copytree(template, self.data, symlinks=True)
        self.data.chmod(0o700)
        self._chown(self.data, recursive=True)

    def _chown(self, path: Path, *, recursive: bool = False) -> None:
        if self._owner is None:
            return
        uid, gid = self._owner
        os.chown(path, uid, gid)
        if recursive:
            for parent, dirs, files in os.walk(path):
                for name in dirs + files:
                    os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bindir / program), *args]
        if self._owner is not None:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, capture_output=True, text=True, cwd="/", check=False)
        if done.returncode != 0:
            log = self.data / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise PostgresUnavailable(
                f"{program} exited with status {done.returncode}: {done.stderr.strip()}\n{tail}"
            )


def _fast_dir() -> str:
    """Memory (/dev/shm) where there is one: copying and running a data directory there does not
    wait for a disk other processes keep busy. Otherwise the system's temporary directory."""
    shm = "/dev/shm"
    if os.path.isdir(shm) and os.access(shm, os.W_OK | os.X_OK):
        return shm
    return tempfile.gettempdir()


def _server_user() -> tuple[int, int] | None:
    """As root, the server runs as ``postgres`` (uid, gid); otherwise as whoever we are."""
    if os.geteuid() != 0:
        return None
    try:
        entry = pwd.getpwnam("postgres")
    except KeyError as exc:
        raise PostgresUnavailable(
            "running as root needs a `postgres` user for the server (Debian's postgresql "
            "package makes it; run `make setup`)"
        ) from exc
    return entry.pw_uid, entry.pw_gid


@contextlib.contextmanager
def postgres_server(
    settings: Sequence[str] = (), directory: str | None = None
) -> Iterator[PostgresServer]:
    """A server for the duration of the block; ``settings`` are extra ``name=value`` options.

    Its data directory is in memory where possible, or under ``directory`` (a disk, to measure).
    """
    root = Path(tempfile.mkdtemp(prefix="ilp-pg-", dir=directory or _fast_dir()))
    root.chmod(0o755)  # the server user must reach its directories below
    server = PostgresServer(root, server_binaries(), settings)
    try:
        server.start()
        yield server
    finally:
        server.stop()


#: For the tests: durability is not what they check, speed matters.
TEST_SETTINGS = (
    "fsync=off",
    "full_page_writes=off",
    "synchronous_commit=off",
    "max_connections=300",
)
