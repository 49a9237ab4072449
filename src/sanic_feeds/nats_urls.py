"""The servers and the TLS a NATS broker URL names. Pure, like ``cluster_urls.py``.

``nats://a:4222,b:4222`` names servers of one NATS cluster; ``tls://`` (NATS' own word for it)
the same over TLS, with the query settings of :mod:`~sanic_feeds.tls_settings`
(``?ssl_ca_certs=/path/ca.pem``). A ``nats://`` URL with such settings asks for TLS too (a
server that requires TLS is then verified as asked).
"""

from __future__ import annotations

import ssl
from urllib.parse import parse_qsl, urlsplit

from .tls_settings import TLS_QUERY, client_context

__all__ = ["nats_servers", "nats_tls"]


def nats_servers(url: str) -> list[str]:
    """``nats://a:1,b:2`` -> ``["nats://a:1", "nats://b:2"]`` (credentials kept on each; the
    scheme too, ``tls://`` for TLS; the query, which is this side's, left out)."""
    scheme, _, rest = url.partition("://")
    rest = rest.partition("?")[0]
    credentials, at, hosts = rest.rpartition("@")
    servers = []
    for host in hosts.rstrip("/").split(","):
        if not host:
            raise ValueError(f"a {scheme}:// URL needs at least one HOST:PORT")
        server = f"{scheme}://{credentials}{at}{host}"
        _ = urlsplit(server).port  # ValueError for a port that is not a number or too big
        servers.append(server)
    return servers


def nats_tls(url: str) -> ssl.SSLContext | None:
    """The TLS context ``url`` asks for: with ``tls://``, or any TLS setting in its query."""
    options = dict(parse_qsl(url.partition("?")[2]))
    if url.startswith("tls://") or any(name in options for name in TLS_QUERY):
        return client_context(options)
    return None
