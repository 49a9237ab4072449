"""Settings: defaults, text parsing, command line over environment, validation messages."""

from __future__ import annotations

import types
import typing
from dataclasses import fields
from typing import Any

import pytest

from sanic_feeds.config import (
    BROKER_SCHEMES,
    ENV_PREFIX,
    BrokerAddress,
    FeedsConfig,
    load_config,
    parse_bool,
    parse_patterns,
    parse_size,
    setting_help,
    setting_names,
)
from sanic_feeds.errors import ConfigError, FeedsError
from sanic_feeds.namespaces import ChannelOptions, Namespace
from sanic_feeds.proxy_config import ProxyEndpoint
from sanic_feeds.ratelimit import Rate

REDIS = "redis://127.0.0.1:6379/0"
NO_ENV: dict[str, str] = {}

# -- defaults -----------------------------------------------------------------------------------


def test_defaults() -> None:
    """FeedsConfig() has the documented defaults."""
    config = FeedsConfig()
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.broker == "memory://"
    assert config.workers == 1
    assert config.join_leave is True
    assert config.join_leave_except == ()
    assert config.client_buffer == 1024 * 1024
    assert config.max_message_size == 64 * 1024
    assert config.ping_interval == 20.0
    assert config.ping_timeout == 20.0
    assert config.close_timeout == 5.0
    assert config.redis_prefix == "sanic-feeds:"
    assert config.node_ttl == 15.0
    assert config.page is True
    assert config.log_level == "INFO"


def test_load_config_with_nothing_given_is_the_defaults() -> None:
    """load_config with no values and an empty environment equals FeedsConfig()."""
    assert load_config({}, NO_ENV) == FeedsConfig()
    assert load_config(None, NO_ENV) == FeedsConfig()


def test_config_is_frozen() -> None:
    """A config cannot be changed after it is built."""
    config = FeedsConfig()
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]  # assigning to a frozen field is the point


def test_every_setting_has_help() -> None:
    """setting_help() has a non-empty help text for every field."""
    helps = setting_help()
    assert set(helps) == {f.name for f in fields(FeedsConfig)}
    assert all(helps.values())


# -- load_config sources ------------------------------------------------------------------------

ALL_TEXT = {
    "host": "0.0.0.0",
    "port": "9001",
    "broker": REDIS,
    "workers": "4",
    "join_leave": "off",
    "join_leave_except": "ticker.*, room-?",
    "client_buffer": "64KiB",
    "max_message_size": "1M",
    "ping_interval": "2.5",
    "ping_timeout": "3",
    "close_timeout": "0.5",
    "drain_time": "0",
    "flush_interval": "0.002",
    "auth": "token",
    "tokens": "t1=ann, t2=bob",
    "jwt_secret": "sh",
    "jwt_public_key": "",
    "jwt_algorithms": "HS256,HS512",
    "jwt_audience": "aud",
    "jwt_issuer": "iss",
    "allowed_origins": "https://a.example, https://b.example",
    "rate_limit": "10/60",
    "rate_limit_violations": "3",
    "user_rate_limit": "100/60",
    "max_connections": "5000",
    "connect_rate": "200/1",
    "max_channels": "20",
    "api_key": "s3cret",
    "max_publish_size": "8KiB",
    "redis_prefix": "app:",
    "node_ttl": "30",
    "history_size": "50",
    "history_ttl": "120",
    "broker_probe_interval": "1.5",
    "broker_probe_timeout": "2",
    "page": "no",
    "log_level": "debug",
    "presence": "off",
    "force_recovery": "on",
    "force_push_join_leave": "on",
    "allow_subscribe_for_client": "on",
    "allow_subscribe_for_anonymous": "off",
    "allow_publish_for_subscriber": "off",
    "allow_publish_for_client": "on",
    "allow_publish_for_anonymous": "off",
    "allow_presence_for_subscriber": "off",
    "allow_presence_for_client": "on",
    "allow_presence_for_anonymous": "off",
    "allow_history_for_subscriber": "off",
    "allow_history_for_client": "on",
    "allow_history_for_anonymous": "off",
    "channel_regex": "^[a-z]+$",
    "max_members": "500",
    "namespaces": '[{"name": "chat", "history_size": 10, "history_ttl": 60, "presence": true,'
    ' "rate_limit": "5/1"}]',
    "insecure": "on",
    "user_connection_limit": "3",
    "hook_timeout": "2",
    "webhook_endpoint": "http://app/hook",
    "webhook_secret": "whsec",
    "subscribe_proxy_enabled": "on",
    "publish_proxy_enabled": "on",
    "sub_refresh_proxy_enabled": "on",
    "proxy_endpoints": '[{"event": "connect", "endpoint": "http://app/c", "timeout": "2s",'
    ' "http_headers": ["Cookie"]}]',
}

