"""The TLS a broker URL asks for, read alike for every broker.

``rediss://`` (and ``rediss-cluster://``) and NATS' ``tls://`` take the same settings in their
query, named and spelled as redis-py takes them, so one set of words holds for every broker
and every client library behind it: ``ssl_ca_certs`` (a CA file to verify the server against,
instead of the system's trust store), ``ssl_certfile`` and ``ssl_keyfile`` (a client
certificate), ``ssl_cert_reqs`` (``required``, the default; ``optional``; ``none``: no
verification, for tests, never for production).
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping

__all__ = ["TLS_QUERY", "TLS_SCHEMES", "asks_for_tls", "check", "client_context"]

TLS_QUERY = ("ssl_ca_certs", "ssl_cert_reqs", "ssl_certfile", "ssl_keyfile")
"""The query settings of a TLS broker URL."""

TLS_SCHEMES = ("rediss", "rediss-cluster", "tls")
"""The broker URL schemes that mean TLS."""


def asks_for_tls(scheme: str, query: Mapping[str, object]) -> bool:
    """A URL of ``scheme`` with ``query`` asks for TLS: by its scheme, or by a TLS setting."""
    return scheme in TLS_SCHEMES or any(name in query for name in TLS_QUERY)


_CERT_REQS = {"required": ssl.CERT_REQUIRED, "optional": ssl.CERT_OPTIONAL, "none": ssl.CERT_NONE}


def client_context(options: Mapping[str, object]) -> ssl.SSLContext:
    """A client TLS context from ``options`` (a URL's query, as a mapping); ``ValueError`` for
    settings that cannot make one (see :func:`check`)."""

    def text(name: str) -> str | None:
        value = options.get(name)
        return None if value is None else str(value)

    reqs = text("ssl_cert_reqs") or "required"
    if reqs not in _CERT_REQS:
        raise ValueError(f"ssl_cert_reqs must be one of {', '.join(_CERT_REQS)}, not {reqs!r}")
    certfile, keyfile = text("ssl_certfile"), text("ssl_keyfile")
    if keyfile and not certfile:
        raise ValueError("ssl_keyfile needs ssl_certfile (the client certificate it goes with)")
    try:
        context = ssl.create_default_context(cafile=text("ssl_ca_certs"))
        if reqs != "required":
            context.check_hostname = False
            context.verify_mode = _CERT_REQS[reqs]
        if certfile:
            context.load_cert_chain(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"TLS settings: {exc}") from None
    return context


def check(options: Mapping[str, object]) -> None:
    """``ValueError`` with one sentence when ``options`` cannot make a TLS context (a file that
    is missing or not PEM, an unknown ``ssl_cert_reqs``): at start, not at the first connect."""
    client_context(options)
