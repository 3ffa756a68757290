"""The ``/metrics`` listener: plain HTTP on loopback, or HTTPS with a bearer token elsewhere.

It is a listener of its own (not the ILP-over-HTTP port, not the admin API), so that a scraper
can reach it and nothing else. The rules are the admin API's TCP listener's: a non-loopback
address needs TLS and a token (host.config refuses the config otherwise); Prometheus presents
the token with ``authorization: {credentials_file: ...}``.
"""

from __future__ import annotations

import hmac
import logging
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST

log = logging.getLogger("ilp_host.metrics")


@dataclass(frozen=True)
class MetricsTls:
    """TLS and the bearer token of a listener that is not on loopback."""

    cert_file: Path
    key_file: Path
    token: str


class MetricsServer:
    """Serves ``GET /metrics`` with the text ``scrape`` returns, until :meth:`stop`."""

    def __init__(
        self,
        scrape: Callable[[], Awaitable[bytes]],
        host: str,
        port: int,
        tls: MetricsTls | None = None,
    ) -> None:
        self._scrape = scrape
        self._host = host
        self._port = port
        self._tls = tls
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        """Listen; returns once the socket is bound (:attr:`port` is then the real port)."""
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        context = None
        if self._tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(self._tls.cert_file, self._tls.key_file)
        site = web.TCPSite(self._runner, self._host, self._port, ssl_context=context)
        try:
            await site.start()
        except BaseException:
            await self.stop()
            raise
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        """Stop listening. Idempotent."""
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    @property
    def url(self) -> str:
        scheme = "https" if self._tls is not None else "http"
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"{scheme}://{host}:{self.port}/metrics"

    async def _metrics(self, request: web.Request) -> web.Response:
        if self._tls is not None and not _authorized(request, self._tls.token):
            log.warning("metrics: refused a scrape from %s without the token", request.remote)
            return web.Response(
                status=401,
                text="a bearer token is required\n",
                headers={"WWW-Authenticate": "Bearer"},
            )
        body = await self._scrape()
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


def _authorized(request: web.Request, token: str) -> bool:
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.encode()
    )