ALL_TYPED = FeedsConfig(
    host="0.0.0.0",
    port=9001,
    broker=REDIS,
    workers=4,
    join_leave=False,
    join_leave_except=("ticker.*", "room-?"),
    client_buffer=64 * 1024,
    max_message_size=1024 * 1024,
    ping_interval=2.5,
    ping_timeout=3.0,
    close_timeout=0.5,
    drain_time=0.0,
    flush_interval=0.002,
    auth="token",
    tokens=("t1=ann", "t2=bob"),
    jwt_secret="sh",
    jwt_public_key="",
    jwt_algorithms=("HS256", "HS512"),
    jwt_audience="aud",
    jwt_issuer="iss",
    allowed_origins=("https://a.example", "https://b.example"),
    rate_limit=Rate(10, 60),
    rate_limit_violations=3,
    user_rate_limit=Rate(100, 60),
    max_connections=5000,
    connect_rate=Rate(200, 1),
    max_channels=20,
    api_key="s3cret",
    max_publish_size=8192,
    redis_prefix="app:",
    node_ttl=30.0,
    history_size=50,
    history_ttl=120.0,
    broker_probe_interval=1.5,
    broker_probe_timeout=2.0,
    page=False,
    log_level="debug",
    presence=False,
    force_recovery=True,
    force_push_join_leave=True,
    allow_subscribe_for_client=True,
    allow_subscribe_for_anonymous=False,
    allow_publish_for_subscriber=False,
    allow_publish_for_client=True,
    allow_publish_for_anonymous=False,
    allow_presence_for_subscriber=False,
    allow_presence_for_client=True,
    allow_presence_for_anonymous=False,
    allow_history_for_subscriber=False,
    allow_history_for_client=True,
    allow_history_for_anonymous=False,
    channel_regex="^[a-z]+$",
    max_members=500,
    namespaces=(
        Namespace(
            "chat",
            ChannelOptions(history_size=10, history_ttl=60.0, presence=True, rate_limit=Rate(5, 1)),
        ),
    ),
    insecure=True,
    user_connection_limit=3,
    hook_timeout=2.0,
    webhook_endpoint="http://app/hook",
    webhook_secret="whsec",
    subscribe_proxy_enabled=True,
    publish_proxy_enabled=True,
    sub_refresh_proxy_enabled=True,
    proxy_endpoints=(ProxyEndpoint("connect", "http://app/c", 2.0, ("Cookie",)),),
)


def test_all_text_values_cover_every_setting() -> None:
    """The test's text values name every FeedsConfig field (so new fields get tested)."""
    assert set(ALL_TEXT) == {f.name for f in fields(FeedsConfig)}


def test_load_from_given_text() -> None:
    """Every setting is parsed from its command-line text."""
    assert load_config(ALL_TEXT, NO_ENV) == ALL_TYPED


def test_load_from_environment() -> None:
    """Every setting is read from SANIC_FEEDS_<NAME> when not given."""
    environ = {ENV_PREFIX + name.upper(): text for name, text in ALL_TEXT.items()}
    assert load_config(None, environ) == ALL_TYPED


