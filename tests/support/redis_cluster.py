"""A private Redis Cluster for tests: masters and replicas, each a ``RedisServer`` on free ports.

Why a real cluster: slot routing, MOVED replies, sharded pub/sub and a replica taking over from
a dead master only exist on one, and each is what the cluster broker must survive. The nodes
are ordinary private servers (``redis_server.RedisServer``) started with cluster options; the
cluster is formed by ``redis-cli --cluster create`` and used once ``CLUSTER INFO`` says
``cluster_state:ok`` on every node. A short ``cluster-node-timeout`` keeps a failover within a
few seconds.

Pytest-free, like ``redis_server.py``, so benchmarks use it too.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
from dataclasses import dataclass

from redis.crc import key_slot

from .ports import free_port
from .redis_server import RedisServer, find_redis_server_binary
from .tls import TlsFiles

__all__ = ["ClusterNode", "RedisCluster", "cluster_unavailable"]

_READY_TIMEOUT_S = 30.0
"""How long the cluster may take to form, or to recover from a failover."""

_POLL_S = 0.05


def cluster_unavailable() -> str | None:
    """Why no cluster can be started here (no redis-cli, or a Redis without sharded pub/sub),
    or None when one can."""
    binary = find_redis_server_binary()
    if shutil.which("redis-cli") is None:
        return "no redis-cli on PATH"
    version = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    number = version.stdout.partition(" v=")[2].partition(" ")[0]
    if int(number.partition(".")[0] or 0) < 7:
        return f"redis-server {number or '?'} has no sharded pub/sub (7.0 or later needed)"
    return None


@dataclass(frozen=True)
class ClusterNode:
    """One line of ``CLUSTER NODES``, as far as the tests need it."""

    id: str
    port: int
    master: bool
    master_id: str
    connected: bool
    failed: bool
    slots: tuple[tuple[int, int], ...]


class RedisCluster:
    """``masters`` masters with ``replicas`` replicas each, on 127.0.0.1.

    With ``tls``, every node also serves TLS on a port of its own (``tls_ports``), the cluster
    bus and replication go over TLS, and ``url`` is ``rediss-cluster://`` on those ports with
    the CA in its query; the plain ports stay for the tests' own commands (Redis answers
    ``CLUSTER SLOTS`` with the ports of the connection's kind).
    """

    def __init__(
        self,
        masters: int = 3,
        replicas: int = 1,
        node_timeout_ms: int = 1000,
        tls: TlsFiles | None = None,
    ) -> None:
        self.node_timeout_ms = node_timeout_ms
        self.tls = tls
        count = masters * (replicas + 1)
        self.tls_ports = [free_port() for _ in range(count)] if tls is not None else []
        self.servers = [
            RedisServer(extra_args=_node_options(node_timeout_ms) + self._tls_options(n))
            for n in range(count)
        ]
        self._masters = masters
        self._replicas = replicas

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Start every node, form the cluster and wait until it serves every slot."""
        try:
            for server in self.servers:
                server.start()
            create = ["redis-cli", "--cluster", "create"]
            if self.tls is not None:
                create[1:1] = ["--tls", "--cacert", str(self.tls.ca)]
            create += [f"127.0.0.1:{port}" for port in self._client_ports()]
            create += ["--cluster-replicas", str(self._replicas), "--cluster-yes"]
            subprocess.run(
                create,
                capture_output=True,
                check=True,
                timeout=_READY_TIMEOUT_S,
            )
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        for server in self.servers:
            server.stop()

    @property
    def is_paused(self) -> bool:
        return False

    def resume(self) -> None:
        """Nothing to resume: nodes are killed and restarted, never paused, here."""

    @property
    def url(self) -> str:
        """``redis-cluster://`` with every node: any of them tells the client the others."""
        nodes = ",".join(f"127.0.0.1:{port}" for port in self._client_ports())
        if self.tls is not None:
            return f"rediss-cluster://{nodes}?ssl_ca_certs={self.tls.ca}"
        return f"redis-cluster://{nodes}"

    def _client_ports(self) -> list[int]:
        return self.tls_ports if self.tls is not None else [s.port for s in self.servers]

    def _tls_options(self, n: int) -> list[str]:
        if self.tls is None:
            return []
        options = ["--tls-port", str(self.tls_ports[n]), *self.tls.redis_options()]
        return [*options, "--tls-cluster", "yes", "--tls-replication", "yes"]

    # -- topology ---------------------------------------------------------------------------

    def nodes(self) -> list[ClusterNode]:
        """``CLUSTER NODES`` as one live node sees it."""
        for server in self.servers:
            if not server.is_running:
                continue
            with contextlib.suppress(OSError):
                return parse_nodes(_bulk(server.command("CLUSTER", "NODES")))
        raise RuntimeError("no cluster node is running")

    def server_at(self, port: int) -> RedisServer:
        return next(s for s in self.servers if s.port == port)

    def masters(self) -> list[RedisServer]:
        """The masters that serve slots (a node can say "master" with none for a moment: just
        formed, or before it becomes a replica again after a failover)."""
        return [
            self.server_at(n.port) for n in self.nodes() if n.master and not n.failed and n.slots
        ]

    def master_of(self, key: str) -> RedisServer:
        """The master that serves ``key``'s slot now."""
        slot = key_slot(key.encode())
        for node in self.nodes():
            if node.master and not node.failed and any(a <= slot <= b for a, b in node.slots):
                return self.server_at(node.port)
        raise RuntimeError(f"no master serves slot {slot}")

    def healthy(self) -> bool:
        """Every node runs, says ``cluster_state:ok`` and knows every other as connected, and
        every replica is in sync with its master (a failover then loses nothing)."""
        if not all(s.is_running for s in self.servers):
            return False
        try:
            for server in self.servers:
                if b"cluster_state:ok" not in server.command("CLUSTER", "INFO", timeout=1.0):
                    return False
            nodes = self.nodes()
        except OSError:
            return False
        masters = [n for n in nodes if n.master and n.slots]
        if not (
            len(nodes) == len(self.servers)
            and all(n.connected and not n.failed for n in nodes)
            and len(masters) == self._masters
        ):
            return False
        try:  # every replica has its master's data (and keeps up with it)
            for node in nodes:
                if not node.master:
                    info = self.server_at(node.port).command("INFO", "replication", timeout=1.0)
                    if b"master_link_status:up" not in info:
                        return False
        except OSError:
            return False
        return True

    def wait_healthy(self, timeout: float = _READY_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the cluster is not healthy after {timeout:g} s")
            time.sleep(_POLL_S)

    def kill_and_fail_over(self, master: RedisServer, timeout: float = _READY_TIMEOUT_S) -> None:
        """SIGKILL ``master`` and return once one of its replicas serves its slots."""
        dead = next(n for n in self.nodes() if n.port == master.port)
        master.kill()
        deadline = time.monotonic() + timeout
        while True:
            try:
                nodes = self.nodes()
                heirs = [n for n in nodes if n.master and not n.failed and n.slots == dead.slots]
                state = next(s for s in self.servers if s.is_running).command("CLUSTER", "INFO")
                if heirs and heirs[0].port != master.port and b"cluster_state:ok" in state:
                    return
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"no replica took over from port {master.port} in {timeout} s")
            time.sleep(_POLL_S)

    def migrate_slot(self, slot: int, target: RedisServer, pause: float = 0.2) -> None:
        """Move ``slot`` to the master ``target`` the way ``redis-cli --cluster reshard`` does
        (IMPORTING, MIGRATING, MIGRATE of its keys, then SETSLOT NODE everywhere), waiting
        ``pause`` between the steps so that clients meet each phase (MOVED, ASK)."""
        nodes = self.nodes()
        owner = next(n for n in nodes if n.master and any(a <= slot <= b for a, b in n.slots))
        source, to = self.server_at(owner.port), next(n for n in nodes if n.port == target.port)
        for server, step in ((target, "IMPORTING"), (source, "MIGRATING")):
            other = owner.id if step == "IMPORTING" else to.id
            _ok(server.command("CLUSTER", "SETSLOT", slot, step, other))
            time.sleep(pause)
        while True:
            raw = source.command("CLUSTER", "GETKEYSINSLOT", slot, 100)
            keys = [line for line in raw.decode().split("\r\n")[1:] if line and line[0] != "$"]
            if not keys:
                break
            _ok(source.command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys))
        time.sleep(pause)
        for server in [target, source, *(s for s in self.masters() if s not in (target, source))]:
            _ok(server.command("CLUSTER", "SETSLOT", slot, "NODE", to.id))

    def repair(self) -> None:
        """Start any killed node again (it rejoins, as a replica) and wait until all is well."""
        for server in self.servers:
            if not server.is_running:
                server.start()
        self.wait_healthy()


