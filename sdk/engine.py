"""The adaptor's way back to the host: the ``ilphost.engine.v1.Engine`` service.

The host serves it on the address in ``ILP_HOST_ENGINE_ADDR`` (a gRPC target such as
``unix:/run/ilp-host/engine.sock``). An adaptor uses it to send messages to the peer's adaptor::

    async with sdk.connect_engine() as (channel, engine):
        reply = await engine.SendData(engine_pb2.SendDataRequest(account_id="bob", data=b"..."))
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import grpc

from sdk import channels
from sdk.contract import ENV_ENGINE_ADDR
from sdk.pb.ilphost.engine.v1 import engine_pb2_grpc

if TYPE_CHECKING:
    from sdk.pb.ilphost.engine.v1.engine_pb2_grpc import EngineAsyncStub


class EngineNotConfigured(RuntimeError):
    """The adaptor runs without an engine address (not under the host, or an old host)."""


def engine_address(environ: Mapping[str, str] | None = None) -> str:
    """The Engine's gRPC target from the environment, or EngineNotConfigured."""
    address = (os.environ if environ is None else environ).get(ENV_ENGINE_ADDR, "")
    if not address:
        raise EngineNotConfigured(
            f"{ENV_ENGINE_ADDR} is not set: the host passes the address of its Engine service "
            "there; outside the host, start a fake one with sdk.testing.fake_engine()"
        )
    return address


@asynccontextmanager
async def connect_engine(
    address: str | None = None,
) -> AsyncIterator[tuple[grpc.aio.Channel, EngineAsyncStub]]:
    """An open channel to the host's Engine and its stub; closed on exit.

    ``address`` defaults to ``$ILP_HOST_ENGINE_ADDR``.
    """
    target = address if address is not None else engine_address()
    async with channels.aio_channel(target) as channel:
        yield channel, engine_pb2_grpc.EngineStub(channel)