def test_none_given_falls_back_to_environment() -> None:
    """A given value of None means 'not given': the environment value is used."""
    config = load_config({"port": None}, {"SANIC_FEEDS_PORT": "1234"})
    assert config.port == 1234


def test_given_wins_over_environment() -> None:
    """A given text value wins over the environment variable for the same setting."""
    environ = {"SANIC_FEEDS_PORT": "1111", "SANIC_FEEDS_HOST": "10.0.0.1"}
    config = load_config({"port": "2222"}, environ)
    assert config.port == 2222
    assert config.host == "10.0.0.1"


def test_typed_values_win_over_given_and_environment() -> None:
    """Keyword (typed) values win over both the given text and the environment."""
    config = load_config({"port": "2222"}, {"SANIC_FEEDS_PORT": "1111"}, port=3333)
    assert config.port == 3333


def test_typed_value_skips_parsing_of_bad_text() -> None:
    """A setting given as a typed value ignores unparseable text for that setting elsewhere."""
    config = load_config({"port": "nope"}, {"SANIC_FEEDS_PORT": "nope"}, port=1)
    assert config.port == 1


def test_unrelated_and_lowercase_env_vars_are_ignored() -> None:
    """Only SANIC_FEEDS_<UPPER NAME> variables are read."""
    environ = {"sanic_feeds_port": "1", "PORT": "2", "SANIC_FEEDS_port": "3", "FEEDS_PORT": "4"}
    assert load_config(None, environ).port == 8000


