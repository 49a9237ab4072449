"""Broker addresses and the backend factory: one read of the URL, the backends it names, and
their release (every connection closed, nothing left for the garbage collector to warn about)."""

from __future__ import annotations

import gc
import ssl
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from sanic_feeds.backends import Backends, create_backends, create_broker_for
from sanic_feeds.brokers import MemoryBroker, MemoryBus, create_broker
from sanic_feeds.brokers.redis import RedisBroker, redact_url
from sanic_feeds.config import BROKER_SCHEMES, BrokerAddress, FeedsConfig
from sanic_feeds.errors import BrokerUnavailable
from sanic_feeds.nats_urls import nats_servers, nats_tls
from sanic_feeds.presence import MemoryPresence, create_presence
from sanic_feeds.presence.redis import RedisPresence
from sanic_feeds.ratelimit import MemoryUserLimiter, Rate, RedisUserLimiter
from support.collect import Deliveries
from support.redis_server import RedisServer
from support.tls import make_certificates
from support.ws import eventually

# -- BrokerAddress ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "scheme", "kind"),
    [
        ("memory://", "memory", "memory"),
        ("redis://127.0.0.1:6379/0", "redis", "redis"),
        ("redis://localhost", "redis", "redis"),
        ("rediss://cache.example:6380/1", "rediss", "redis"),
        ("unix:///var/run/redis.sock", "unix", "redis"),
        ("unix:///var/run/redis.sock?db=2", "unix", "redis"),
        ("nats://127.0.0.1:4222", "nats", "nats"),
        ("nats://user:pw@a:4222,b:4223", "nats", "nats"),
        ("redis-cluster://a:7000,b:7001", "redis-cluster", "redis-cluster"),
        ("rediss-cluster://a:7000,b:7001", "rediss-cluster", "redis-cluster"),
        ("tls://a:4222,b:4223", "tls", "nats"),
    ],
)
def test_address_kind_of_every_scheme(url: str, scheme: str, kind: str) -> None:
    """Each accepted scheme maps to its backend family; the URL is kept exactly as given."""
    address = BrokerAddress.parse(url)
    assert (address.url, address.scheme, address.kind) == (url, scheme, kind)


def test_every_documented_scheme_parses() -> None:
    """BROKER_SCHEMES, which error messages list, are exactly the schemes parse accepts."""
    expected = (
        "memory", "redis", "rediss", "unix", "redis-cluster", "rediss-cluster", "nats", "tls",
    )  # fmt: skip
    assert expected == BROKER_SCHEMES
    for scheme in BROKER_SCHEMES:
        # A cluster URL names its nodes (HOST:PORT,...), never a path.
        rest = "h:1" if scheme.endswith("-cluster") else "/x"
        assert BrokerAddress.parse(f"{scheme}://{rest}").scheme == scheme


@pytest.mark.parametrize(
    "url", ["kafka://h:9092", "http://x", "", "REDIS://h", "redis:/x", "memory:", "NATS://h"]
)
def test_address_unknown_scheme(url: str) -> None:
    """An unknown scheme (or no ``://``) is a ValueError listing the known schemes."""
    with pytest.raises(ValueError, match="unknown scheme") as info:
        BrokerAddress.parse(url)
    for scheme in BROKER_SCHEMES:
        assert scheme in str(info.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:abc/0",
        "redis://127.0.0.1:99999/0",
        "rediss://h:-1/0",
        "redis://:secret@h:port/0",
        "redis://[::1/0",
        "nats://a:4222,b:port",
        "nats://a:4222,,b:1",
        "redis-cluster://a:7000,b:port",
        "redis-cluster://a:7000/0",
    ],
)
def test_address_malformed_url(url: str) -> None:
    """A malformed port or host is an 'invalid URL' ValueError that never shows the password."""
    with pytest.raises(ValueError, match="invalid URL") as info:
        BrokerAddress.parse(url)
    assert "secret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("memory://", "memory://"),
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://user:secret@example.invalid:6380/2", "redis://user:***@example.invalid:6380/2"),
        ("redis://:secret@h:6379/0", "redis://:***@h:6379/0"),
        ("rediss://:p%40ss@h/0", "rediss://:***@h/0"),
        ("redis://user@h:6379/0", "redis://user@h:6379/0"),
        ("unix://:secret@/tmp/redis.sock", "unix://:***@/tmp/redis.sock"),
        ("unix:///tmp/redis.sock?password=secret&db=1", "unix:///tmp/redis.sock?password=***&db=1"),
        ("redis://h/0?db=1", "redis://h/0?db=1"),
    ],
)
def test_address_redaction(url: str, redacted: str) -> None:
    """Passwords, in the user part or a password= query item, are shown as ***."""
    address = BrokerAddress.parse(url)
    assert address.redacted == redacted
    assert "secret" not in address.redacted
    assert "secret" not in repr(address)  # the URL itself is left out of the repr


