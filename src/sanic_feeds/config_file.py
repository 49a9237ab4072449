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
Centrifugo's sections are mapped in :mod:`~sanic_feeds.centrifugo_config`; the typed values and
namespaces both kinds of keys share are :mod:`~sanic_feeds.config_values`. They check only what
they need to map: that every key is known and every value has the type its setting takes. The
values themselves are checked where every setting is, ``FeedsConfig.__post_init__``. Every error
is a :class:`~sanic_feeds.errors.ConfigError` whose key names the file and the dotted key:
``config.toml: channel.namespaces[1].histroy_size``.

This module never reads the environment, logs or prints: the command line decides what to do
with the warning.
"""

from __future__ import annotations

import tomllib
from collections.abc import Collection, Mapping
from dataclasses import fields
from pathlib import Path, PurePath

import orjson

from . import centrifugo_keys as known
from .centrifugo_config import SECTION_MAPPERS, map_broker
from .config import (
    ENV_PREFIX,
    FeedsConfig,
    load_config,
    parse_bool,
    parse_list,
    parse_patterns,
    parse_size,
)
from .config_values import (
    TOP_LEVEL_OPTIONS,
    FileSettings,
    SettingsBuilder,
    as_bool,
    as_int,
    as_seconds,
    as_size,
    as_str,
    hint,
    namespaces_from,
    shown,
)
from .errors import ConfigError
from .proxy_config import ProxyEndpoint, proxy_endpoints_from

CONFIG_ENV = ENV_PREFIX + "CONFIG"
"""The environment variable naming a configuration file (``--config`` wins over it)."""

_FIELDS = {f.name: f for f in fields(FeedsConfig)}


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
        raise ConfigError(path, f"the top level must be an object, got {shown(document)}")
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


def settings_from_document(document: Mapping[str, object], path: str) -> FileSettings:
    """Map a parsed document onto FeedsConfig fields. Pure; ``path`` is only for messages."""
    out = SettingsBuilder(path)
    for key, value in document.items():
        if key == "broker" and isinstance(value, dict):  # Centrifugo's section, not our URL
            map_broker(out, value)
        elif key == "namespaces":
            out.set(key, namespaces_from(out, value, key), key)
        elif key == "proxy_endpoints":
            out.set(key, _proxies(out, value, key), key)
        elif key in _FIELDS:
            out.set(key, _setting(out, key, value, key), key)
        elif key in SECTION_MAPPERS:
            SECTION_MAPPERS[key](out, value)
        elif key in known.SECTIONS:
            out.skip(key, value)
        else:
            raise out.error(key, "unknown option" + hint(key, [*_FIELDS, *known.SECTIONS]))
    return out.done()


def _proxies(out: SettingsBuilder, value: object, key: str) -> tuple[ProxyEndpoint, ...]:
    """``[[proxy_endpoints]]`` tables (or a JSON list), as ``proxy_config`` reads them."""
    if not isinstance(value, list):
        raise out.error(key, f"expected a list of proxies, got {shown(value)}")
    try:
        return proxy_endpoints_from(value)
    except ValueError as exc:
        raise out.error(key, str(exc)) from None


def _setting(out: SettingsBuilder, name: str, value: object, key: str) -> object:
    """One of our settings from the value a file holds: typed as in TOML or JSON, or the text
    form the command line takes."""
    parse = _FIELDS[name].metadata["parse"]
    try:
        if parse is parse_bool:
            return as_bool(value)
        if parse is int:
            return as_int(value)
        if parse is parse_size:
            return as_size(value)
        if parse is float:
            return as_seconds(value)
        if parse is parse_list or parse is parse_patterns:
            if isinstance(value, list):
                return parse(",".join(as_str(item, "a list of strings") for item in value))
            return parse(as_str(value, "a list of strings"))
        result: object = parse(as_str(value, "a string"))
        return result
    except ValueError as exc:
        raise out.error(key, str(exc)) from None


__all__ = [
    "CONFIG_ENV",
    "TOP_LEVEL_OPTIONS",
    "FileSettings",
    "load_with_file",
    "parse_document",
    "read_config_file",
    "settings_from_document",
]
