"""Settings, and how they are read from the command line and the environment.

Every setting is a field of :class:`FeedsConfig`. Each can be given as a command-line option
``--<name>`` (underscores become dashes), an environment variable ``SANIC_FEEDS_<NAME>`` or a
configuration file (read by :mod:`~sanic_feeds.config_file`, handed to :func:`load_config` as
typed values); the option wins over the variable, which wins over the file. Library users build
``FeedsConfig(...)`` directly. Validation happens in one place,
``FeedsConfig.__post_init__``, and every error names the setting.

Text is parsed once, when the config is built: every field holds its final type (a size is an
``int``, a rate a :class:`~sanic_feeds.ratelimit.Rate`, the broker URL is also read into a
:class:`BrokerAddress`), so nothing downstream parses a setting again.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import Field, dataclass, field, fields
from functools import cached_property
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

from .channels import ChannelPatterns
from .cluster_urls import redis_cluster_nodes
from .durations import parse_seconds
from .errors import ConfigError
from .namespaces import ChannelOptions, Namespace, Namespaces
from .nats_urls import nats_servers
from .proxy_config import ProxyEndpoint, parse_proxy_endpoints
from .ratelimit import Rate
from .redaction import redact_url
from .tls_settings import asks_for_tls
from .tls_settings import check as check_tls

ENV_PREFIX = "SANIC_FEEDS_"

_SIZE_RE = re.compile(r"(\d+)\s*([kKmM]i?[bB]?|[bB])?")
_SIZE_UNITS = {"": 1, "b": 1, "k": 1024, "m": 1024 * 1024}


def parse_size(text: str) -> int:
    """``"65536"``, ``"64k"``, ``"64KiB"``, ``"1M"``, ``"1MiB"`` -> bytes (binary units)."""
    match = _SIZE_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r} (examples: 65536, 64KiB, 1MiB)")
    unit = (match.group(2) or "").lower()[:1]
    return int(match.group(1)) * _SIZE_UNITS[unit]


def parse_bool(text: str) -> bool:
    """``on/off``, ``true/false``, ``yes/no``, ``1/0`` (any case)."""
    value = text.strip().lower()
    if value in ("on", "true", "yes", "1"):
        return True
    if value in ("off", "false", "no", "0"):
        return False
    raise ValueError(f"expected on or off, got {text!r}")


def parse_patterns(text: str) -> tuple[str, ...]:
    """Comma-separated glob patterns."""
    return ChannelPatterns.parse(text).patterns


def parse_list(text: str) -> tuple[str, ...]:
    """Comma-separated values, blanks dropped."""
    return tuple(item.strip() for item in text.split(",") if item.strip())


def parse_namespaces(text: str) -> tuple[Namespace, ...]:
    """A JSON list of namespaces: ``[{"name": "chat", "history_size": 100, ...}, ...]``.

    The form a configuration file's ``channel.namespaces`` takes, for the environment or the
    command line. Option values are typed as in JSON (``rate_limit`` as ``"COUNT/SECONDS"``).
    """
    import orjson

    try:
        entries = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"not valid JSON: {exc}") from None
    if not isinstance(entries, list):
        raise ValueError("expected a JSON list of namespaces")
    return tuple(namespace_from_json(entry) for entry in entries)


def namespace_from_json(entry: object) -> Namespace:
    """One namespace from JSON-like values (``rate_limit`` as text, ttl as seconds or as a
    duration such as ``"300s"``)."""
    if not isinstance(entry, dict):
        raise ValueError(f"each namespace must be an object, got {entry!r}")
    values = dict(entry)
    if isinstance(values.get("rate_limit"), str):
        values["rate_limit"] = Rate.parse(values["rate_limit"])
    if isinstance(values.get("history_ttl"), str):  # Centrifugo's form: "300s", "1h"
        values["history_ttl"] = parse_seconds(values["history_ttl"])
    if isinstance(values.get("history_ttl"), int) and not isinstance(values["history_ttl"], bool):
        values["history_ttl"] = float(values["history_ttl"])
    return Namespace.from_mapping(values)


AuthMode = Literal["none", "token", "jwt"]
AUTH_MODES: tuple[AuthMode, ...] = ("none", "token", "jwt")


def parse_auth(text: str) -> AuthMode:
    """``none``, ``token`` or ``jwt`` (exactly)."""
    for mode in AUTH_MODES:
        if text == mode:
            return mode
    raise ValueError(f"expected none, token or jwt, got {text!r}")


BrokerKind = Literal["memory", "redis", "redis-cluster", "nats"]
"""Which family of backends a broker URL names: in-process, a Redis server, a Redis Cluster, or
NATS."""

_BROKER_KINDS: dict[str, BrokerKind] = {
    "memory": "memory",
    "redis": "redis",
    "rediss": "redis",
    "unix": "redis",
    "redis-cluster": "redis-cluster",
    "rediss-cluster": "redis-cluster",
    "nats": "nats",
    "tls": "nats",
}
BROKER_SCHEMES = tuple(_BROKER_KINDS)
"""The URL schemes ``--broker`` accepts."""


@dataclass(frozen=True)
class BrokerAddress:
    """A broker URL, read once: the backends it names, and how it may be shown.

    Made by :meth:`parse` (``FeedsConfig.broker_address`` holds the config's); the backend
    factories dispatch on ``kind`` and never look at the URL's text themselves.
    """

    url: str = field(repr=False)
    """The URL as given, credentials included: only for connecting, never for logs."""
    scheme: str
    """``memory``, ``redis``, ``rediss`` (TLS), ``unix`` (a Redis socket path),
    ``redis-cluster`` (``redis-cluster://HOST:PORT[,HOST:PORT...]``, nodes of one Redis Cluster),
    ``rediss-cluster`` (the same over TLS),
    ``nats`` (``nats://HOST:PORT[,HOST:PORT...]``, several servers of one NATS cluster) or
    ``tls`` (the same over TLS, as NATS names it)."""
    kind: BrokerKind
    redacted: str
    """The URL with any password replaced by ``***``: what logs and ``/health`` show."""

    @classmethod
    def parse(cls, url: str) -> BrokerAddress:
        """Read a broker URL; ``ValueError`` for an unknown scheme or a malformed URL.

        The messages never contain the URL itself, which may carry a password.
        """
        scheme = url.partition("://")[0]
        kind = _BROKER_KINDS.get(scheme)
        if kind is None:
            raise ValueError(
                f"unknown scheme {scheme!r}; expected one of {', '.join(BROKER_SCHEMES)}"
            )
        try:
            parts = urlsplit(url)
            if scheme in ("redis", "rediss"):
                _ = parts.port  # raises ValueError for a port that is not a number or too big
            if kind == "nats":
                nats_servers(url)  # raises ValueError for a malformed server list
            if kind == "redis-cluster":
                redis_cluster_nodes(url)  # the same, for the cluster's nodes
            query = dict(parse_qsl(parts.query))
            if asks_for_tls(scheme, query):
                check_tls(query)  # the files are there and make a context
        except ValueError as exc:
            raise ValueError(f"invalid URL: {exc}") from None
        return cls(url, scheme, kind, redact_url(url, secret_user=kind == "nats"))


T = TypeVar("T")


def _setting(
    default: T,
    parse: Callable[[str], T],
    help: str,
    *,
    repr: bool = True,
    text: bool = False,
) -> T:
    """A field with its text parser and help. ``text``: Python callers may pass the text form
    too (it is parsed when the config is built), as for patterns and rates."""
    return field(default=default, metadata={"parse": parse, "help": help, "text": text}, repr=repr)


@dataclass(frozen=True)
class FeedsConfig:
    """All settings of a feeds server. Immutable; build a new one to change it."""

    host: str = _setting("127.0.0.1", str, "Address to listen on.")
    port: int = _setting(8000, int, "TCP port to listen on.")
    broker: str = _setting(
        "memory://",
        str,
        "Broker URL: memory:// (one process) or redis://host:port/db (many processes/machines).",
    )
    workers: int = _setting(1, int, "Worker processes. Above 1 needs a shared broker (redis://).")
    join_leave: bool = _setting(
        True, parse_bool, "Send user_joined/user_left notices (on/off). Costs members x joins."
    )
    presence: bool = _setting(
        True,
        parse_bool,
        "Top-level channels: members can see who is in them (presence frames, presence API).",
    )
    force_recovery: bool = _setting(
        False,
        parse_bool,
        "Top-level channels: Centrifugo-protocol subscriptions recover without being asked.",
    )
    force_push_join_leave: bool = _setting(
        False,
        parse_bool,
        "Top-level channels: Centrifugo-protocol subscribers all get join/leave pushes.",
    )
    allow_subscribe_for_client: bool = _setting(
        True, parse_bool, "Top-level channels: authenticated connections may join them."
    )
    allow_subscribe_for_anonymous: bool = _setting(
        True, parse_bool, "Top-level channels: anonymous connections may join them too."
    )
    allow_publish_for_subscriber: bool = _setting(
        True, parse_bool, "Top-level channels: members may publish (chat) to them."
    )
    allow_publish_for_client: bool = _setting(
        False, parse_bool, "Top-level channels: any connection may publish, member or not."
    )
    allow_publish_for_anonymous: bool = _setting(
        True, parse_bool, "Top-level channels: anonymous connections may publish where allowed."
    )
    allow_presence_for_subscriber: bool = _setting(
        True, parse_bool, "Top-level channels: members may read presence."
    )
    allow_presence_for_client: bool = _setting(
        False, parse_bool, "Top-level channels: any connection may read presence."
    )
    allow_presence_for_anonymous: bool = _setting(
        True, parse_bool, "Top-level channels: anonymous connections may read presence."
    )
    allow_history_for_subscriber: bool = _setting(
        True, parse_bool, "Top-level channels: members may read history."
    )
    allow_history_for_client: bool = _setting(
        False, parse_bool, "Top-level channels: any connection may read history."
    )
    allow_history_for_anonymous: bool = _setting(
        True, parse_bool, "Top-level channels: anonymous connections may read history."
    )
    channel_regex: str = _setting(
        "", str, "Top-level channels: clients may join only names this regular expression finds."
    )
    max_members: int = _setting(
        0, int, "Top-level channels: most members per channel over the cluster (0: no cap)."
    )
    namespaces: tuple[Namespace, ...] = _setting(
        (),
        parse_namespaces,
        "Channel namespaces as a JSON list, e.g. "
        '[{"name": "chat", "history_size": 100, "history_ttl": 300}]; a channel "chat:x" '
        "takes the options of namespace chat. Usually set in the --config file.",
        text=True,
    )
    insecure: bool = _setting(
        False,
        parse_bool,
        "Skip every channel permission check (development only; Centrifugo's client.insecure).",
    )
    user_connection_limit: int = _setting(
        0, int, "Most connections one user may hold over the cluster (0: no cap); more get 4409."
    )
    join_leave_except: tuple[str, ...] = _setting(
        (),
        parse_patterns,
        "Comma-separated channel patterns (globs) that get the opposite of --join-leave.",
        text=True,
    )
    client_buffer: int = _setting(
        1024 * 1024,
        parse_size,
        "Most bytes queued for one client before it is disconnected as too slow (close 4001).",
    )
    flush_interval: float = _setting(
        0.002,
        float,
        "Seconds a busy server gathers outgoing messages into one write per connection "
        "(0: write every loop turn). Adds at most this much latency.",
    )
    max_message_size: int = _setting(
        64 * 1024, parse_size, "Largest incoming WebSocket message; larger ones close with 1009."
    )
    ping_interval: float = _setting(20.0, float, "Seconds between WebSocket keepalive pings.")
    ping_timeout: float = _setting(20.0, float, "Seconds to wait for a pong before closing.")
    drain_time: float = _setting(
        2.0,
        float,
        "Seconds over which a shutdown spreads its 1001 closes, so clients do not all "
        "reconnect at once. 0 closes all at once.",
    )
    close_timeout: float = _setting(
        5.0, float, "Seconds a closing socket may take to flush before it is dropped."
    )
    redis_prefix: str = _setting(
        "sanic-feeds:", str, "Prefix of every Redis key and pub/sub channel this server uses."
    )
    node_ttl: float = _setting(
        15.0,
        float,
        "Seconds after which a silent instance's room counts disappear from /api/rooms.",
    )
    history_size: int = _setting(
        1000,
        int,
        "Messages kept per channel for recovery (?since=). 0 turns history and message ids off.",
    )
    history_ttl: float = _setting(
        600.0, float, "Seconds a channel's history is kept after its last chat or data message."
    )
    broker_probe_interval: float = _setting(
        2.0, float, "Seconds between liveness probes through the broker (a round trip to itself)."
    )
    broker_probe_timeout: float = _setting(
        3.0,
        float,
        "Seconds a probe may take before the broker counts as down and is reconnected.",
    )
    auth: AuthMode = _setting(
        "none", parse_auth, "Authentication: none (development), token (static tokens) or jwt."
    )
    tokens: tuple[str, ...] = _setting(
        (),
        parse_list,
        "For --auth token: comma-separated TOKEN=USER pairs (prefer the environment variable).",
        repr=False,
        text=True,
    )
    jwt_secret: str = _setting("", str, "For --auth jwt with HS256: the shared secret.", repr=False)
    jwt_public_key: str = _setting(
        "", str, "For --auth jwt with RS256/ES256: a PEM public key, or the path of a PEM file."
    )
    jwt_algorithms: tuple[str, ...] = _setting(
        (),
        parse_list,
        "Accepted JWT algorithms (default HS256 with a secret, RS256,ES256 with a public key).",
        text=True,
    )
    jwt_audience: str = _setting("", str, "Required JWT 'aud' claim, if set.")
    jwt_issuer: str = _setting("", str, "Required JWT 'iss' claim, if set.")
    allowed_origins: tuple[str, ...] = _setting(
        (),
        parse_list,
        "Comma-separated Origin values allowed to open sockets (empty: any). Browsers send it; "
        "refusing others stops cross-site WebSocket hijacking.",
        text=True,
    )
    rate_limit: Rate | None = _setting(
        None,
        Rate.parse,
        "Per-connection limit on client messages, COUNT/SECONDS (e.g. 10/60).",
        text=True,
    )
    rate_limit_violations: int = _setting(
        10, int, "Refused messages after which a connection is closed with 4429 (0: never)."
    )
    user_rate_limit: Rate | None = _setting(
        None,
        Rate.parse,
        "Per-user limit across all connections and instances, COUNT/SECONDS (off by default).",
        text=True,
    )
    max_connections: int = _setting(
        0, int, "Most open connections on this instance; more are closed with 1013 (0: no cap)."
    )
    connect_rate: Rate | None = _setting(
        None,
        Rate.parse,
        "Most new connections per instance, COUNT/SECONDS; more get 1013.",
        text=True,
    )
    max_channels: int = _setting(100, int, "Most channels one connection may join.")
    api_key: str = _setting(
        "",
        str,
        "Key of the server API (X-API-Key) and the HTTP publish API (Authorization: Bearer)."
        " Empty: no key, both are open.",
        repr=False,
    )
    max_publish_size: int = _setting(
        256 * 1024, parse_size, "Largest body accepted by the HTTP publish API (413 above)."
    )
    page: bool = _setting(True, parse_bool, "Serve the chat page at GET / (on/off).")
    subscribe_proxy_enabled: bool = _setting(
        False,
        parse_bool,
        "Ask the subscribe proxy before joins of channels without a namespace (on/off).",
    )
    publish_proxy_enabled: bool = _setting(
        False, parse_bool, "Ask the publish proxy before client publishes there (on/off)."
    )
    sub_refresh_proxy_enabled: bool = _setting(
        False, parse_bool, "Refresh expiring subscriptions there with the sub_refresh proxy."
    )
    proxy_endpoints: tuple[ProxyEndpoint, ...] = _setting(
        (),
        parse_proxy_endpoints,
        "HTTP proxies, a JSON list: "
        '[{"event": "connect", "endpoint": "http://app/connect", "timeout": "1s", '
        '"http_headers": ["Cookie"]}] (events: connect, refresh, subscribe, publish, '
        "sub_refresh, rpc; docs/hooks.md).",
    )
    webhook_endpoint: str = _setting(
        "",
        str,
        "URL the event webhooks (channel occupied/vacated, user connected/disconnected) are "
        "POSTed to; empty: none (docs/hooks.md).",
    )
    webhook_secret: str = _setting(
        "", str, "Key of the webhooks' HMAC-SHA256 signature (X-Feeds-Signature).", repr=False
    )
    hook_timeout: float = _setting(
        5.0,
        float,
        "Seconds a connect, subscribe, publish, refresh or RPC hook may take before the request "
        "is refused as a temporary error (docs/hooks.md).",
    )
    log_level: str = _setting("INFO", str, "Log level: DEBUG, INFO, WARNING, ERROR.")

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["text"] and isinstance(value, str):  # "a-*,b-*" or "10/60" from Python
                object.__setattr__(self, f.name, _parse(f, value))
        _validate(self)

    @cached_property
    def broker_address(self) -> BrokerAddress:
        """The broker URL, read (and checked) once when the config is built."""
        return BrokerAddress.parse(self.broker)

    @property
    def top_level_options(self) -> ChannelOptions:
        """The options of channels without a namespace, from the settings above."""
        return ChannelOptions(
            history_size=self.history_size,
            history_ttl=self.history_ttl,
            force_recovery=self.force_recovery,
            presence=self.presence,
            join_leave=self.join_leave,
            force_push_join_leave=self.force_push_join_leave,
            allow_subscribe_for_client=self.allow_subscribe_for_client,
            allow_subscribe_for_anonymous=self.allow_subscribe_for_anonymous,
            allow_publish_for_subscriber=self.allow_publish_for_subscriber,
            allow_publish_for_client=self.allow_publish_for_client,
            allow_publish_for_anonymous=self.allow_publish_for_anonymous,
            allow_presence_for_subscriber=self.allow_presence_for_subscriber,
            allow_presence_for_client=self.allow_presence_for_client,
            allow_presence_for_anonymous=self.allow_presence_for_anonymous,
            allow_history_for_subscriber=self.allow_history_for_subscriber,
            allow_history_for_client=self.allow_history_for_client,
            allow_history_for_anonymous=self.allow_history_for_anonymous,
            channel_regex=self.channel_regex,
            max_members=self.max_members,
            subscribe_proxy_enabled=self.subscribe_proxy_enabled,
            publish_proxy_enabled=self.publish_proxy_enabled,
            sub_refresh_proxy_enabled=self.sub_refresh_proxy_enabled,
        )

    @cached_property
    def channel_namespaces(self) -> Namespaces:
        """The options of every channel: the top-level ones and the named namespaces."""
        return Namespaces(self.top_level_options, self.namespaces)

    @property
    def join_leave_patterns(self) -> ChannelPatterns:
        return ChannelPatterns(self.join_leave_except)

    def notices_for(self) -> Callable[[str], bool]:
        """Return a predicate: does this channel get join/leave notices?

        The channel's namespace decides (``join_leave``); ``--join-leave-except`` patterns turn
        that around for the channels they match. Channels of unknown namespaces never get here.
        """
        namespaces = self.channel_namespaces
        patterns = self.join_leave_patterns

        def notices(channel: str) -> bool:
            on = namespaces.known(channel) and namespaces.options(channel).join_leave
            return on != patterns.matches(channel) if patterns else on

        return notices


def _validate(config: FeedsConfig) -> None:
    """Every check of a config's values; a ``ConfigError`` naming the setting."""
    _check(0 <= config.port <= 65535, "port", f"must be 0-65535, got {config.port}")
    _check(config.workers >= 1, "workers", f"must be at least 1, got {config.workers}")
    try:
        address = config.broker_address  # read here, once; kept for the backend factories
    except ValueError as exc:
        raise ConfigError(setting_names("broker"), str(exc)) from None
    _check(
        not (config.workers > 1 and address.kind == "memory"),
        "workers",
        "an in-memory broker cannot span processes; use --workers 1, or a shared broker "
        "such as --broker redis://127.0.0.1:6379/0",
    )
    _check(config.client_buffer >= 4096, "client_buffer", "must be at least 4KiB")
    _check(0 <= config.flush_interval <= 0.1, "flush_interval", "must be 0-0.1 seconds")
    _check(config.history_size >= 0, "history_size", "must be 0 (off) or more")
    _check(config.max_members >= 0, "max_members", "must be 0 (no cap) or more")
    _check(config.user_connection_limit >= 0, "user_connection_limit", "must be 0 (no cap) or more")
    try:
        _ = config.channel_namespaces  # built here, once: bad regexes, duplicate names
    except ValueError as exc:
        key = "channel_regex" if "channel_regex" in str(exc) else "namespaces"
        raise ConfigError(setting_names(key), str(exc)) from None
    _check(0 <= config.drain_time <= 300, "drain_time", "must be 0-300 seconds")
    if config.auth not in AUTH_MODES:
        _parse(_field("auth"), config.auth)  # raises the parser's ConfigError
    _check(
        config.auth != "token" or bool(config.tokens),
        "tokens",
        "--auth token needs at least one TOKEN=USER pair",
    )
    _check(
        all("=" in t and t.split("=", 1)[0] and t.split("=", 1)[1] for t in config.tokens),
        "tokens",
        "each entry must be TOKEN=USER",
    )
    _check(
        config.auth != "jwt" or bool(config.jwt_secret or config.jwt_public_key),
        "jwt_secret",
        "--auth jwt needs --jwt-secret (HS256) or --jwt-public-key (RS256/ES256)",
    )
    _check(config.max_channels >= 1, "max_channels", "must be at least 1")
    _check(
        not config.webhook_endpoint or bool(config.webhook_secret),
        "webhook_secret",
        "--webhook-endpoint needs a secret to sign the events with",
    )
    _check(config.max_connections >= 0, "max_connections", "must be 0 (no cap) or more")
    _check(config.rate_limit_violations >= 0, "rate_limit_violations", "must be 0 or more")
    _check(config.max_message_size >= 64, "max_message_size", "must be at least 64 bytes")
    for name in (
        "ping_interval",
        "ping_timeout",
        "close_timeout",
        "node_ttl",
        "history_ttl",
        "broker_probe_interval",
        "broker_probe_timeout",
        "hook_timeout",
    ):
        _check(getattr(config, name) > 0, name, "must be greater than 0")
    _check(
        config.log_level.upper() in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"),
        "log_level",
        f"unknown level {config.log_level!r}",
    )


def _field(name: str) -> Field[object]:
    return next(f for f in fields(FeedsConfig) if f.name == name)


def _parse(f: Field[object], text: str) -> object:
    """A setting's text as its typed value; a ``ConfigError`` naming the setting if it is bad."""
    try:
        parsed: object = f.metadata["parse"](text)
    except ValueError as exc:
        raise ConfigError(setting_names(f.name), str(exc)) from None
    return parsed


def _check(ok: bool, key: str, problem: str) -> None:
    if not ok:
        raise ConfigError(setting_names(key), problem)


def setting_names(key: str) -> str:
    """How a setting is spelled for users: ``--client-buffer / SANIC_FEEDS_CLIENT_BUFFER``."""
    return f"--{key.replace('_', '-')} / {ENV_PREFIX}{key.upper()}"


def setting_help() -> dict[str, str]:
    """Help text per setting name, for the CLI."""
    return {f.name: f.metadata["help"] for f in fields(FeedsConfig)}


def load_config(
    given: Mapping[str, str | None] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    file_values: Mapping[str, object] | None = None,
    file_keys: Mapping[str, str] | None = None,
    **values: Any,
) -> FeedsConfig:
    """Build a config from text values (command line) over ``SANIC_FEEDS_*`` environment
    variables over the values of a configuration file.

    ``given`` maps setting names to text (None means "not given"); ``values`` are already-typed
    values that win over all three. ``file_values`` are typed values read from a file
    (:mod:`~sanic_feeds.config_file` reads them), the lowest layer above the defaults;
    ``file_keys`` says where each came from (``"config.json: http_server.port"``), so that a
    value the file set and the checks refuse is named as the file spells it.
    """
    env = os.environ if environ is None else environ
    given = given or {}
    file_values = file_values or {}
    typed: dict[str, Any] = {}
    from_file: set[str] = set()
    for f in fields(FeedsConfig):
        if f.name in values:
            typed[f.name] = values[f.name]
            continue
        text = given.get(f.name)
        if text is None:
            text = env.get(ENV_PREFIX + f.name.upper())
        if text is not None:
            typed[f.name] = _parse(f, text)
        elif f.name in file_values:
            typed[f.name] = file_values[f.name]
            from_file.add(f.name)
    try:
        return FeedsConfig(**typed)
    except ConfigError as exc:
        named = {setting_names(name): name for name in from_file}
        name = named.get(exc.key)
        if name is None or file_keys is None or name not in file_keys:
            raise
        raise ConfigError(file_keys[name], exc.problem) from None
