"""A real Prometheus server for the tests: Debian's binary (``make setup`` installs it),
started on loopback with a scrape config of our own, asked over its HTTP API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.polling import wait_until

DEADLINE = 60.0


class Prometheus:
    """One running server: :meth:`query` evaluates PromQL now."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log

    def api(self, path: str, **params: str) -> Any:
        """The ``data`` of a successful API answer; AssertionError with the error otherwise."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}{path}?{query}", timeout=10) as response:
                answer = json.load(response)
        except urllib.error.HTTPError as exc:
            answer = json.load(exc)
        assert answer["status"] == "success", f"{path} {params}: {answer}"
        return answer["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) ``promql`` evaluates to now."""
        data = self.api("/api/v1/query", query=promql)
        if data["resultType"] == "vector":
            return list(data["result"])
        return [{"metric": {}, "value": data["result"]}]

    def value(self, promql: str) -> float | None:
        """The one value of ``promql``, None when the vector is empty."""
        result = self.query(promql)
        assert len(result) <= 1, f"{promql}: more than one series: {result}"
        return float(result[0]["value"][1]) if result else None

    def wait_for(self, promql: str, expected: float) -> None:
        """Until ``promql`` equals ``expected`` (new scrapes arrive every second)."""
        wait_until(
            lambda: self.value(promql),
            f"{promql} to be {expected}",
            timeout=DEADLINE,
            interval=0.5,
            done=lambda value: value == expected,
        )


def scrape_config(jobs: Mapping[str, Sequence[str]]) -> str:
    """A Prometheus config scraping each job's HOST:PORT targets every second."""
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": list(targets)}]}
            for job, targets in jobs.items()
        ],
    }
    return json.dumps(config)  # JSON is YAML


@contextmanager
def prometheus(
    directory: Path, port: int, jobs: Mapping[str, Sequence[str]]
) -> Iterator[Prometheus]:
    """Prometheus on 127.0.0.1:``port`` scraping ``jobs``, stopped on exit."""
    binary = shutil.which("prometheus")
    assert binary is not None, "no prometheus binary: `make setup` installs Debian's package"
    config = directory / "prometheus.yml"
    config.write_text(scrape_config(jobs))
    log = directory / "prometheus.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={directory / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--log.level=warn",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    server = Prometheus(f"http://127.0.0.1:{port}", process, log)
    try:

        def ready() -> bool:
            assert process.poll() is None, f"prometheus exited: {log.read_text()[-2000:]}"
            with urllib.request.urlopen(f"{server.url}/-/ready", timeout=2) as response:
                return bool(response.status == 200)

        wait_until(
            ready, "prometheus to be ready", timeout=DEADLINE, interval=0.2, ignore=(OSError,)
        )
        yield server
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
