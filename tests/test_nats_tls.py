"""The NATS broker over TLS (``tls://``, NATS' own word for it), against a private
``nats-server -js --tls`` that serves TLS only, with a certificate from a throwaway CA.

Two instances share a channel, its history (JetStream) and presence (a key-value bucket) through
it, the CA named in the URL's query as for ``rediss://``; without the CA the broker does not
open, and says that the certificate is why.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from sanic_feeds.brokers import create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.nats_server import NatsServer
from support.tls import make_certificates
from support.ws import eventually
from test_redis_tls import share_channels

pytestmark = pytest.mark.skipif(shutil.which("nats-server") is None, reason="no nats-server")


@pytest.fixture(scope="module")
def tls_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = NatsServer(tls=make_certificates(tmp_path_factory.mktemp("tls")))
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def test_two_instances_share_channels_history_and_presence_over_tls(
    tls_nats: NatsServer,
) -> None:
    await share_channels(tls_nats.url, ["secure"], lambda: None)


async def test_a_certificate_it_cannot_verify_is_refused_at_open(tls_nats: NatsServer) -> None:
    broker = create_broker(tls_nats.url.partition("?")[0])  # no CA: the system's trust store
    with pytest.raises(BrokerUnavailable) as refused:
        await broker.open(None)
    await broker.aclose()
    assert "certificate" in str(refused.value).lower()


async def test_a_tls_url_refuses_a_server_without_tls() -> None:
    """nats-py upgrades to TLS only when the server asks for it: a ``tls://`` URL that reaches
    a server without TLS is refused, not used in the clear."""
    plain = NatsServer()
    plain.start()
    try:
        broker = create_broker(f"tls://127.0.0.1:{plain.port}")
        with pytest.raises(BrokerUnavailable, match="does not require TLS"):
            await broker.open(None)
        await broker.aclose()
    finally:
        plain.stop()


async def test_a_reconnect_to_a_server_without_tls_is_closed(tmp_path: Path) -> None:
    """The TLS server goes away and one without TLS takes its port: the reconnect is closed at
    once, and the broker's check fails from then on."""
    secure = NatsServer(tls=make_certificates(tmp_path))
    secure.start()
    broker = create_broker(secure.url)
    plain: NatsServer | None = None
    try:
        await broker.open(None)
        await broker.check()
        port = secure.port
        secure.stop()
        plain = NatsServer(port)
        plain.start()

        async def refused() -> bool:
            try:
                await broker.check()
            except BrokerUnavailable:
                return True
            return False

        await eventually(refused, timeout=10)
        await asyncio.sleep(1.0)  # long past a reconnect: still refused
        assert await refused()
    finally:
        await broker.aclose()
        secure.stop()
        if plain is not None:
            plain.stop()
