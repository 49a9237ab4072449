"""Broker URLs as logs and ``/health`` may show them: no password, no token. Pure, and apart
from ``config.py`` so that a broker can show its URL without importing the settings (which
import the rate limiter, which imports the Redis broker).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit

__all__ = ["redact_url"]


def redact_url(url: str, *, secret_user: bool = False) -> str:
    """``url`` with the password (in the user part, or a ``password=`` query item) as ``***``;
    with ``secret_user``, a user part that is all there is too (NATS reads ``nats://TOKEN@h``
    as a token)."""
    parts = urlsplit(url)
    netloc, query = parts.netloc, parts.query
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.partition(':')[0]}:***@{host}"
    elif secret_user and parts.username is not None:
        netloc = f"***@{netloc.rpartition('@')[2]}"
    items = parse_qsl(query, keep_blank_values=True)
    if any(name == "password" for name, _ in items):
        safe = [(name, "***" if name == "password" else value) for name, value in items]
        query = urlencode(safe, safe="*")
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Put together by hand: urlunsplit drops the empty host of unix:///path.
    query = f"?{query}" if query else ""
    fragment = f"#{parts.fragment}" if parts.fragment else ""
    return f"{parts.scheme}://{netloc}{parts.path}{query}{fragment}"