def test_load_config_does_not_read_os_environ_when_environ_given(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An explicit environ mapping replaces os.environ entirely."""
    monkeypatch.setenv("SANIC_FEEDS_PORT", "4321")
    assert load_config(None, NO_ENV).port == 8000


# -- parse_size / parse_bool / parse_patterns ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0", 0),
        ("65536", 65536),
        ("64k", 64 * 1024),
        ("64K", 64 * 1024),
        ("64kb", 64 * 1024),
        ("64KB", 64 * 1024),
        ("64KiB", 64 * 1024),
        ("64kib", 64 * 1024),
        ("1M", 1024 * 1024),
        ("1m", 1024 * 1024),
        ("1MB", 1024 * 1024),
        ("1MiB", 1024 * 1024),
        ("512b", 512),
        ("512B", 512),
        (" 64 KiB ", 64 * 1024),
        ("007", 7),
    ],
)
def test_parse_size(text: str, expected: int) -> None:
    """Sizes accept plain bytes and binary k/M units with optional i and B."""
    assert parse_size(text) == expected


@pytest.mark.parametrize(
    "text",
    ["", " ", "lots", "k", "1.5M", "-1", "+1", "1G", "1 GB", "64KiBs", "0x10", "1e3", "1,024"],
)
def test_parse_size_rejects_bad_text(text: str) -> None:
    """Anything that is not <digits>[unit] is a ValueError that shows examples."""
    with pytest.raises(ValueError, match="not a size") as info:
        parse_size(text)
    assert "64KiB" in str(info.value)


@pytest.mark.parametrize("text", ["on", "ON", "true", "True", "yes", "YES", "1", " on "])
def test_parse_bool_true(text: str) -> None:
    """on/true/yes/1 in any case (and surrounding spaces) are True."""
    assert parse_bool(text) is True


@pytest.mark.parametrize("text", ["off", "OFF", "false", "False", "no", "No", "0", " off\n"])
def test_parse_bool_false(text: str) -> None:
    """off/false/no/0 in any case (and surrounding spaces) are False."""
    assert parse_bool(text) is False


@pytest.mark.parametrize("text", ["", "maybe", "2", "y", "n", "t", "enabled", "onn"])
def test_parse_bool_rejects_other_text(text: str) -> None:
    """Any other text is a ValueError saying on or off is expected."""
    with pytest.raises(ValueError, match="expected on or off"):
        parse_bool(text)


def test_parse_patterns() -> None:
    """Pattern lists split on commas, strip spaces and drop empties."""
    assert parse_patterns(" a.*, ,b-? ,") == ("a.*", "b-?")
    assert parse_patterns("") == ()


# -- errors -------------------------------------------------------------------------------------


def test_setting_names_spelling() -> None:
    """A setting is named as its flag and its environment variable."""
    assert setting_names("client_buffer") == "--client-buffer / SANIC_FEEDS_CLIENT_BUFFER"


@pytest.mark.parametrize(
    ("name", "bad"),
    [
        ("port", "http"),
        ("workers", "two"),
        ("join_leave", "maybe"),
        ("client_buffer", "lots"),
        ("max_message_size", "1.5M"),
        ("ping_interval", "soon"),
        ("page", "2"),
    ],
)
@pytest.mark.parametrize("source", ["given", "env"])
def test_unparseable_text_names_flag_and_env_var(name: str, bad: str, source: str) -> None:
    """Bad text from either source is a ConfigError naming both the flag and the env variable."""
    flag = "--" + name.replace("_", "-")
    env_var = ENV_PREFIX + name.upper()
    given, environ = ({name: bad}, NO_ENV) if source == "given" else (None, {env_var: bad})
    with pytest.raises(ConfigError) as info:
        load_config(given, environ)
    message = str(info.value)
    assert flag in message
    assert env_var in message
    assert bad in message
    assert info.value.key == f"{flag} / {env_var}"


def test_config_error_is_a_value_error_and_feeds_error() -> None:
    """ConfigError can be caught as FeedsError or ValueError."""
    with pytest.raises(ConfigError) as info:
        load_config({"client_buffer": "lots"}, NO_ENV)
    assert isinstance(info.value, FeedsError)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("port", [-1, 65536, 100_000])
def test_port_out_of_range(port: int) -> None:
    """Ports outside 0-65535 are refused, naming --port."""
    with pytest.raises(ConfigError, match=r"--port / SANIC_FEEDS_PORT: must be 0-65535"):
        FeedsConfig(port=port)


@pytest.mark.parametrize("port", [0, 1, 65535])
def test_port_edges_accepted(port: int) -> None:
    """Ports 0 and 65535 are within range."""
    assert FeedsConfig(port=port).port == port


def test_port_out_of_range_from_text() -> None:
    """An out-of-range port given as text is refused too."""
    with pytest.raises(ConfigError, match="SANIC_FEEDS_PORT"):
        load_config({"port": "70000"}, NO_ENV)


@pytest.mark.parametrize("workers", [0, -3])
def test_workers_below_one(workers: int) -> None:
    """Fewer than one worker is refused."""
    with pytest.raises(ConfigError, match="--workers"):
        FeedsConfig(workers=workers)


def test_many_workers_with_memory_broker_refused() -> None:
    """workers > 1 with memory:// is refused with a message that points at redis."""
    with pytest.raises(ConfigError) as info:
        FeedsConfig(workers=2)
    message = str(info.value)
    assert "--workers / SANIC_FEEDS_WORKERS" in message
    assert "in-memory broker" in message
    assert "redis://" in message


def test_many_workers_with_memory_broker_from_env_refused() -> None:
    """SANIC_FEEDS_WORKERS=2 with the default broker is refused the same way."""
    with pytest.raises(ConfigError, match="redis"):
        load_config(None, {"SANIC_FEEDS_WORKERS": "2"})


@pytest.mark.parametrize("broker", [REDIS, "rediss://h:6380/1", "unix:///tmp/redis.sock"])
def test_many_workers_with_shared_broker_accepted(broker: str) -> None:
    """workers > 1 is fine with a shared broker."""
    assert FeedsConfig(workers=8, broker=broker).workers == 8


@pytest.mark.parametrize("broker", ["kafka://h:9092", "http://x", "", "REDIS://h", "redis:/x"])
def test_unknown_broker_scheme_refused(broker: str) -> None:
    """A broker URL whose scheme is not known is refused, listing the known schemes."""
    with pytest.raises(ConfigError, match="--broker / SANIC_FEEDS_BROKER: unknown scheme") as info:
        FeedsConfig(broker=broker)
    for scheme in BROKER_SCHEMES:
        assert scheme in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "flag"),
    [
        ({"client_buffer": 4095}, "--client-buffer"),
        ({"max_message_size": 63}, "--max-message-size"),
        ({"ping_interval": 0.0}, "--ping-interval"),
        ({"ping_timeout": -1.0}, "--ping-timeout"),
        ({"close_timeout": 0.0}, "--close-timeout"),
        ({"node_ttl": 0.0}, "--node-ttl"),
        ({"log_level": "LOUD"}, "--log-level"),
    ],
)
def test_out_of_range_values_refused(kwargs: dict[str, Any], flag: str) -> None:
    """Values below their minimum (or unknown log levels) are refused, naming the setting."""
    with pytest.raises(ConfigError, match=flag):
        FeedsConfig(**kwargs)


