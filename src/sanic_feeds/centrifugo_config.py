"""Centrifugo v6's configuration sections, mapped onto our settings.

Each function reads one section of a Centrifugo file (``client``, ``channel``, ``http_server``,
``http_api``, ``log``, ``engine``, ``broker``) into a :class:`SettingsBuilder`: what we implement
sets the setting that means the same here, what we do not goes to the warning, a key Centrifugo
does not document is an error. The mapping is documented, key by key, in docs/configuration.md.
Pure code: no I/O.
"""

from __future__ import annotations

from . import centrifugo_keys as known
from .centrifugo_proxies import map_channel_proxy, map_client_proxy, map_rpc
from .centrifugo_redis import redis_url
from .config_values import (
    CENTRIFUGO_DEFAULTS,
    TOP_LEVEL_OPTIONS,
    SettingsBuilder,
    as_bool,
    as_int,
    as_seconds,
    as_str,
    channel_options_from,
    namespaces_from,
    shown,
)
from .errors import ConfigError
from .ratelimit import Rate

_JWT_ALGORITHMS = {
    "hmac_secret_key": ("HS256", "HS384", "HS512"),
    "rsa_public_key": ("RS256", "RS384", "RS512"),
    "ecdsa_public_key": ("ES256", "ES384", "ES512"),
}
"""The algorithms Centrifugo accepts with each kind of key."""

_LOG_LEVELS = {
    "trace": "DEBUG",
    "debug": "DEBUG",
    "info": "INFO",
    "warn": "WARNING",
    "error": "ERROR",
    "none": "CRITICAL",
}
"""Centrifugo's ``log.level`` values and ours (``trace`` is as verbose as we get, ``none``
leaves only critical lines)."""


def _channel(out: SettingsBuilder, value: object) -> None:
    """``channel``: with it, channels without a namespace take Centrifugo's defaults (all off)
    for what ``without_namespace`` leaves out, as they would in Centrifugo."""
    section = out.section("channel", value, known.CHANNEL)
    without = section.get("without_namespace", {})
    if not isinstance(without, dict):
        raise out.error("channel.without_namespace", f"expected an object, got {shown(without)}")
    given = channel_options_from(out, without, "channel.without_namespace", TOP_LEVEL_OPTIONS)
    for name in TOP_LEVEL_OPTIONS:
        key = f"channel.without_namespace.{name}"
        if name == "history_ttl" and not given.get("history_ttl"):
            continue  # no history: history_size 0 says so; our history_ttl must stay above 0
        if name in given:
            out.set(name, given[name], key)
        else:
            out.set(name, getattr(CENTRIFUGO_DEFAULTS, name), key, soft=True)
    if "namespaces" in section:
        out.set(
            "namespaces",
            namespaces_from(out, section["namespaces"], "channel.namespaces"),
            "channel.namespaces",
        )
    for name, inner in section.items():
        if name == "proxy":
            map_channel_proxy(out, inner)
        elif name not in ("without_namespace", "namespaces"):
            out.skip(f"channel.{name}", inner)


def _client(out: SettingsBuilder, value: object) -> None:
    section = out.section("client", value, known.CLIENT)
    plain = {
        "channel_limit": ("max_channels", as_int),
        "user_connection_limit": ("user_connection_limit", as_int),
        "connection_limit": ("max_connections", as_int),
        "queue_max_size": ("client_buffer", as_int),
        "ping_interval": ("ping_interval", as_seconds),
        "pong_timeout": ("ping_timeout", as_seconds),
        "insecure": ("insecure", as_bool),
    }
    for name, inner in section.items():
        key = f"client.{name}"
        try:
            if name in plain:
                target, convert = plain[name]
                out.set(target, convert(inner), key)
            elif name == "allowed_origins":
                out.set("allowed_origins", _origins(inner), key)
            elif name == "proxy":
                map_client_proxy(out, inner)
            elif name == "connection_rate_limit":
                per_second = as_int(inner)
                out.set("connect_rate", Rate(per_second, 1.0) if per_second > 0 else None, key)
            elif name != "token":
                out.skip(key, inner)
        except ConfigError:  # a conflict out.set found: already names its key
            raise
        except ValueError as exc:
            raise out.error(key, str(exc)) from None
    token_key = _token(out, section.get("token", {}))
    if section.get("insecure") is True:
        out.set("auth", "none", "client.insecure")
    elif token_key is not None:
        out.set("auth", "jwt", f"client.token.{token_key}")


def _origins(value: object) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ValueError(f"expected a list of origins, got {shown(value)}")
    origins = tuple(as_str(item, "a list of strings") for item in value)
    if "*" in origins:
        return ()  # any origin, as an empty allowed_origins means here
    for origin in origins:
        if "*" in origin:
            raise ValueError(
                f"origin patterns such as {origin!r} are not supported here: list each origin"
            )
    return origins


def _token(out: SettingsBuilder, value: object) -> str | None:
    """``client.token``; returns the name of the key it sets (None: no key)."""
    section = out.section("client.token", value, known.CLIENT_TOKEN)
    chosen: str | None = None
    for name, inner in section.items():
        key = f"client.token.{name}"
        if name not in _JWT_ALGORITHMS and name not in ("audience", "issuer"):
            out.skip(key, inner)
            continue
        if not isinstance(inner, str):
            raise out.error(key, f"expected a string, got {shown(inner)}")
        if name in ("audience", "issuer"):
            out.set(f"jwt_{name}", inner, key)
        elif inner:  # "" is Centrifugo's default: no such key
            if chosen is not None:
                raise out.error(
                    key, f"conflicts with client.token.{chosen}: one kind of key can be used here"
                )
            chosen = name
            target = "jwt_secret" if name == "hmac_secret_key" else "jwt_public_key"
            out.set(target, inner, key)
            out.set("jwt_algorithms", _JWT_ALGORITHMS[name], key, soft=True)
    return chosen


