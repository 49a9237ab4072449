"""Configuration files: ours (TOML or JSON) and Centrifugo v6's JSON, read into typed settings.

Two kinds of keys may appear, even in one file:

- ours: the :class:`~sanic_feeds.config.FeedsConfig` field names at the top level
  (``port = 8001``, ``broker = "redis://..."``, ``rate_limit = "10/60"``, ``[[namespaces]]``);
- Centrifugo's: its sections (``client``, ``channel``, ``http_server``, ``http_api``, ``log``,
  ``engine``, ``broker`` as an object), mapped onto the same fields. A Centrifugo option we do
  not implement is collected in :attr:`FileSettings.unimplemented` for one warning; a key that
  is neither ours nor documented by Centrifugo (:mod:`~sanic_feeds.centrifugo_keys`) is an
  error, so a typo never passes unnoticed.

Reading a file (:func:`read_config_file`) is kept apart from the pure steps: parsing its text
(:func:`parse_document`) and mapping a document onto settings (:func:`settings_from_document`).
This module checks only what it needs to map: that every key is known and every value has the
type its setting takes. The values themselves are checked where every setting is,
``FeedsConfig.__post_init__``. Every error is a :class:`~sanic_feeds.errors.ConfigError` whose key
names the file and the dotted key: ``config.toml: channel.namespaces[1].histroy_size``.

This module never reads the environment, logs or prints: the command line decides what to do
with the warning.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path, PurePath

import orjson

from . import centrifugo_keys as known
from .config import (
    ENV_PREFIX,
    FeedsConfig,
    load_config,
    parse_bool,
    parse_list,
    parse_patterns,
    parse_size,
)
from .durations import parse_seconds
from .errors import ConfigError
from .namespaces import (
    NAMESPACE_NAME_RE,
    OPTION_NAMES,
    ChannelOptions,
    Namespace,
    options_from_mapping,
)
from .ratelimit import Rate

CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""The environment variable naming a configuration file (``--config`` wins over it)."""

_FIELDS = {f.name: f for f in fields(FeedsConfig)}

TOP_LEVEL_OPTIONS = tuple(
    name for name in OPTION_NAMES if name not in ("rate_limit", "max_message_size")
)
"""The channel options of channels without a namespace, each a FeedsConfig field of the same
name. (``rate_limit`` and ``max_message_size`` are namespace options only: the fields of those
names are per-connection limits on every message.)"""

_CENTRIFUGO_DEFAULTS = ChannelOptions()
"""Centrifugo's channel option defaults: everything off, no history."""

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


@dataclass(frozen=True)
class FileSettings:
    """What a configuration file sets, typed, and where each value came from."""

    path: str
    """The file as it was named, for messages."""
    values: Mapping[str, object]
    """FeedsConfig field name -> typed value (the file's layer of :func:`load_config`)."""
    keys: Mapping[str, str]
    """FeedsConfig field name -> ``"<path>: <dotted key>"``, how errors name the value."""
    unimplemented: tuple[str, ...] = ()
    """Centrifugo options present in the file that this server does not implement."""

    def warning(self) -> str | None:
        """The one line that lists every unimplemented option, or None if there are none."""
        if not self.unimplemented:
            return None
        return (
            f"{self.path}: Centrifugo options not implemented here, without effect: "
            + ", ".join(self.unimplemented)
        )

    def only(self, names: Collection[str]) -> FileSettings:
        """The same file's settings, restricted to the fields ``names`` (``publish`` needs only
        the broker's)."""
        return replace(
            self,
            values={k: v for k, v in self.values.items() if k in names},
            keys={k: v for k, v in self.keys.items() if k in names},
        )


def load_with_file(
    given: Mapping[str, str | None] | None,
    environ: Mapping[str, str] | None,
    path: str | None,
    *,
    names: Collection[str] | None = None,
) -> tuple[FeedsConfig, FileSettings | None]:
    """Build the config from the command line over the environment over the file ``path``
    (None: no file). ``names``: take only these fields from the file."""
    settings = read_config_file(path) if path else None
    if settings is not None and names is not None:
        settings = settings.only(names)
    config = load_config(
        given,
        environ,
        file_values=settings.values if settings else None,
        file_keys=settings.keys if settings else None,
    )
    return config, settings


