"""What every broker on a network server (Redis, Redis Cluster, NATS) sets up the same way.

``create_backends`` builds each of them with the same arguments, and each must read them alike:
the node id that names its connections and its own probe channel, the history policy asked per
channel, the probe's interval and timeout. Reading them in one place keeps a broker from
drifting (a node id generated differently, a history policy not normalised) when another one
changes. The in-memory broker has no server, no node id and no probe, so it does not use this.
"""

from __future__ import annotations

import random

from ..history import HistoryPolicy, HistoryRules
from .base import Broker

__all__ = ["NetworkBroker", "new_node_id"]


def new_node_id() -> str:
    """A random id for a node that was given none: 12 hex digits, unique enough per cluster."""
    return random.randbytes(6).hex()


class NetworkBroker(Broker):
    """A ``Broker`` that talks to a server: the settings its constructor shares with the others.

    ``url`` is kept whole (with any password) to connect; a subclass shows it redacted.
    ``prefix`` namespaces this deployment's keys or subjects on a shared server. ``node_id``
    names this node's connections and probe channel (a random one by default).
    """

    def __init__(
        self,
        url: str,
        prefix: str,
        node_id: str,
        *,
        probe_interval: float,
        probe_timeout: float,
        history: HistoryPolicy | HistoryRules | None,
    ) -> None:
        self._url = url
        self._prefix = prefix
        self._node = node_id or new_node_id()
        self.history_rules = HistoryRules.of(history)
        """How much history each channel keeps (asked per channel, at publish and read)."""
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
