"""Supervisor snapshots to their wire form (ilphost.admin.v1.Adaptor). Pure."""

from __future__ import annotations

from host.pb.ilphost.admin.v1 import admin_pb2
from host.supervisor import AdaptorSnapshot


def adaptor_to_proto(snapshot: AdaptorSnapshot) -> admin_pb2.Adaptor:
    """The admin API's view of one adaptor: process lifecycle, connections, GetInfo."""
    message = admin_pb2.Adaptor(
        name=snapshot.name,
        state=admin_pb2.ProcessState.ValueType(int(snapshot.state)),
        last_error=snapshot.last_error,
        attempts=snapshot.attempts,
        pid=snapshot.pid or 0,
        connections=[connection.to_proto() for connection in snapshot.connections],
        contract_version=snapshot.contract_version,
    )
    message.since.FromDatetime(snapshot.since)
    if snapshot.info is not None:
        message.info.CopyFrom(snapshot.info)
    return message