# -- reading ------------------------------------------------------------------------------------


def read_config_file(path: str) -> FileSettings:
    """Read, parse and map the file ``path``; a ConfigError naming it for any problem."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, "no such file") from None
    except IsADirectoryError:
        raise ConfigError(path, "is a directory, not a configuration file") from None
    except OSError as exc:
        raise ConfigError(path, f"cannot read it: {exc.strerror or exc}") from None
    return settings_from_document(parse_document(data, path), path)


def parse_document(data: bytes, path: str) -> dict[str, object]:
    """The file's top-level table: TOML for ``.toml``, JSON for ``.json``; other names are tried
    as JSON, then as TOML."""
    suffix = PurePath(path).suffix.lower()
    if suffix == ".toml":
        return _toml(data, path)
    if suffix == ".json":
        return _json(data, path)
    try:
        return _json(data, path)
    except ConfigError as as_json:
        try:
            return _toml(data, path)
        except ConfigError as as_toml:
            raise ConfigError(
                path,
                f"neither JSON ({as_json.problem}) nor TOML ({as_toml.problem}); "
                "a name ending in .json or .toml says which it is",
            ) from None


def _json(data: bytes, path: str) -> dict[str, object]:
    try:
        document = orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(path, f"invalid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(path, f"the top level must be an object, got {_kind(document)}")
    return document


def _toml(data: bytes, path: str) -> dict[str, object]:
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            path, f"invalid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(path, f"invalid TOML: {exc}") from None


# -- mapping ------------------------------------------------------------------------------------


@dataclass
class _Settings:
    """The settings being gathered from one document; each field may be set by one key.

    A *soft* value (a default a section implies, such as Centrifugo's "off" for the channel
    options it does not mention) gives way to any key that sets the field itself.
    """

    path: str
    values: dict[str, object] = field(default_factory=dict)
    keys: dict[str, str] = field(default_factory=dict)
    soft: set[str] = field(default_factory=set)
    unimplemented: list[str] = field(default_factory=list)

    def error(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"{self.path}: {key}", problem)

    def set(self, name: str, value: object, key: str, *, soft: bool = False) -> None:
        if name in self.values and name not in self.soft:
            if soft:
                return
            other = self.keys[name].removeprefix(f"{self.path}: ")
            raise self.error(key, f"conflicts with {other} (both set {name})")
        self.values[name] = value
        self.keys[name] = f"{self.path}: {key}"
        if soft:
            self.soft.add(name)
        else:
            self.soft.discard(name)

    def skip(self, key: str, value: object) -> None:
        """A Centrifugo option we do not implement: remember it for the warning."""
        self.unimplemented.extend(_leaves(key, value))

    def section(self, key: str, value: object, names: Collection[str]) -> dict[str, object]:
        """``value`` as an object whose keys are all among ``names``."""
        if not isinstance(value, dict):
            raise self.error(key, f"expected an object (a table), got {_kind(value)}")
        for name in value:
            if name not in names:
                raise self.error(f"{key}.{name}", "unknown option" + _hint(name, names))
        return value

    def done(self) -> FileSettings:
        return FileSettings(self.path, self.values, self.keys, tuple(self.unimplemented))


def settings_from_document(document: Mapping[str, object], path: str) -> FileSettings:
    """Map a parsed document onto FeedsConfig fields. Pure; ``path`` is only for messages."""
    out = _Settings(path)
    for key, value in document.items():
        if key == "broker" and isinstance(value, dict):  # Centrifugo's section, not our URL
            _broker(out, value)
        elif key == "namespaces":
            out.set(key, _namespaces(out, value, key), key)
        elif key in _FIELDS:
            out.set(key, _setting(out, key, value, key), key)
        elif key in _SECTIONS:
            _SECTIONS[key](out, value)
        elif key in known.SECTIONS:
            out.skip(key, value)
        else:
            raise out.error(key, "unknown option" + _hint(key, [*_FIELDS, *known.SECTIONS]))
    return out.done()


def _setting(out: _Settings, name: str, value: object, key: str) -> object:
    """One of our settings from the value a file holds: typed as in TOML or JSON, or the text
    form the command line takes."""
    parse = _FIELDS[name].metadata["parse"]
    try:
        if parse is parse_bool:
            return _bool(value)
        if parse is int:
            return _int(value)
        if parse is parse_size:
            return _size(value)
        if parse is float:
            return _seconds(value)
        if parse is parse_list or parse is parse_patterns:
            if isinstance(value, list):
                return parse(",".join(_str(item, "a list of strings") for item in value))
            return parse(_str(value, "a list of strings"))
        result: object = parse(_str(value, "a string"))
        return result
    except ValueError as exc:
        raise out.error(key, str(exc)) from None


# -- value types --------------------------------------------------------------------------------


def _kind(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {_kind(value)}")
    return value


def _int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {_kind(value)}")
    return value


def _str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {_kind(value)}")
    return value


def _size(value: object) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected a size (bytes, or text such as 64KiB), got {_kind(value)}")
    return value


def _seconds(value: object) -> float:
    if isinstance(value, str):
        return parse_seconds(value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(
            f"expected seconds (a number, or a duration such as 30s), got {_kind(value)}"
        )
    return float(value)


def _leaves(key: str, value: object) -> Iterator[str]:
    """The dotted keys under ``key``: ``admin.enabled``, ``admin.password``, ..."""
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            yield from _leaves(f"{key}.{name}", inner)
    else:
        yield key


def _hint(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# -- channel options and namespaces -------------------------------------------------------------


def _namespaces(out: _Settings, value: object, key: str) -> tuple[Namespace, ...]:
    """``[{"name": "chat", "history_size": 10, ...}, ...]`` (Centrifugo's shape)."""
    if not isinstance(value, list):
        raise out.error(key, f"expected a list of namespaces, got {_kind(value)}")
    seen: dict[str, int] = {}
    namespaces = []
    for index, entry in enumerate(value):
        where = f"{key}[{index}]"
        namespace = _namespace(out, entry, where)
        first = seen.get(namespace.name)
        if first is not None:
            raise out.error(
                f"{where}.name",
                f"namespace {namespace.name!r} is defined twice (also {key}[{first}])",
            )
        seen[namespace.name] = index
        namespaces.append(namespace)
    return tuple(namespaces)


def _namespace(out: _Settings, entry: object, where: str) -> Namespace:
    if not isinstance(entry, dict):
        raise out.error(where, f"expected an object with a name and options, got {_kind(entry)}")
    if "name" not in entry:
        raise out.error(where, "a namespace needs a name")
    name = entry["name"]
    if not isinstance(name, str) or not NAMESPACE_NAME_RE.fullmatch(name):
        raise out.error(
            f"{where}.name", f"expected letters, digits, - and _, at least 2, got {_kind(name)}"
        )
    options = {k: v for k, v in entry.items() if k != "name"}
    values = _channel_options(out, options, where, OPTION_NAMES)
    return Namespace(name, options_from_mapping(values))


def _channel_options(
    out: _Settings, entry: Mapping[str, object], where: str, allowed: Collection[str]
) -> dict[str, object]:
    """Typed channel options; Centrifugo's others go to the warning, any other key is an error."""
    values: dict[str, object] = {}
    for name, value in entry.items():
        key = f"{where}.{name}"
        if name in allowed:
            try:
                values[name] = _option(name, value)
            except ValueError as exc:
                raise out.error(key, str(exc)) from None
        elif name in OPTION_NAMES:
            raise out.error(key, "only a namespace has this option")
        elif name in known.CHANNEL_OPTIONS:
            out.skip(key, value)
        else:
            raise out.error(
                key, "unknown option" + _hint(name, [*OPTION_NAMES, *known.CHANNEL_OPTIONS])
            )
    size = values.get("history_size", 0)
    ttl = values.get("history_ttl", 0.0)
    if (size != 0) != (ttl != 0.0):
        missing = "history_ttl" if size else "history_size"
        raise out.error(
            f"{where}.{missing}",
            "history needs both history_size and history_ttl above 0 (set both, or neither)",
        )
    return values


def _option(name: str, value: object) -> object:
    default = getattr(_CENTRIFUGO_DEFAULTS, name)
    if name == "rate_limit":
        return Rate.parse(_str(value, "COUNT/SECONDS such as 10/60"))
    if name == "max_message_size":
        return _size(value)
    if name == "channel_regex":
        pattern = _str(value, "a regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern
    if isinstance(default, bool):
        return _bool(value)
    if isinstance(default, float):
        return _seconds(value)
    return _int(value)


# -- Centrifugo's sections ----------------------------------------------------------------------


def _channel(out: _Settings, value: object) -> None:
    """``channel``: with it, channels without a namespace take Centrifugo's defaults (all off)
    for what ``without_namespace`` leaves out, as they would in Centrifugo."""
    section = out.section("channel", value, known.CHANNEL)
    without = section.get("without_namespace", {})
    if not isinstance(without, dict):
        raise out.error("channel.without_namespace", f"expected an object, got {_kind(without)}")
    given = _channel_options(out, without, "channel.without_namespace", TOP_LEVEL_OPTIONS)
    for name in TOP_LEVEL_OPTIONS:
        key = f"channel.without_namespace.{name}"
        if name == "history_ttl" and not given.get("history_ttl"):
            continue  # no history: history_size 0 says so; our history_ttl must stay above 0
        if name in given:
            out.set(name, given[name], key)
        else:
            out.set(name, getattr(_CENTRIFUGO_DEFAULTS, name), key, soft=True)
    if "namespaces" in section:
        out.set(
            "namespaces",
            _namespaces(out, section["namespaces"], "channel.namespaces"),
            "channel.namespaces",
        )
    for name, inner in section.items():
        if name not in ("without_namespace", "namespaces"):
            out.skip(f"channel.{name}", inner)


def _client(out: _Settings, value: object) -> None:
    section = out.section("client", value, known.CLIENT)
    plain = {
        "channel_limit": ("max_channels", _int),
        "user_connection_limit": ("user_connection_limit", _int),
        "connection_limit": ("max_connections", _int),
        "queue_max_size": ("client_buffer", _int),
        "ping_interval": ("ping_interval", _seconds),
        "pong_timeout": ("ping_timeout", _seconds),
        "insecure": ("insecure", _bool),
    }
    for name, inner in section.items():
        key = f"client.{name}"
        try:
            if name in plain:
                target, convert = plain[name]
                out.set(target, convert(inner), key)
            elif name == "allowed_origins":
                out.set("allowed_origins", _origins(inner), key)
            elif name == "connection_rate_limit":
                per_second = _int(inner)
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
        raise ValueError(f"expected a list of origins, got {_kind(value)}")
    origins = tuple(_str(item, "a list of strings") for item in value)
    if "*" in origins:
        return ()  # any origin, as an empty allowed_origins means here
    for origin in origins:
        if "*" in origin:
            raise ValueError(
                f"origin patterns such as {origin!r} are not supported here: list each origin"
            )
    return origins


def _token(out: _Settings, value: object) -> str | None:
    """``client.token``; returns the name of the key it sets (None: no key)."""
    section = out.section("client.token", value, known.CLIENT_TOKEN)
    chosen: str | None = None
    for name, inner in section.items():
        key = f"client.token.{name}"
        if name not in _JWT_ALGORITHMS and name not in ("audience", "issuer"):
            out.skip(key, inner)
            continue
        if not isinstance(inner, str):
            raise out.error(key, f"expected a string, got {_kind(inner)}")
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


def _http_server(out: _Settings, value: object) -> None:
    section = out.section("http_server", value, known.HTTP_SERVER)
    for name, inner in section.items():
        key = f"http_server.{name}"
        try:
            if name == "port":
                out.set("port", _int(inner), key)
            elif name == "address":
                # Centrifugo's "" listens on every interface.
                out.set("host", _str(inner, "an address") or "0.0.0.0", key)
            else:
                out.skip(key, inner)
        except ConfigError:  # a conflict out.set found: already names its key
            raise
        except ValueError as exc:
            raise out.error(key, str(exc)) from None


def _http_api(out: _Settings, value: object) -> None:
    section = out.section("http_api", value, known.HTTP_API)
    try:
        insecure = _bool(section.get("insecure", False))
        api_key = _str(section.get("key", ""), "a string")
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


def _log(out: _Settings, value: object) -> None:
    section = out.section("log", value, known.LOG)
    if "level" in section:
        level = section["level"]
        if not isinstance(level, str) or level.lower() not in _LOG_LEVELS:
            raise out.error(
                "log.level", f"expected one of {', '.join(_LOG_LEVELS)}, got {_kind(level)}"
            )
        out.set("log_level", _LOG_LEVELS[level.lower()], "log.level")
    if "file" in section:
        out.skip("log.file", section["file"])


def _engine(out: _Settings, value: object) -> None:
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
            f"expected memory or redis, got {_kind(kind)} (NATS is a broker: broker.type nats)",
        )


def _broker(out: _Settings, value: dict[str, object]) -> None:
    """Centrifugo's ``broker`` object (ours is a URL string)."""
    section = out.section("broker", value, known.BROKER)
    try:
        enabled = _bool(section.get("enabled", False))
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
            url = _str(nats.get("url", "nats://localhost:4222"), "a nats:// URL")
        except ValueError as exc:
            raise out.error("broker.nats.url", str(exc)) from None
        out.set("broker", url, "broker.nats.url" if "url" in nats else "broker.type")
        for name, inner in nats.items():
            if name != "url":
                out.skip(f"broker.nats.{name}", inner)
    else:
        raise out.error("broker.type", f"expected redis or nats, got {_kind(kind)}")
    for name, inner in section.items():
        if name not in ("enabled", "type", "redis", "nats"):
            out.skip(f"broker.{name}", inner)


def _redis(out: _Settings, value: object, where: str) -> None:
    """``engine.redis`` / ``broker.redis``: the address (one) and the key prefix."""
    section = out.section(f"{where}.redis", value, known.ENGINE_REDIS)
    key = f"{where}.redis.address"
    address = section.get("address", "redis://127.0.0.1:6379")
    if isinstance(address, list) and len(address) == 1:
        address = address[0]
    if isinstance(address, list):
        raise out.error(key, "several addresses (Redis sharding) are not supported: give one")
    if not isinstance(address, str):
        raise out.error(key, f"expected a Redis address, got {_kind(address)}")
    if address.startswith(("redis+sentinel://", "redis+cluster://")):
        raise out.error(key, "Redis Sentinel and Redis Cluster addresses are not supported here")
    url = address if "://" in address else f"redis://{address}"
    out.set("broker", url, key if "address" in section else f"{where}.type")
    for name, inner in section.items():
        if name == "prefix":
            prefix = inner if isinstance(inner, str) else None
            if prefix is None:
                raise out.error(f"{where}.redis.prefix", f"expected a string, got {_kind(inner)}")
            out.set("redis_prefix", f"{prefix}:", f"{where}.redis.prefix")
        elif name != "address":
            out.skip(f"{where}.redis.{name}", inner)


_SECTIONS = {
    "channel": _channel,
    "client": _client,
    "http_server": _http_server,
    "http_api": _http_api,
    "log": _log,
    "engine": _engine,
}
"""Centrifugo's sections that map onto our settings (``broker`` is told apart by its type)."""

__all__ = [
    "CONFIG_ENV",
    "TOP_LEVEL_OPTIONS",
    "FileSettings",
    "load_with_file",
    "parse_document",
    "read_config_file",
    "settings_from_document",
]
