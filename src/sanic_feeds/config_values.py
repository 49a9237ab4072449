"""Typed values out of a parsed configuration document, each named by the key it came from.

:class:`SettingsBuilder` gathers the FeedsConfig values a document sets and refuses a setting set
twice; the ``as_*`` functions check a value's type (as TOML or JSON types it, or the text form
the command line takes); :func:`namespaces_from` reads channel namespaces in Centrifugo's shape,
which our own ``namespaces`` key shares. Used by :mod:`~sanic_feeds.config_file` (our keys) and
:mod:`~sanic_feeds.centrifugo_config` (Centrifugo's sections). Pure code: no I/O.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace

from . import centrifugo_keys as known
from .config import parse_size
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

TOP_LEVEL_OPTIONS = tuple(
    name for name in OPTION_NAMES if name not in ("rate_limit", "max_message_size")
)
"""The channel options of channels without a namespace, each a FeedsConfig field of the same
name. (``rate_limit`` and ``max_message_size`` are namespace options only: the fields of those
names are per-connection limits on every message.)"""

CENTRIFUGO_DEFAULTS = ChannelOptions()
"""Centrifugo's channel option defaults: everything off, no history."""


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


# -- gathering ----------------------------------------------------------------------------------


@dataclass
class SettingsBuilder:
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
        self.unimplemented.extend(leaves(key, value))

    def section(self, key: str, value: object, names: Collection[str]) -> dict[str, object]:
        """``value`` as an object whose keys are all among ``names``."""
        if not isinstance(value, dict):
            raise self.error(key, f"expected an object (a table), got {shown(value)}")
        for name in value:
            if name not in names:
                raise self.error(f"{key}.{name}", "unknown option" + hint(name, names))
        return value

    def done(self) -> FileSettings:
        """What was gathered."""
        return FileSettings(self.path, self.values, self.keys, tuple(self.unimplemented))


# -- value types --------------------------------------------------------------------------------


def shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def as_bool(value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"expected true or false, got {shown(value)}")
    return value


def as_int(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected a whole number, got {shown(value)}")
    return value


def as_str(value: object, what: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected {what}, got {shown(value)}")
    return value


def as_size(value: object) -> int:
    if isinstance(value, str):
        return parse_size(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"expected a size (bytes, or text such as 64KiB), got {shown(value)}")
    return value


def as_seconds(value: object) -> float:
    if isinstance(value, str):
        return parse_seconds(value)
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise ValueError(
            f"expected seconds (a number, or a duration such as 30s), got {shown(value)}"
        )
    return float(value)


def leaves(key: str, value: object) -> Iterator[str]:
    """The dotted keys under ``key``: ``admin.enabled``, ``admin.password``, ..."""
    if isinstance(value, dict) and value:
        for name, inner in value.items():
            yield from leaves(f"{key}.{name}", inner)
    else:
        yield key


def hint(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1, cutoff=0.75)
    return f" (did you mean {close[0]}?)" if close else ""


# -- channel options and namespaces -------------------------------------------------------------


def namespaces_from(out: SettingsBuilder, value: object, key: str) -> tuple[Namespace, ...]:
    """``[{"name": "chat", "history_size": 10, ...}, ...]`` (Centrifugo's shape)."""
    if not isinstance(value, list):
        raise out.error(key, f"expected a list of namespaces, got {shown(value)}")
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


def _namespace(out: SettingsBuilder, entry: object, where: str) -> Namespace:
    if not isinstance(entry, dict):
        raise out.error(where, f"expected an object with a name and options, got {shown(entry)}")
    if "name" not in entry:
        raise out.error(where, "a namespace needs a name")
    name = entry["name"]
    if not isinstance(name, str) or not NAMESPACE_NAME_RE.fullmatch(name):
        raise out.error(
            f"{where}.name", f"expected letters, digits, - and _, at least 2, got {shown(name)}"
        )
    options = {k: v for k, v in entry.items() if k != "name"}
    values = channel_options_from(out, options, where, OPTION_NAMES)
    return Namespace(name, options_from_mapping(values))


def channel_options_from(
    out: SettingsBuilder, entry: Mapping[str, object], where: str, allowed: Collection[str]
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
                key, "unknown option" + hint(name, [*OPTION_NAMES, *known.CHANNEL_OPTIONS])
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
    default = getattr(CENTRIFUGO_DEFAULTS, name)
    if name == "rate_limit":
        return Rate.parse(as_str(value, "COUNT/SECONDS such as 10/60"))
    if name == "max_message_size":
        return as_size(value)
    if name == "channel_regex":
        pattern = as_str(value, "a regular expression")
        try:
            re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
        return pattern
    if isinstance(default, bool):
        return as_bool(value)
    if isinstance(default, float):
        return as_seconds(value)
    return as_int(value)
