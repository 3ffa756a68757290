"""Prometheus metrics of a host: ``/metrics`` on a listener of its own (docs/observability.md).

:class:`HostMetrics` holds one process's metrics and observes the parts its role runs;
:func:`serve_metrics` starts the listener a config asks for.
"""

from __future__ import annotations

import contextlib

from host.config import ConfigError, HostConfig
from host.metrics.host_metrics import HostMetrics
from host.metrics.server import MetricsServer, MetricsTls

__all__ = ["HostMetrics", "MetricsServer", "MetricsTls", "serve_metrics"]


async def serve_metrics(
    config: HostConfig, stack: contextlib.AsyncExitStack
) -> tuple[HostMetrics, MetricsServer] | None:
    """The host's metrics and their listener, serving until ``stack`` closes; None when
    ``[metrics]`` has no ``listen`` (or this role has none). OSError if the port is taken."""
    settings = config.metrics
    if settings.listen is None:
        return None
    tls = None
    if settings.token_file is not None:
        assert settings.tls_cert is not None and settings.tls_key is not None  # checked
        # Imported here: host.credentials imports the admin package, which imports the host.
        from host.credentials import CredentialsError, read_server_tls

        try:
            read = read_server_tls(
                settings.tls_cert, settings.tls_key, settings.token_file, prefix="metrics."
            )
        except CredentialsError as exc:
            raise ConfigError(f"{config.source}: {exc}") from exc
        tls = MetricsTls(settings.tls_cert, settings.tls_key, read.token)
    metrics = HostMetrics(config.accounts)
    host, port = settings.listen
    server = MetricsServer(metrics.scrape, host, port, tls)
    await server.start()
    stack.push_async_callback(server.stop)
    return metrics, server
