"""The connector core: just enough connector to make clearing real.

Peers linked by ILP-over-HTTP with a relation each (parent, child, peer), routes with
longest-prefix match (configured, local, and learned by CCP route broadcast), ILDCP for
children and from a parent, expiry handling, the balance middleware over the engine's clearing
accounts, and ``peer.settle`` messages routed to the settlement engine (never forwarded).
One :class:`Connector` wires it all::

    config = parse_connector_config(tomllib.loads(text))
    connector = Connector.from_config(config, clearing_port, settlement_messages_port)
    async with connector:
        reply = await connector.handle_prepare(None, prepare)
        answer = await connector.send_settlement_message("bob", b"...")

Modules, each one idea:

- :mod:`~host.connector.ports`: the engine seams (Protocols) and the errors that cross them;
- :mod:`~host.connector.config`: the ``[connector]``, ``[[peer]]``, ``[[route]]`` tables;
- :mod:`~host.connector.routing`, :mod:`~host.connector.expiry`: pure decisions;
- :mod:`~host.connector.middleware`: credit reservations and durable balance changes;
- :mod:`~host.connector.http`: the ILP-over-HTTP server and client;
- :mod:`~host.connector.links`: each peer link's connectivity state;
- :mod:`~host.connector.route_broadcast`: CCP with every peer, the learned routes;
- :mod:`~host.connector.local`: an exercise receiver and packet source (not a payment protocol);
- :mod:`~host.connector.connector`: the packet pipeline.
"""

from host.connector.config import (
    ConnectorConfig,
    ConnectorConfigError,
    PeerConfig,
    RouteConfig,
    parse_connector_config,
)
from host.connector.connector import Connector
from host.connector.expiry import ExpiryPolicy
from host.connector.links import LinkStates
from host.connector.local import LocalReceiver, PacketSource, SendProgress, SendSummary
from host.connector.ports import (
    ClearingPort,
    ConnectorError,
    InMemoryClearing,
    LocalHandler,
    MessageRefused,
    PeerRefused,
    PeerUnreachable,
    SettlementMessagesPort,
    UnknownPeer,
)
from host.connector.routing import Route, RouteError, RoutingTable

__all__ = [
    "ClearingPort",
    "Connector",
    "ConnectorConfig",
    "ConnectorConfigError",
    "ConnectorError",
    "ExpiryPolicy",
    "InMemoryClearing",
    "LinkStates",
    "LocalHandler",
    "LocalReceiver",
    "MessageRefused",
    "PacketSource",
    "PeerConfig",
    "PeerRefused",
    "PeerUnreachable",
    "Route",
    "RouteConfig",
    "RouteError",
    "RoutingTable",
    "SendProgress",
    "SendSummary",
    "SettlementMessagesPort",
    "UnknownPeer",
    "parse_connector_config",
]
