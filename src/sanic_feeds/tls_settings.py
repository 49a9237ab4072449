"""The TLS a broker URL asks for, read alike for every broker.

``rediss://`` (and ``rediss-cluster://``) and NATS' ``tls://`` take the same settings in their
query, named as redis-py names them, so one set of words holds for every broker:
``ssl_ca_certs`` (a CA file to verify the server against, instead of the system's trust
store), ``ssl_certfile`` and ``ssl_keyfile`` (a client certificate), ``ssl_cert_reqs=none``
(no verification: for tests, never for production).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

__all__ = ["TLS_QUERY", "client_context"]

TLS_QUERY = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")
"""The query settings of a TLS broker URL."""


def client_context(options: Mapping[str, object]) -> ssl.SSLContext:
    """A client TLS context from ``options`` (a URL's query, as a mapping)."""

    def text(name: str) -> str | None:
        value = options.get(name)
        return None if value is None else str(value)

    context = ssl.create_default_context(cafile=text("ssl_ca_certs"))
    if (text("ssl_cert_reqs") or "required").lower() in ("none", "cert_none"):
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    certfile = text("ssl_certfile")
    if certfile:
        context.load_cert_chain(certfile, text("ssl_keyfile"))
    return context