def _node_options(node_timeout_ms: int) -> list[str]:
    options = {
        "cluster-enabled": "yes",
        "cluster-config-file": "nodes.conf",
        "cluster-node-timeout": str(node_timeout_ms),
        # The bus port would be port + 10000, which may be taken or past 65535.
        "cluster-port": str(free_port()),
        # A replica takes over however long it was cut off from its master.
        "cluster-replica-validity-factor": "0",
        # Start a replica's first sync at once (the default waits 5 s for more replicas): until
        # it is done, what the master stores would be lost with it.
        "repl-diskless-sync-delay": "0",
    }
    return [item for name, value in options.items() for item in (f"--{name}", value)]


def _ok(reply: bytes) -> None:
    if not reply.startswith(b"+"):
        raise RuntimeError(f"cluster command refused: {reply[:200]!r}")


def _bulk(reply: bytes) -> str:
    """The text of a raw bulk-string reply (``$<n>\\r\\n<text>\\r\\n``)."""
    if not reply.startswith(b"$"):
        raise OSError(f"unexpected reply: {reply[:200]!r}")
    return reply.partition(b"\r\n")[2][:-2].decode()


def parse_nodes(text: str) -> list[ClusterNode]:
    nodes = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 8:
            continue
        flags = fields[2].split(",")
        slots = []
        for item in fields[8:]:
            if item.startswith("["):
                continue  # a slot being migrated or imported
            first, _, last = item.partition("-")
            slots.append((int(first), int(last or first)))
        nodes.append(
            ClusterNode(
                id=fields[0],
                port=int(fields[1].partition("@")[0].rpartition(":")[2]),
                master="master" in flags,
                master_id=fields[3],
                connected=fields[7] == "connected",
                failed="fail" in flags or "fail?" in flags,
                slots=tuple(slots),
            )
        )
    return nodes
