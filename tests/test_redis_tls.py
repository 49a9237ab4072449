"""The Redis broker over TLS (``rediss://``), against a real redis-server with a TLS port.

Managed Redis services ask for TLS, and nothing else in the suite speaks it: here a private
redis-server listens on a plain port (for the test's own checks) and on a TLS port with a
certificate from a throwaway CA made for the module. Two instances share channels, history and
presence through the TLS port, with the CA named in the URL (``ssl_ca_certs``, as redis-py
reads it), and every connection they open to Redis is on that port. Without the CA the
certificate is refused at start, in one sentence that says so.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from websockets.asyncio.client import connect

from sanic_feeds.brokers import create_broker
from sanic_feeds.errors import BrokerUnavailable
from support.local_server import local_server
from support.ports import free_port
from support.redis_server import RedisServer
from support.ws import recv_json


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


_CA_USAGE = x509.KeyUsage(
    digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
    key_encipherment=False, data_encipherment=False, key_agreement=False, encipher_only=False,
    decipher_only=False,
)  # fmt: skip


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A CA, and a certificate it signs for 127.0.0.1 and localhost: (ca, cert, key) files."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("sanic-feeds test CA"))
        .issuer_name(_name("sanic-feeds test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_USAGE, critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / "ca.pem", directory / "server.pem", directory / "server.key"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return paths


class TlsRedis:
    def __init__(self, server: RedisServer, tls_port: int, ca: Path) -> None:
        self.server, self.tls_port, self.ca = server, tls_port, ca

    @property
    def url(self) -> str:
        return f"rediss://127.0.0.1:{self.tls_port}/0?ssl_ca_certs={self.ca}"

    def clients(self) -> list[dict[str, str]]:
        """``CLIENT LIST`` (asked on the plain port), one dict of fields per connection."""
        text = self.server.command("CLIENT", "LIST").split(b"\r\n", 1)[1].decode()
        return [
            dict(field.split("=", 1) for field in line.split() if "=" in field)
            for line in text.splitlines()
            if line.strip()
        ]


@pytest.fixture(scope="module")
def tls_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsRedis]:
    ca, cert, key = make_certificates(tmp_path_factory.mktemp("tls"))
    tls_port = free_port()
    server = RedisServer(
        extra_args=[
            "--tls-port", str(tls_port), "--tls-cert-file", str(cert),
            "--tls-key-file", str(key), "--tls-ca-cert-file", str(ca),
            "--tls-auth-clients", "no",
        ]
    )  # fmt: skip
    try:
        server.start()
    except RuntimeError as exc:
        if "tls" in str(exc).lower():
            pytest.skip(f"this redis-server has no TLS: {str(exc)[:200]}")
        raise
    try:
        yield TlsRedis(server, tls_port, ca)
    finally:
        server.stop()


async def test_two_instances_share_channels_history_and_presence_over_tls(
    tls_redis: TlsRedis,
) -> None:
    async with (
        local_server(broker=tls_redis.url, join_leave=False) as one,
        local_server(broker=tls_redis.url, join_leave=False) as two,
    ):
        async with connect(one.ws_url("secure")) as ws:
            welcome = await recv_json(ws)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{two.port}") as http:
                presence = (await http.get("/api/channels/secure/presence")).json()
                assert [m["client"] for m in presence["clients"]] == [welcome["client"]]
                answer = await http.post("/api/channels/secure/publish", json={"n": 1})
                assert answer.status_code == 200, answer.text
                got = await recv_json(ws, timeout=5)
                assert got["data"] == {"n": 1}
                history = (await http.get("/api/channels/secure/history")).json()
                assert [m["data"] for m in history["messages"]] == [{"n": 1}]
        ours = [c for c in tls_redis.clients() if c.get("cmd") != "client|list"]
        assert ours, "the instances hold connections to Redis"
        assert {c["laddr"].rpartition(":")[2] for c in ours} == {str(tls_redis.tls_port)}
        assert any(c.get("name", "").startswith("sanic-feeds:") for c in ours)


async def test_a_certificate_it_cannot_verify_is_refused_at_open(tls_redis: TlsRedis) -> None:
    """Without the CA (the system's trust store does not know it) the broker does not open,
    and the reason names the certificate."""
    broker = create_broker(f"rediss://127.0.0.1:{tls_redis.tls_port}/0")
    with pytest.raises(BrokerUnavailable) as refused:
        await broker.open(None)
    await broker.aclose()
    assert "certificate" in str(refused.value).lower()