def _http_server(out: SettingsBuilder, value: object) -> None:
    section = out.section("http_server", value, known.HTTP_SERVER)
    for name, inner in section.items():
        key = f"http_server.{name}"
        try:
            if name == "port":
                out.set("port", as_int(inner), key)
            elif name == "address":
                # Centrifugo's "" listens on every interface.
                out.set("host", as_str(inner, "an address") or "0.0.0.0", key)
            else:
                out.skip(key, inner)
        except ConfigError:  # a conflict out.set found: already names its key
            raise
        except ValueError as exc:
            raise out.error(key, str(exc)) from None


def _http_api(out: SettingsBuilder, value: object) -> None:
    section = out.section("http_api", value, known.HTTP_API)
    try:
        insecure = as_bool(section.get("insecure", False))
        api_key = as_str(section.get("key", ""), "a string")
    except ValueError as exc:
        name = "insecure" if "true or false" in str(exc) else "key"
        raise out.error(f"http_api.{name}", str(exc)) from None
    if insecure:
        out.set("api_key", "", "http_api.insecure")  # no key checked, as in Centrifugo
    elif "key" in section:
        out.set("api_key", api_key, "http_api.key")
    for name, inner in section.items():
        if name not in ("key", "insecure"):
            out.skip(f"http_api.{name}", inner)


def _log(out: SettingsBuilder, value: object) -> None:
    section = out.section("log", value, known.LOG)
    if "level" in section:
        level = section["level"]
        if not isinstance(level, str) or level.lower() not in _LOG_LEVELS:
            raise out.error(
                "log.level", f"expected one of {', '.join(_LOG_LEVELS)}, got {shown(level)}"
            )
        out.set("log_level", _LOG_LEVELS[level.lower()], "log.level")
    if "file" in section:
        out.skip("log.file", section["file"])


def _engine(out: SettingsBuilder, value: object) -> None:
    section = out.section("engine", value, known.ENGINE)
    kind = section.get("type", "memory")
    if kind == "memory":
        # Soft: Centrifugo keeps presence in memory while a separate broker does pub/sub.
        out.set("broker", "memory://", "engine.type", soft=True)
        if "redis" in section:  # unused with the memory engine, but still spelled right
            out.skip(
                "engine.redis", out.section("engine.redis", section["redis"], known.ENGINE_REDIS)
            )
    elif kind == "redis":
        _redis(out, section.get("redis", {}), "engine")
    else:
        raise out.error(
            "engine.type",
            f"expected memory or redis, got {shown(kind)} (NATS is a broker: broker.type nats)",
        )


def map_broker(out: SettingsBuilder, value: dict[str, object]) -> None:
    """Centrifugo's ``broker`` object (ours is a URL string)."""
    section = out.section("broker", value, known.BROKER)
    try:
        enabled = as_bool(section.get("enabled", False))
    except ValueError as exc:
        raise out.error("broker.enabled", str(exc)) from None
    if not enabled:
        out.skip("broker", section)
        return
    kind = section.get("type")
    if kind == "redis":
        _redis(out, section.get("redis", {}), "broker")
    elif kind == "nats":
        nats = out.section("broker.nats", section.get("nats", {}), known.BROKER_NATS)
        try:
            url = as_str(nats.get("url", "nats://localhost:4222"), "a nats:// URL")
        except ValueError as exc:
            raise out.error("broker.nats.url", str(exc)) from None
        out.set("broker", url, "broker.nats.url" if "url" in nats else "broker.type")
        for name, inner in nats.items():
            if name != "url":
                out.skip(f"broker.nats.{name}", inner)
    else:
        raise out.error("broker.type", f"expected redis or nats, got {shown(kind)}")
    for name, inner in section.items():
        if name not in ("enabled", "type", "redis", "nats"):
            out.skip(f"broker.{name}", inner)


def _redis(out: SettingsBuilder, value: object, where: str) -> None:
    """``engine.redis`` / ``broker.redis``: the server or cluster, credentials, database and
    TLS as one broker URL (``centrifugo_redis.py``), and the key prefix."""
    section = out.section(f"{where}.redis", value, known.ENGINE_REDIS)
    url = redis_url(out, section, f"{where}.redis")
    named = [k for k in ("address", "cluster_address") if k in section]
    out.set("broker", url, f"{where}.redis.{named[0]}" if named else f"{where}.type")
    for name, inner in section.items():
        if name == "prefix":
            prefix = inner if isinstance(inner, str) else None
            if prefix is None:
                raise out.error(f"{where}.redis.prefix", f"expected a string, got {shown(inner)}")
            out.set("redis_prefix", f"{prefix}:", f"{where}.redis.prefix")
        elif name not in _IN_THE_URL:
            out.skip(f"{where}.redis.{name}", inner)


_IN_THE_URL = frozenset({"address", "cluster_address", "user", "password", "db", "tls"})
"""Centrifugo's Redis options that go into the broker URL."""


SECTION_MAPPERS = {
    "channel": _channel,
    "client": _client,
    "http_server": _http_server,
    "http_api": _http_api,
    "log": _log,
    "engine": _engine,
    "rpc": map_rpc,
}
"""Centrifugo's sections that map onto our settings (``broker`` is told apart by its type)."""
