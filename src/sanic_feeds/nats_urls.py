"""The servers and the TLS a NATS broker URL names. Pure, like ``cluster_urls.py``.

``nats://a:4222,b:4222`` names servers of one NATS cluster; ``tls://`` (NATS' own word for it)
the same over TLS, with the query settings of :mod:`~sanic_feeds.tls_settings`
(``?ssl_ca_certs=/path/ca.pem``). A ``nats://`` URL with such settings asks for TLS too (a
server that requires TLS is then verified as asked).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from .tls_settings import asks_for_tls, client_context

__all__ = ["NatsTls", "nats_servers", "nats_tls"]


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


@dataclass(frozen=True)
class NatsTls:
    """The TLS a NATS URL asks for."""

    context: ssl.SSLContext
    handshake_first: bool = False
    """``?tls_handshake_first=true``: TLS from the first byte (nats-server 2.10.4 or later).
    Otherwise the server's first line, which says whether it requires TLS, comes in the clear,
    and a connection to a server that does not is refused only once it is made."""


def nats_tls(url: str) -> NatsTls | None:
    """The TLS ``url`` asks for: with ``tls://``, or any TLS setting in its query."""
    options = dict(parse_qsl(url.partition("?")[2]))
    first = options.get("tls_handshake_first", "false").lower() in ("1", "true", "yes")
    if first or asks_for_tls(url.partition("://")[0], options):
        return NatsTls(client_context(options), first)
    return None