def test_minimum_values_accepted() -> None:
    """The documented minimums themselves are accepted."""
    config = FeedsConfig(client_buffer=4096, max_message_size=64, log_level="warning")
    assert (config.client_buffer, config.max_message_size) == (4096, 64)


# -- notices_for ----------------------------------------------------------------------------------


@pytest.mark.parametrize("join_leave", [True, False])
def test_notices_without_exceptions(join_leave: bool) -> None:
    """Without except patterns every channel gets the join_leave setting."""
    notices = FeedsConfig(join_leave=join_leave).notices_for()
    assert notices("lobby") is join_leave
    assert notices("ticker.X") is join_leave


def test_notices_on_with_exceptions() -> None:
    """join_leave on: channels matching an except pattern get no notices, others do."""
    notices = load_config({"join_leave_except": "ticker.*,big-?"}, NO_ENV).notices_for()
    assert notices("lobby") is True
    assert notices("ticker.AAPL") is False
    assert notices("big-1") is False
    assert notices("big-12") is True


def test_notices_off_with_exceptions() -> None:
    """join_leave off: only channels matching an except pattern get notices."""
    config = load_config({"join_leave": "off", "join_leave_except": "small-*"}, NO_ENV)
    notices = config.notices_for()
    assert notices("small-room") is True
    assert notices("lobby") is False


def test_join_leave_patterns_property() -> None:
    """join_leave_patterns is a ChannelPatterns built from join_leave_except."""
    patterns = FeedsConfig(join_leave_except=("a*",)).join_leave_patterns
    assert patterns.matches("abc")
    assert not patterns.matches("bac")


def test_patterns_given_as_a_string_from_python_are_split() -> None:
    """FeedsConfig(join_leave_except="a-*, b-*") means two patterns, not one per character."""
    config = FeedsConfig(join_leave_except="a-*, b-*")  # type: ignore[arg-type]  # str on purpose
    assert config.join_leave_except == ("a-*", "b-*")
    notices = config.notices_for()
    assert notices("a-1") is False
    assert notices("x") is True


# -- typed fields, parsed once ------------------------------------------------------------------


def _matches(value: object, hint: object) -> bool:
    """Does ``value`` have the (simple) type ``hint``: a class, ``X | None``, a Literal, or
    ``tuple[str, ...]``?"""
    origin = typing.get_origin(hint)
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if origin is tuple:
        item = typing.get_args(hint)[0]
        return isinstance(value, tuple) and all(_matches(v, item) for v in value)
    if hint is type(None):
        return value is None
    assert isinstance(hint, type), hint
    return isinstance(value, hint) and not (hint is int and isinstance(value, bool))


def test_every_field_has_a_precise_type() -> None:
    """No field is typed Any, and every value, default or parsed from text, has its field's type
    (so nothing downstream needs to parse a setting again)."""
    hints = typing.get_type_hints(FeedsConfig)
    parsed = load_config(ALL_TEXT, NO_ENV)
    for f in fields(FeedsConfig):
        hint = hints[f.name]
        assert hint is not Any, f.name
        assert _matches(f.default, hint), (f.name, f.default, hint)
        assert _matches(getattr(parsed, f.name), hint), (f.name, getattr(parsed, f.name), hint)


