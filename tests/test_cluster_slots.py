"""The Redis Cluster slot map, redirects and key names: pure code, no server."""

from __future__ import annotations

from pathlib import Path

import pytest

from sanic_feeds.brokers.cluster_slots import (
    SLOTS,
    Redirect,
    SlotMap,
    key_slot,
    parse_redirect,
    probe_tag,
)
from sanic_feeds.brokers.redis_cluster_client import tls_options
from sanic_feeds.brokers.redis_keys import channel_key, history_keys
from sanic_feeds.cluster_urls import redis_cluster_nodes
from sanic_feeds.config import BrokerAddress
from support.tls import make_certificates

A, B, C = ("10.0.0.1", 7000), ("10.0.0.2", 7001), ("10.0.0.3", 7002)
THREE = SlotMap([(0, 5460, A), (5461, 10922, B), (10923, 16383, C)])


def test_every_key_of_a_channel_shares_its_slot() -> None:
    """The shard channel and the history keys hash to one slot (one script, one master)."""
    for channel in ("lobby", "a.b:c@d-e_f", "x" * 128):
        names = [
            channel_key("sanic-feeds:", channel),
            *map(str.encode, history_keys("p:", channel)),
        ]
        assert len({key_slot(name) for name in names}) == 1
        assert key_slot(names[0]) == key_slot(channel.encode())


def test_slot_map_from_a_cluster_slots_reply() -> None:
    """Ranges map to masters; an empty host is the node that was asked."""
    reply = [
        [0, 5460, [b"10.0.0.1", 7000, b"id1"], [b"10.0.0.4", 7003, b"id4"]],
        [5461, 16383, [b"", 7001, b"id2"]],
    ]
    slots = SlotMap.from_reply(reply, ("10.0.0.9", 7001))
    assert slots.owner(0) == slots.owner(5460) == A
    assert slots.owner(5461) == slots.owner(16383) == ("10.0.0.9", 7001)
    assert slots.covered == SLOTS
    assert slots.masters == {A, ("10.0.0.9", 7001)}
    with pytest.raises(ValueError, match="unexpected"):
        SlotMap.from_reply(b"nope", A)


def test_a_map_with_a_hole_says_so() -> None:
    """Slots without a master (a failover under way) have no owner."""
    slots = SlotMap([(0, 99, A)])
    assert slots.owner(100) is None
    assert slots.covered == 100


def test_moved_splits_a_range() -> None:
    """After MOVED one slot changes master; its neighbours keep theirs."""
    moved = THREE.move(5000, C)
    assert (moved.owner(4999), moved.owner(5000), moved.owner(5001)) == (A, C, A)
    assert moved.covered == SLOTS
    assert moved != THREE
    assert THREE.move(5000, A) == SlotMap(
        [(0, 4999, A), (5000, 5000, A), (5001, 5460, A), *THREE.ranges[1:]]
    )


def test_redirects_are_parsed_and_other_errors_are_not() -> None:
    assert parse_redirect("MOVED 3999 127.0.0.1:6381", "h") == Redirect(
        "MOVED", 3999, ("127.0.0.1", 6381)
    )
    assert parse_redirect("ASK 1 :7000", "10.0.0.5") == Redirect("ASK", 1, ("10.0.0.5", 7000))
    assert parse_redirect("ERR unknown command", "h") is None
    assert parse_redirect("MOVED x y:z", "h") is None


def test_probe_tag_lands_on_the_master() -> None:
    """Each master gets a probe channel in a slot it serves."""
    for master in (A, B, C):
        assert (
            THREE.owner(key_slot(b"node:n1:{" + probe_tag(THREE, master).encode() + b"}")) == master
        )
    with pytest.raises(ValueError, match="serves no slot"):
        probe_tag(THREE, ("10.9.9.9", 1))


def test_cluster_urls(tmp_path: Path) -> None:
    """redis-cluster:// takes several nodes, keeps credentials per node, hides the password;
    rediss-cluster:// is the same over TLS, its settings read from the query."""
    address = BrokerAddress.parse("redis-cluster://u:pw@a:1,b:2")
    assert (address.kind, address.redacted) == ("redis-cluster", "redis-cluster://u:***@a:1,b:2")
    assert redis_cluster_nodes("redis-cluster://:pw@a:1,b:2?x=1") == [
        "redis://:pw@a:1?x=1",
        "redis://:pw@b:2?x=1",
    ]
    ca = make_certificates(tmp_path).ca
    tls = BrokerAddress.parse(f"rediss-cluster://:pw@a:1,b:2?ssl_ca_certs={ca}")
    assert (tls.kind, tls.redacted) == (
        "redis-cluster",
        f"rediss-cluster://:***@a:1,b:2?ssl_ca_certs={ca}",
    )
    assert redis_cluster_nodes(tls.url) == [
        f"rediss://:pw@a:1?ssl_ca_certs={ca}",
        f"rediss://:pw@b:2?ssl_ca_certs={ca}",
    ]
    assert tls_options(tls.url) == {"ssl": True, "ssl_ca_certs": str(ca)}
    assert tls_options("rediss-cluster://a:1?ssl_cert_reqs=none") == {
        "ssl": True, "ssl_cert_reqs": "none", "ssl_check_hostname": False,
    }  # fmt: skip
    assert tls_options("redis-cluster://a:1") == {}
    for bad, why in [
        ("redis-cluster://", "at least one"),
        ("redis-cluster://a:x", "invalid URL"),
        ("redis-cluster://a:1/0", "one database"),
        ("redis-cluster://a:1,,b:2", "at least one"),
        ("redis-cluster://a:99999", "out of range"),
    ]:
        with pytest.raises(ValueError, match=why):
            BrokerAddress.parse(bad)