@pytest.mark.parametrize(
    "url", ["redis://user:secret@example.invalid:6380/2", "redis://:s@h:1/0", "redis://h:1/0"]
)
def test_address_redaction_matches_the_redis_broker(url: str) -> None:
    """What the node logs at start (broker.url) and what the config shows are the same text."""
    assert BrokerAddress.parse(url).redacted == redact_url(url)


def test_config_reads_the_broker_once() -> None:
    """FeedsConfig keeps its parsed address; a replaced config reads its own URL."""
    config = FeedsConfig(broker="rediss://:secret@h:6380/0")
    assert config.broker_address is config.broker_address
    assert config.broker_address == BrokerAddress.parse("rediss://:secret@h:6380/0")
    assert FeedsConfig().broker_address.kind == "memory"


def test_create_functions_take_text_or_an_address() -> None:
    """create_broker and create_presence accept the URL or its address, and refuse bad URLs."""
    assert isinstance(create_broker(BrokerAddress.parse("memory://")), MemoryBroker)
    assert isinstance(create_presence("memory://"), MemoryPresence)
    assert isinstance(create_broker("redis://h:1/0"), RedisBroker)
    assert isinstance(create_presence(BrokerAddress.parse("unix:///s.sock")), RedisPresence)
    for create in (create_broker, create_presence):
        with pytest.raises(ValueError, match="unknown scheme"):
            create("kafka://h")


# -- the factory, memory ------------------------------------------------------------------------


async def test_memory_backends_share_their_bus() -> None:
    """memory://: two nodes on one bus get memory backends, one presence, and each other's
    messages; without a user rate there is no limiter."""
    bus = MemoryBus()
    config = FeedsConfig()
    one = create_backends(config, node_id="one", bus=bus)
    two = create_backends(config, node_id="two", bus=bus)
    assert isinstance(one.broker, MemoryBroker)
    assert one.presence is two.presence is bus.presence
    assert one.user_limiter is None
    got = Deliveries()
    await one.open(got)
    await two.open()
    try:
        await one.broker.subscribe("lobby")
        await two.broker.publish("lobby", b"\nhello")
        assert await got.wait_for(1) == [("lobby", b"\nhello")]
    finally:
        await two.aclose()
        await one.aclose()
    await one.aclose()  # idempotent


async def test_memory_backends_without_a_bus_are_private() -> None:
    """Without a bus, each node's memory backends are its own."""
    one = create_backends(FeedsConfig(), node_id="one")
    two = create_backends(FeedsConfig(), node_id="two")
    assert one.presence is not two.presence


async def test_memory_user_limiter_from_the_parsed_rate() -> None:
    """--user-rate-limit on memory:// is a per-process limiter with the config's Rate."""
    backends = create_backends(FeedsConfig(user_rate_limit=Rate(2, 60)), node_id="n")
    limiter = backends.user_limiter
    assert isinstance(limiter, MemoryUserLimiter)
    assert limiter.rate == Rate(2, 60)
    await backends.open()
    try:
        assert [await limiter.take("ann") for _ in range(2)] == [0.0, 0.0]
        assert await limiter.take("ann") > 0
    finally:
        await backends.aclose()