@pytest.mark.parametrize("name", ["rate_limit", "user_rate_limit", "connect_rate"])
def test_rates_are_parsed_when_the_config_is_built(name: str) -> None:
    """A rate is a Rate from an option, an environment variable or Python text, and None
    (no limit) by default or for off; a Rate can be given as it is."""
    env_var = ENV_PREFIX + name.upper()
    assert getattr(FeedsConfig(), name) is None
    assert getattr(load_config({name: "10/60"}, NO_ENV), name) == Rate(10, 60)
    assert getattr(load_config(None, {env_var: " 3 / 1.5 "}), name) == Rate(3, 1.5)
    assert getattr(load_config({name: "off"}, NO_ENV), name) is None
    python: list[tuple[Any, Rate | None]] = [
        ("5/1", Rate(5, 1)),
        ("", None),
        (Rate(2, 4), Rate(2, 4)),
    ]
    for value, expected in python:
        given: dict[str, Any] = {name: value}  # a setting chosen by name, spread into FeedsConfig
        assert getattr(FeedsConfig(**given), name) == expected


@pytest.mark.parametrize("name", ["rate_limit", "user_rate_limit", "connect_rate"])
@pytest.mark.parametrize("bad", ["fast", "10/0", "0/5", "10 per 60"])
def test_bad_rate_names_the_setting(name: str, bad: str) -> None:
    """A bad rate, as text or from Python, is a ConfigError naming the setting and the value."""
    flag, env_var = "--" + name.replace("_", "-"), ENV_PREFIX + name.upper()
    given: dict[str, Any] = {name: bad}
    with pytest.raises(ConfigError) as from_text:
        load_config(given, NO_ENV)
    with pytest.raises(ConfigError) as from_python:
        FeedsConfig(**given)
    for info in (from_text, from_python):
        assert info.value.key == f"{flag} / {env_var}"
        assert bad in str(info.value)


def test_rate_shows_as_its_text() -> None:
    """A parsed rate reads back as COUNT/SECONDS (as in the rate-limit error message)."""
    assert str(load_config({"rate_limit": "10/60"}, NO_ENV).rate_limit) == "10/60"
    assert str(FeedsConfig(connect_rate=Rate(2, 0.5)).connect_rate) == "2/0.5"


@pytest.mark.parametrize("bad", ["basic", "JWT", "", "token "])
def test_unknown_auth_names_the_setting(bad: str) -> None:
    """--auth takes none, token or jwt exactly; anything else names --auth, as text or Python."""
    problem = "--auth / SANIC_FEEDS_AUTH: expected none, token or jwt"
    with pytest.raises(ConfigError, match=problem):
        load_config({"auth": bad}, NO_ENV)
    settings: dict[str, Any] = {"auth": bad}  # not an AuthMode: the point of the test
    with pytest.raises(ConfigError, match=problem):
        FeedsConfig(**settings)


def test_sizes_are_ints_from_text() -> None:
    """Sizes are read once into bytes: the config holds ints, never the text."""
    config = load_config({"client_buffer": "2MiB", "max_publish_size": "8k"}, NO_ENV)
    assert (config.client_buffer, config.max_publish_size) == (2 * 1024 * 1024, 8192)


def test_broker_address_is_parsed_with_the_config() -> None:
    """The config's broker URL is read into a BrokerAddress when the config is built."""
    config = load_config({"broker": "rediss://:pw@h:6380/1"}, NO_ENV)
    assert config.broker_address == BrokerAddress.parse("rediss://:pw@h:6380/1")
    assert config.broker_address.kind == "redis"
    assert config.broker_address.redacted == "rediss://:***@h:6380/1"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:abc/0", "rediss://h:70000/0"])
def test_malformed_broker_url_names_the_setting(url: str) -> None:
    """A broker URL with a bad port is refused when the config is built, naming --broker."""
    with pytest.raises(ConfigError, match="--broker / SANIC_FEEDS_BROKER: invalid URL"):
        FeedsConfig(broker=url)
