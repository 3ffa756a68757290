"""A test adaptor that makes the SDK's process behaviour visible.

- start() prints to stdout (must reach GRPCStdio, not corrupt the handshake line) and logs;
  with HOOKS_FAIL_START set it raises instead (the process must exit 1 without a handshake);
  with HOOKS_BAD_CONFIG set it raises LaunchError (printed plainly, exit 1).
- Probe prints "probe <n>" to stdout, so a test can see a print made after the handshake.
- stop() logs "stop hook ran" on stderr (hclog JSON).
- HOOKS_VERSIONS="1,2" sets the contract versions the adaptor speaks.
- HOOKS_LATE_TASK: stop() leaves a task that ends 0.2 s later and logs "late task ended" (as
  grpc's own tasks of an RPC end a few loop turns after its server stopped).
- HOOKS_GRACE sets the seconds in-flight RPCs get once a stop is requested (sdk.serve's grace).
"""

from __future__ import annotations

import asyncio
import os

from google.protobuf import wrappers_pb2

import sdk
from sdk.pb.ilphost.adaptor.v1 import adaptor_pb2


class HooksAdaptor(sdk.Adaptor):
    def __init__(self) -> None:
        versions = os.environ.get("HOOKS_VERSIONS")
        super().__init__(
            contract_versions=[int(v) for v in versions.split(",")] if versions else None
        )
        self.probes = 0
        self.late: asyncio.Task[None] | None = None

    async def start(self) -> None:
        if os.environ.get("HOOKS_BAD_CONFIG"):
            raise sdk.LaunchError("HOOKS_BAD_CONFIG is set: refusing to start")
        if os.environ.get("HOOKS_FAIL_START"):
            raise RuntimeError("ledger unreachable")
        print("printed during start")
        self.log.info("start hook ran", pid=os.getpid())

    async def stop(self) -> None:
        self.log.info("stop hook ran")
        if os.environ.get("HOOKS_LATE_TASK"):
            self.late = asyncio.create_task(self._late())

    async def _late(self) -> None:
        await asyncio.sleep(0.2)
        self.log.info("late task ended")

    async def Probe(
        self, request: adaptor_pb2.ProbeRequest, context: sdk.Context
    ) -> adaptor_pb2.ProbeResponse:
        self.probes += 1
        print(f"probe {self.probes}")
        return adaptor_pb2.ProbeResponse(ready=wrappers_pb2.BoolValue(value=True))


if __name__ == "__main__":
    grace = os.environ.get("HOOKS_GRACE")
    if grace is None:
        sdk.serve(HooksAdaptor())
    sdk.serve(HooksAdaptor(), grace=float(grace))
