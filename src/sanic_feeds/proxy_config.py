"""Where the HTTP proxies send each event: one :class:`ProxyEndpoint` per proxied event.

The setting ``proxy_endpoints`` holds them. A Centrifugo file sets it from its own keys
(``client.proxy.connect`` / ``refresh``, ``channel.proxy.subscribe`` / ``publish`` /
``sub_refresh``, ``rpc.proxy``; see ``centrifugo_config.py``); our files, the environment and
the command line give a list in the same shape::

    [{"event": "connect", "endpoint": "http://app/centrifugo/connect", "timeout": "1s",
      "http_headers": ["Cookie"]}]

Which channels the subscribe, publish and sub_refresh proxies apply to is a namespace option
(``subscribe_proxy_enabled`` and the like), as in Centrifugo. Pure code: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

import orjson

from .durations import parse_seconds

EVENTS = ("connect", "refresh", "subscribe", "publish", "sub_refresh", "rpc")
"""The events a proxy can be configured for."""

DEFAULT_TIMEOUT = 1.0
"""Centrifugo's default proxy timeout, in seconds."""


@dataclass(frozen=True, slots=True)
class ProxyEndpoint:
    """One proxied event: where it goes, how long it may take, which headers go with it."""

    event: str
    endpoint: str
    """An ``http://`` or ``https://`` URL; every request is a JSON ``POST``."""
    timeout: float = DEFAULT_TIMEOUT
    http_headers: tuple[str, ...] = ()
    """Headers of the client's connection request to forward (case-insensitive; ``Cookie``
    forwards its cookies)."""
    rpc_namespaces: tuple[str, ...] | None = None
    """``rpc`` only: the RPC namespaces it answers (``""``: methods without one); None: all."""

    def __post_init__(self) -> None:
        if self.event not in EVENTS:
            raise ValueError(f"unknown proxy event {self.event!r}; one of {', '.join(EVENTS)}")
        scheme = urlsplit(self.endpoint).scheme
        if scheme == "grpc":
            raise ValueError(f"{self.event}: GRPC proxies are not supported here, use http(s)://")
        if scheme not in ("http", "https"):
            raise ValueError(f"{self.event}: endpoint must be an http(s):// URL")
        if self.timeout <= 0:
            raise ValueError(f"{self.event}: timeout must be greater than 0")

    def answers_rpc(self, method: str) -> bool:
        """Is ``method`` (``ns:name`` or ``name``) one of this RPC proxy's?"""
        if self.rpc_namespaces is None:
            return True
        namespace = method.partition(":")[0] if ":" in method else ""
        return namespace in self.rpc_namespaces


def proxy_endpoint_from(entry: object) -> ProxyEndpoint:
    """One endpoint from JSON-like values; ``ValueError`` naming what is wrong."""
    if not isinstance(entry, Mapping):
        raise ValueError(f"each proxy must be an object, got {entry!r}")
    unknown = set(entry) - {"event", "endpoint", "timeout", "http_headers", "rpc_namespaces"}
    if unknown:
        raise ValueError(f"unknown proxy option(s): {', '.join(sorted(unknown))}")
    event, endpoint = entry.get("event"), entry.get("endpoint")
    if not isinstance(event, str) or not isinstance(endpoint, str):
        raise ValueError("a proxy needs an event and an endpoint (strings)")
    timeout = entry.get("timeout", DEFAULT_TIMEOUT)
    if isinstance(timeout, str):
        timeout = parse_seconds(timeout)
    if not isinstance(timeout, int | float) or isinstance(timeout, bool):
        raise ValueError(f"{event}: timeout must be seconds, got {timeout!r}")
    headers = entry.get("http_headers", [])
    if not isinstance(headers, list | tuple) or not all(isinstance(h, str) for h in headers):
        raise ValueError(f"{event}: http_headers must be a list of header names")
    namespaces = entry.get("rpc_namespaces")
    if namespaces is not None and not (
        isinstance(namespaces, list | tuple) and all(isinstance(n, str) for n in namespaces)
    ):
        raise ValueError(f"{event}: rpc_namespaces must be a list of namespace names")
    return ProxyEndpoint(
        event,
        endpoint,
        float(timeout),
        tuple(headers),
        None if namespaces is None else tuple(namespaces),
    )


def parse_proxy_endpoints(text: str) -> tuple[ProxyEndpoint, ...]:
    """The text form: a JSON list of proxies (see the module docstring)."""
    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of proxies")
    return proxy_endpoints_from(entries)


def proxy_endpoints_from(entries: list[object]) -> tuple[ProxyEndpoint, ...]:
    endpoints = tuple(proxy_endpoint_from(entry) for entry in entries)
    events = [e.event for e in endpoints]
    for event in events:
        if events.count(event) > 1:
            raise ValueError(f"two proxies for the {event} event")
    return endpoints