def test_memory_only_use_never_imports_redis_py() -> None:
    """A memory:// server (config, CLI, node start and stop with every limit on) never loads
    redis-py: it is imported only for Redis URLs."""
    code = (
        "import asyncio, sys\n"
        "import sanic_feeds.cli\n"
        "from sanic_feeds.config import FeedsConfig\n"
        "from sanic_feeds.node import Node\n"
        "async def main():\n"
        "    config = FeedsConfig(user_rate_limit='3/60', rate_limit='5/1', connect_rate='9/1')\n"
        "    node = Node(config)\n"
        "    await node.start()\n"
        "    await node.stop()\n"
        "asyncio.run(main())\n"
        "print(sorted(m for m in sys.modules if m == 'redis' or m.startswith('redis.')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


# -- the factory, Redis -------------------------------------------------------------------------


def client_count(redis_server: RedisServer) -> int:
    """Connections Redis holds now, leaving out the one asking."""
    body = redis_server.command("CLIENT", "LIST").partition(b"\r\n")[2]
    return sum(line.startswith(b"id=") for line in body.split(b"\n")) - 1


async def test_redis_backends_open_work_and_release_everything(
    redis_url: str, redis_server: RedisServer
) -> None:
    """redis://: Redis broker, presence and user limiter; all three work once open, and aclose
    closes every connection they made (Redis sees none left, no ResourceWarning follows)."""
    baseline = await _settled_count(redis_server)
    config = FeedsConfig(broker=redis_url, user_rate_limit=Rate(1, 60), redis_prefix="factory:")
    backends = create_backends(config, node_id="node-a")
    assert isinstance(backends.broker, RedisBroker)
    assert isinstance(backends.presence, RedisPresence)
    limiter = backends.user_limiter
    assert isinstance(limiter, RedisUserLimiter)
    assert limiter.rate == Rate(1, 60)
    got = Deliveries()
    await backends.open(got)
    try:
        await backends.broker.subscribe("lobby")
        await backends.broker.publish("lobby", b"\nhi")
        assert await got.wait_for(1) == [("lobby", b"\nhi")]
        await backends.presence.report_rooms("node-a", {"lobby": 1}, 1, 30.0)
        assert (await backends.presence.rooms()).rooms == {"lobby": 1}
        assert await limiter.take("ann") == 0.0
        assert await limiter.take("ann") > 0  # counted in Redis, under the prefix
        assert redis_server.command("KEYS", "factory:rate:*").startswith(b"*1\r\n")
        assert client_count(redis_server) > baseline
    finally:
        await backends.aclose()
    await eventually(lambda: client_count(redis_server) == baseline, timeout=5.0)
    await backends.aclose()  # idempotent
    assert_nothing_left_to_collect()


async def test_redis_open_failure_closes_what_was_opened() -> None:
    """A Redis nobody listens on: open raises BrokerUnavailable, and leaves nothing open."""
    config = FeedsConfig(broker="redis://127.0.0.1:1/0", user_rate_limit=Rate(1, 60))
    backends = create_backends(config, node_id="n")
    with pytest.raises(BrokerUnavailable):
        await backends.open(Deliveries())
    assert_nothing_left_to_collect()


async def test_aclose_closes_every_backend_even_if_one_fails() -> None:
    """One backend failing to close does not leave the others open; its error is raised."""
    closed: list[str] = []

    class FailingPresence(MemoryPresence):
        async def aclose(self) -> None:
            closed.append("presence")
            raise RuntimeError("presence close failed")

    class Broker(MemoryBroker):
        async def aclose(self) -> None:
            closed.append("broker")
            await super().aclose()

    class Limiter(MemoryUserLimiter):
        async def aclose(self) -> None:
            closed.append("limiter")

    backends = Backends(Broker(MemoryBus()), FailingPresence(), Limiter(Rate(1, 1)))
    with pytest.raises(RuntimeError, match="presence close failed"):
        await backends.aclose()
    assert closed == ["limiter", "presence", "broker"]


def test_publish_only_broker_for_a_config(redis_url: str) -> None:
    """create_broker_for builds the config's broker with its history policy (what the CLI's
    publish uses)."""
    broker = create_broker_for(FeedsConfig(broker=redis_url, history_size=7, history_ttl=9.0))
    assert isinstance(broker, RedisBroker)
    assert isinstance(create_broker_for(FeedsConfig()), MemoryBroker)


async def _settled_count(redis_server: RedisServer) -> int:
    """The connection count once earlier tests' closed connections have left Redis."""
    counts: list[int] = []

    def stable() -> bool:
        counts.append(client_count(redis_server))
        return len(counts) >= 3 and counts[-1] == counts[-2] == counts[-3]

    await eventually(stable, timeout=5.0, interval=0.05)
    return counts[-1]


def assert_nothing_left_to_collect() -> None:
    """No unclosed socket, client or pool is found by the garbage collector."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        gc.collect()
    left = [w for w in caught if issubclass(w.category, ResourceWarning)]
    assert not left, [str(w.message) for w in left]


def test_nats_urls_name_servers_and_tls(tmp_path: Path) -> None:
    """The servers keep their credentials and scheme and lose this side's query; TLS comes
    with ``tls://`` or a TLS setting, verified against the CA named, or not at all if asked."""
    ca = make_certificates(tmp_path).ca
    servers = nats_servers(f"tls://u:pw@a:1,b:2?ssl_ca_certs={ca}")
    assert servers == ["tls://u:pw@a:1", "tls://u:pw@b:2"]
    assert nats_servers("nats://a:1") == ["nats://a:1"]
    assert nats_tls("nats://a:1") is None
    for url in (f"tls://a:1?ssl_ca_certs={ca}", f"nats://a:1?ssl_ca_certs={ca}", "tls://a:1"):
        tls = nats_tls(url)
        assert tls is not None and tls.context.verify_mode is ssl.CERT_REQUIRED
        assert not tls.handshake_first
    first = nats_tls("tls://a:1?tls_handshake_first=true")
    assert first is not None and first.handshake_first
    loose = nats_tls("tls://a:1?ssl_cert_reqs=none")
    assert loose is not None and loose.context.verify_mode is ssl.CERT_NONE
    assert not loose.context.check_hostname
    with pytest.raises(ValueError, match="at least one"):
        nats_servers("tls://")
    # nats://TOKEN@host: the user part is a secret there
    assert BrokerAddress.parse("nats://s3cret@a:1,b:2").redacted == "nats://***@a:1,b:2"
    assert BrokerAddress.parse("tls://u:pw@a:1").redacted == "tls://u:***@a:1"
    assert BrokerAddress.parse("redis://user@a:1/0").redacted == "redis://user@a:1/0"


@pytest.mark.parametrize("scheme", ["rediss://h:1/0", "rediss-cluster://h:1", "tls://h:1"])
def test_tls_settings_that_cannot_work_are_refused_when_read(scheme: str, tmp_path: Path) -> None:
    """A CA file that is not there or not PEM, an unknown ``ssl_cert_reqs``, a key without its
    certificate: one sentence when the URL is read (at start), not a traceback at connect."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    for query, why in [
        ("ssl_ca_certs=/nowhere/ca.pem", "TLS settings"),
        (f"ssl_ca_certs={junk}", "TLS settings"),
        ("ssl_cert_reqs=CERT_NONE", "must be one of required, optional, none"),
        ("ssl_keyfile=/k.pem", "needs ssl_certfile"),
    ]:
        with pytest.raises(ValueError, match=why):
            BrokerAddress.parse(f"{scheme}?{query}")
    assert BrokerAddress.parse(f"{scheme}?ssl_cert_reqs=optional").kind
