"""Centrifugo v6's proxy keys, mapped onto ``proxy_endpoints``.

``client.proxy.connect`` and ``client.proxy.refresh`` (each with ``enabled``),
``channel.proxy.subscribe``, ``publish`` and ``sub_refresh`` (enabled per namespace with
``subscribe_proxy_enabled`` and the like, which ``config_values`` reads as channel options),
and ``rpc.proxy`` (enabled per RPC namespace with ``proxy_enabled``). Of each proxy we take
``endpoint``, ``timeout`` and ``http_headers``; its other options, named proxies
(``proxies``, ``*_proxy_name``) and GRPC endpoints are not implemented: they go to the
warning, or, for a ``grpc://`` endpoint, stop the start. Pure code: no I/O.
"""

from __future__ import annotations

from . import centrifugo_keys as known
from .config_values import SettingsBuilder, as_bool, as_seconds, shown
from .errors import ConfigError
from .proxy_config import DEFAULT_TIMEOUT, ProxyEndpoint

FIELD = "proxy_endpoints"

_TAKEN = frozenset({"enabled", "endpoint", "timeout", "http_headers", "name"})
"""Options of a proxy object this server implements."""


def map_client_proxy(out: SettingsBuilder, value: object) -> None:
    """``client.proxy``: connect and refresh, each on only with ``enabled``."""
    section = out.section("client.proxy", value, known.CLIENT_PROXY)
    for event, inner in section.items():
        key = f"client.proxy.{event}"
        entry = out.section(key, inner, known.PROXY)
        try:
            enabled = as_bool(entry.get("enabled", False))
        except ValueError as exc:
            raise out.error(f"{key}.enabled", str(exc)) from None
        if enabled:
            _add(out, event, entry, key)
        else:
            out.skip(key, entry)


def map_channel_proxy(out: SettingsBuilder, value: object) -> None:
    """``channel.proxy``: subscribe, publish, sub_refresh (the namespaces switch them on)."""
    section = out.section("channel.proxy", value, known.CHANNEL_PROXY)
    for event, inner in section.items():
        key = f"channel.proxy.{event}"
        entry = out.section(key, inner, known.PROXY)
        if event in ("subscribe", "publish", "sub_refresh"):
            _add(out, event, entry, key)
        else:
            out.skip(key, entry)


def map_rpc(out: SettingsBuilder, value: object) -> None:
    """``rpc``: the proxy and the RPC namespaces that use it (``proxy_enabled``)."""
    section = out.section("rpc", value, known.RPC)
    namespaces: list[str] = []
    without = out.section(
        "rpc.without_namespace", section.get("without_namespace", {}), known.RPC_NAMESPACE
    )
    if _enabled(out, without, "rpc.without_namespace"):
        namespaces.append("")
    entries = section.get("namespaces", [])
    if not isinstance(entries, list):
        raise out.error("rpc.namespaces", f"expected a list of namespaces, got {shown(entries)}")
    for index, item in enumerate(entries):
        where = f"rpc.namespaces[{index}]"
        entry = out.section(where, item, known.RPC_NAMESPACE)
        name = entry.get("name")
        if not isinstance(name, str) or not name:
            raise out.error(f"{where}.name", "an RPC namespace needs a name")
        if _enabled(out, entry, where):
            namespaces.append(name)
    if "proxy" in section:
        entry = out.section("rpc.proxy", section["proxy"], known.PROXY)
        _add(out, "rpc", entry, "rpc.proxy", tuple(namespaces))
    for name in ("namespace_boundary", "ping"):
        if name in section:
            out.skip(f"rpc.{name}", section[name])


def _enabled(out: SettingsBuilder, entry: dict[str, object], where: str) -> bool:
    if "proxy_name" in entry:
        out.skip(f"{where}.proxy_name", entry["proxy_name"])
    try:
        return as_bool(entry.get("proxy_enabled", False))
    except ValueError as exc:
        raise out.error(f"{where}.proxy_enabled", str(exc)) from None


def _add(
    out: SettingsBuilder,
    event: str,
    entry: dict[str, object],
    key: str,
    rpc_namespaces: tuple[str, ...] | None = None,
) -> None:
    endpoint = entry.get("endpoint")
    if not isinstance(endpoint, str) or not endpoint:
        raise out.error(f"{key}.endpoint", "a proxy needs an endpoint (an http(s):// URL)")
    try:
        timeout = as_seconds(entry.get("timeout", DEFAULT_TIMEOUT))
    except ValueError as exc:
        raise out.error(f"{key}.timeout", str(exc)) from None
    headers = entry.get("http_headers", [])
    if not isinstance(headers, list) or not all(isinstance(h, str) for h in headers):
        raise out.error(
            f"{key}.http_headers", f"expected a list of header names, got {shown(headers)}"
        )
    try:
        proxy = ProxyEndpoint(event, endpoint, timeout, tuple(headers), rpc_namespaces)
    except ValueError as exc:
        raise out.error(f"{key}.endpoint", str(exc)) from None
    for name, inner in entry.items():
        if name not in _TAKEN:
            out.skip(f"{key}.{name}", inner)
    # Several sections add to the one setting: gathered here rather than set once.
    current = out.values.get(FIELD, ())
    if not isinstance(current, tuple):  # pragma: no cover - only this module sets it from a file
        raise ConfigError(f"{out.path}: {key}", "proxy_endpoints is set twice")
    out.values[FIELD] = (*current, proxy)
    out.keys.setdefault(FIELD, f"{out.path}: {key}")
