"""Configuration files: our keys and Centrifugo v6's, precedence under the environment and the
command line, the one warning for Centrifugo options we lack, and every way a file can be wrong
(exit 2, a message naming the file and the key, never a traceback)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import jwt
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from sanic_feeds import cli
from sanic_feeds.config import FeedsConfig, load_config
from sanic_feeds.config_file import (
    CONFIG_ENV,
    TOP_LEVEL_OPTIONS,
    FileSettings,
    load_with_file,
    parse_document,
    read_config_file,
    settings_from_document,
)
from sanic_feeds.durations import parse_duration, parse_seconds
from sanic_feeds.errors import ConfigError
from sanic_feeds.namespaces import ChannelOptions, Namespace
from sanic_feeds.ratelimit import Rate
from support.server_process import ServerProcess
from support.tls import make_certificates
from support.ws import recv_json, recv_until

DOCS = Path(__file__).resolve().parents[1] / "docs"
CENTRIFUGO_EXAMPLE = DOCS / "examples" / "centrifugo.json"
TOML_EXAMPLE = DOCS / "examples" / "sanic-feeds.toml"
NO_ENV: dict[str, str] = {}


@pytest.fixture(autouse=True)
def _no_feeds_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main reads os.environ: no SANIC_FEEDS_* of the machine running the tests."""
    for name in list(os.environ):
        if name.startswith("SANIC_FEEDS_"):
            monkeypatch.delenv(name)


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def mapped(document: dict[str, Any], name: str = "c.json") -> FeedsConfig:
    """The config a document gives on its own (no flags, no environment)."""
    settings = settings_from_document(document, name)
    return load_config({}, NO_ENV, file_values=settings.values, file_keys=settings.keys)


def refused(document: dict[str, Any], name: str = "c.json") -> str:
    """The message of the ConfigError a document raises, mapped and built."""
    with pytest.raises(ConfigError) as info:
        mapped(document, name)
    return str(info.value)


def serve_fails(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """Run ``sanic-feeds serve ARGS``; it must exit 2 before serving. Returns stderr."""
    assert cli.main(["serve", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sanic-feeds: error: "), err
    assert "Traceback" not in err
    return err


# -- our own keys, TOML and JSON ----------------------------------------------------------------

OURS_TOML = """
port = 8001
host = "0.0.0.0"
broker = "redis://127.0.0.1:6379/0"
workers = 2
history_size = 100
history_ttl = "5m"
rate_limit = "10/60"
allowed_origins = ["https://a.example", "https://b.example"]
join_leave_except = "ticker.*,room-?"
max_message_size = "16KiB"
client_buffer = 2097152
ping_interval = 2.5
page = false
auth = "token"
tokens = ["t1=ann", "t2=bob"]

[[namespaces]]
name = "chat"
history_size = 10
history_ttl = "30s"
presence = true
rate_limit = "5/1"
max_message_size = "1KiB"
"""

OURS_EXPECTED = FeedsConfig(
    port=8001,
    host="0.0.0.0",
    broker="redis://127.0.0.1:6379/0",
    workers=2,
    history_size=100,
    history_ttl=300.0,
    rate_limit=Rate(10, 60),
    allowed_origins=("https://a.example", "https://b.example"),
    join_leave_except=("ticker.*", "room-?"),
    max_message_size=16 * 1024,
    client_buffer=2 * 1024 * 1024,
    ping_interval=2.5,
    page=False,
    auth="token",
    tokens=("t1=ann", "t2=bob"),
    namespaces=(
        Namespace(
            "chat",
            ChannelOptions(
                history_size=10,
                history_ttl=30.0,
                presence=True,
                rate_limit=Rate(5, 1),
                max_message_size=1024,
            ),
        ),
    ),
)


def test_our_keys_in_toml(tmp_path: Path) -> None:
    """Our settings under their field names, typed as TOML types them (or as their text)."""
    path = write(tmp_path, "feeds.toml", OURS_TOML)
    config, settings = load_with_file({}, NO_ENV, path)
    assert config == OURS_EXPECTED
    assert settings is not None and settings.warning() is None


def test_our_keys_in_json_mean_the_same(tmp_path: Path) -> None:
    """The same settings as JSON give the same config."""
    path = write(tmp_path, "feeds.json", orjson.dumps(tomllib.loads(OURS_TOML)).decode())
    assert load_with_file({}, NO_ENV, path)[0] == OURS_EXPECTED


def test_top_level_namespaces_keep_our_top_level_defaults() -> None:
    """Our own ``namespaces`` key adds namespaces and leaves channels without one as open as
    they are by default (only Centrifugo's ``channel`` section closes them)."""
    config = mapped({"namespaces": [{"name": "chat", "presence": True}]})
    assert config.top_level_options == FeedsConfig().top_level_options


def test_the_documented_toml_example_loads() -> None:
    """docs/examples/sanic-feeds.toml is a valid file without warnings (with the secret it
    expects in the environment)."""
    environ = {"SANIC_FEEDS_JWT_SECRET": "s"}
    config, settings = load_with_file({}, environ, str(TOML_EXAMPLE))
    assert settings is not None and settings.warning() is None
    assert config.namespaces


# -- precedence: flag > env > file > default ----------------------------------------------------


@pytest.mark.parametrize(
    ("flag", "env", "in_file", "expected"),
    [
        (None, None, False, 8000),  # default
        (None, None, True, 7001),  # file over default
        (None, "7002", True, 7002),  # env over file
        ("7003", "7002", True, 7003),  # flag over env and file
        ("7003", None, True, 7003),  # flag over file
    ],
)
def test_precedence(
    tmp_path: Path, flag: str | None, env: str | None, in_file: bool, expected: int
) -> None:
    """Each layer wins over the ones below it, for our keys and Centrifugo's alike."""
    environ = {"SANIC_FEEDS_PORT": env} if env else {}
    for text in ("port = 7001\n", "[http_server]\nport = 7001\n"):
        path = write(tmp_path, "c.toml", text if in_file else "")
        config, _ = load_with_file({"port": flag}, environ, path)
        assert config.port == expected


def test_env_and_flags_win_over_centrifugo_channel_defaults(tmp_path: Path) -> None:
    """The off-by-default options a ``channel`` section implies are only the file's layer."""
    path = write(tmp_path, "c.json", '{"channel": {"namespaces": []}}')
    environ = {"SANIC_FEEDS_PRESENCE": "on"}
    config, _ = load_with_file({"allow_publish_for_subscriber": "on"}, environ, path)
    assert config.presence is True
    assert config.allow_publish_for_subscriber is True
    assert config.allow_subscribe_for_client is False  # from the file's Centrifugo defaults


def test_config_flag_wins_over_config_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """SANIC_FEEDS_CONFIG names the file when --config does not."""
    from_env = write(tmp_path, "env.toml", "port = 'x'\n")
    from_flag = write(tmp_path, "flag.toml", "workers = 'x'\n")
    monkeypatch.setenv(CONFIG_ENV, from_env)
    assert "env.toml: port" in serve_fails(capsys)
    assert "flag.toml: workers" in serve_fails(capsys, "--config", from_flag)


def test_load_config_callers_without_a_file_are_unchanged() -> None:
    """load_config's older callers (text and environment only) see no difference."""
    assert load_config({"port": "1"}, {"SANIC_FEEDS_HOST": "h"}) == FeedsConfig(port=1, host="h")


# -- Centrifugo's keys --------------------------------------------------------------------------

PEM = "-----BEGIN PUBLIC KEY-----\nMFkw...\n-----END PUBLIC KEY-----\n"


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"http_server": {"port": 9000}}, {"port": 9000}),
        ({"http_server": {"address": "10.0.0.1"}}, {"host": "10.0.0.1"}),
        ({"http_server": {"address": ""}}, {"host": "0.0.0.0"}),
        ({"log": {"level": "warn"}}, {"log_level": "WARNING"}),
        ({"log": {"level": "trace"}}, {"log_level": "DEBUG"}),
        ({"http_api": {"key": "k"}}, {"api_key": "k"}),
        ({"http_api": {"key": "k", "insecure": True}}, {"api_key": ""}),
        ({"engine": {"type": "memory"}}, {"broker": "memory://"}),
        ({"engine": {"type": "redis"}}, {"broker": "redis://127.0.0.1:6379"}),
        (
            {"engine": {"type": "redis", "redis": {"address": "h:6380", "prefix": "app"}}},
            {"broker": "redis://h:6380", "redis_prefix": "app:"},
        ),
        (
            {"engine": {"type": "redis", "redis": {"address": ["rediss://:pw@h:1/2"]}}},
            {"broker": "rediss://:pw@h:1/2"},
        ),
        (
            {"broker": {"enabled": True, "type": "nats", "nats": {"url": "nats://n:4222"}}},
            {"broker": "nats://n:4222"},
        ),
        ({"broker": {"enabled": True, "type": "nats"}}, {"broker": "nats://localhost:4222"}),
        (
            {"broker": {"enabled": True, "type": "redis", "redis": {"address": "r:1"}}},
            {"broker": "redis://r:1"},
        ),
        (
            {"client": {"token": {"hmac_secret_key": "s"}}},
            {"auth": "jwt", "jwt_secret": "s", "jwt_algorithms": ("HS256", "HS384", "HS512")},
        ),
        (
            {"client": {"token": {"rsa_public_key": PEM}}},
            {"auth": "jwt", "jwt_public_key": PEM, "jwt_algorithms": ("RS256", "RS384", "RS512")},
        ),
        (
            {"client": {"token": {"ecdsa_public_key": PEM}}},
            {"auth": "jwt", "jwt_public_key": PEM, "jwt_algorithms": ("ES256", "ES384", "ES512")},
        ),
        (
            {"client": {"token": {"hmac_secret_key": "s", "audience": "a", "issuer": "i"}}},
            {"jwt_audience": "a", "jwt_issuer": "i"},
        ),
        ({"client": {"insecure": True}}, {"auth": "none", "insecure": True}),
        (
            {"client": {"insecure": True, "token": {"hmac_secret_key": "s"}}},
            {"auth": "none", "insecure": True, "jwt_secret": "s"},
        ),
        ({"client": {"allowed_origins": ["https://a.b"]}}, {"allowed_origins": ("https://a.b",)}),
        ({"client": {"allowed_origins": ["*"]}}, {"allowed_origins": ()}),
        ({"client": {"channel_limit": 7}}, {"max_channels": 7}),
        ({"client": {"user_connection_limit": 3}}, {"user_connection_limit": 3}),
        ({"client": {"connection_limit": 500}}, {"max_connections": 500}),
        ({"client": {"connection_rate_limit": 20}}, {"connect_rate": Rate(20, 1.0)}),
        ({"client": {"connection_rate_limit": 0}}, {"connect_rate": None}),
        ({"client": {"queue_max_size": 65536}}, {"client_buffer": 65536}),
        ({"client": {"ping_interval": "25s", "pong_timeout": "8s"}}, {"ping_interval": 25.0}),
        ({"client": {"pong_timeout": "1m30s"}}, {"ping_timeout": 90.0}),
        (
            {
                "channel": {
                    "without_namespace": {
                        "history_size": 10,
                        "history_ttl": "30s",
                        "presence": True,
                        "join_leave": True,
                        "force_recovery": True,
                        "force_push_join_leave": True,
                        "allow_subscribe_for_client": True,
                        "allow_publish_for_client": True,
                        "allow_history_for_anonymous": True,
                        "channel_regex": "^[a-z]+$",
                        "max_members": 5,
                    }
                }
            },
            {
                "history_size": 10,
                "history_ttl": 30.0,
                "presence": True,
                "join_leave": True,
                "force_recovery": True,
                "force_push_join_leave": True,
                "allow_subscribe_for_client": True,
                "allow_publish_for_client": True,
                "allow_history_for_anonymous": True,
                "allow_publish_for_subscriber": False,
                "channel_regex": "^[a-z]+$",
                "max_members": 5,
            },
        ),
    ],
)
def test_centrifugo_keys_map_onto_settings(
    document: dict[str, Any], expected: dict[str, object]
) -> None:
    """Each Centrifugo option we implement sets the setting that means the same here."""
    config = mapped(document)
    assert {name: getattr(config, name) for name in expected} == expected


def test_centrifugo_namespaces() -> None:
    """channel.namespaces: Centrifugo's flat objects, durations, defaults off."""
    config = mapped(
        {
            "channel": {
                "namespaces": [
                    {"name": "facts", "history_size": 10, "history_ttl": "300s"},
                    {"name": "gossips"},
                    {"name": "chat", "allow_publish_for_subscriber": True, "max_members": 3},
                ]
            }
        }
    )
    assert config.namespaces == (
        Namespace("facts", ChannelOptions(history_size=10, history_ttl=300.0)),
        Namespace("gossips"),
        Namespace("chat", ChannelOptions(allow_publish_for_subscriber=True, max_members=3)),
    )


def test_a_channel_section_closes_what_it_does_not_open() -> None:
    """With a ``channel`` section, channels without a namespace take Centrifugo's defaults for
    what ``without_namespace`` leaves out (off, no history), not our open defaults."""
    config = mapped({"channel": {"without_namespace": {"presence": True}}})
    assert config.top_level_options == ChannelOptions(presence=True, history_ttl=600.0)
    assert not config.top_level_options.keeps_history
    assert set(TOP_LEVEL_OPTIONS) <= set(FeedsConfig.__dataclass_fields__)


def test_without_a_channel_section_our_defaults_stay() -> None:
    """A Centrifugo file without ``channel`` leaves channels as our defaults have them."""
    assert mapped({"client": {"channel_limit": 5}}).top_level_options == (
        FeedsConfig().top_level_options
    )


def test_our_key_wins_over_the_default_a_channel_section_implies() -> None:
    """A top-level key of ours sets what ``without_namespace`` does not mention."""
    config = mapped({"channel": {"namespaces": []}, "presence": True})
    assert config.presence is True
    assert config.join_leave is False


def test_the_documented_centrifugo_example_maps_as_documented() -> None:
    """docs/examples/centrifugo.json: what docs/configuration.md says each part becomes."""
    config, settings = load_with_file({}, NO_ENV, str(CENTRIFUGO_EXAMPLE))
    assert (config.host, config.port, config.broker, config.log_level) == (
        "127.0.0.1",
        8000,
        "memory://",
        "INFO",
    )
    assert config.auth == "jwt"
    assert config.jwt_secret == "change-me-to-a-long-random-secret"
    assert (config.jwt_audience, config.jwt_issuer) == ("chat-app", "https://auth.example.com")
    assert config.api_key == "change-me-api-key"
    assert config.allowed_origins == ("http://localhost:3000",)
    assert (config.max_channels, config.user_connection_limit, config.max_connections) == (
        32,
        10,
        10000,
    )
    assert config.connect_rate == Rate(100, 1.0)
    assert (config.ping_interval, config.ping_timeout) == (25.0, 8.0)
    assert config.top_level_options == ChannelOptions(
        allow_subscribe_for_client=True, history_ttl=600.0
    )
    chat, news = (namespace.options for namespace in config.namespaces)
    assert (chat.history_size, chat.history_ttl, chat.allow_publish_for_subscriber) == (
        100,
        300.0,
        True,
    )
    assert (news.history_ttl, news.allow_publish_for_subscriber) == (3600.0, False)
    assert settings is not None
    assert settings.unimplemented == (
        "admin.enabled",
        "admin.password",
        "admin.secret",
        "prometheus.enabled",
    )


def test_the_documentation_shows_the_example_file() -> None:
    """The Centrifugo example in docs/configuration.md is docs/examples/centrifugo.json."""
    text = (DOCS / "configuration.md").read_text()
    blocks = re.findall(r"```json title=\"docs/examples/centrifugo.json\"\n(.*?)```", text, re.S)
    assert len(blocks) == 1
    assert orjson.loads(blocks[0]) == orjson.loads(CENTRIFUGO_EXAMPLE.read_bytes())
    toml_blocks = re.findall(
        r"```toml title=\"docs/examples/sanic-feeds.toml\"\n(.*?)```", text, re.S
    )
    assert toml_blocks == [TOML_EXAMPLE.read_text()]


# -- the warning --------------------------------------------------------------------------------


def test_one_warning_names_every_unimplemented_centrifugo_option() -> None:
    """Centrifugo options we lack, at any depth and in namespaces, are listed in one line."""
    settings = settings_from_document(
        {
            "admin": {"enabled": True, "password": "p"},
            "consumers": [{"name": "kafka"}],
            "client": {"concurrency": 8, "token": {"jwks_public_endpoint": "https://x"}},
            "channel": {
                "history_meta_ttl": "720h",
                "namespaces": [{"name": "ns", "delta_publish": True, "subscribe_cel": "x"}],
            },
            "engine": {"type": "redis", "redis": {"presence_ttl": "60s"}},
            "log": {"file": "/tmp/log"},
            "push_notifications": {"enabled": True},
        },
        "c.json",
    )
    warning = settings.warning()
    assert warning is not None and "\n" not in warning
    assert warning.startswith("c.json: Centrifugo options not implemented here")
    for key in (
        "admin.enabled",
        "admin.password",
        "consumers",
        "client.concurrency",
        "client.token.jwks_public_endpoint",
        "channel.history_meta_ttl",
        "channel.namespaces[0].delta_publish",
        "channel.namespaces[0].subscribe_cel",
        "engine.redis.presence_ttl",
        "log.file",
        "push_notifications.enabled",
    ):
        assert key in settings.unimplemented
        assert key in warning


def test_no_warning_when_everything_is_implemented() -> None:
    assert settings_from_document({"client": {"channel_limit": 3}}, "c.json").warning() is None


# -- bad files ----------------------------------------------------------------------------------


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = serve_fails(capsys, "--config", str(tmp_path / "nope.toml"))
    assert "nope.toml: no such file" in err


def test_a_directory_is_not_a_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert "is a directory" in serve_fails(capsys, "--config", str(tmp_path))


def test_unreadable_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "secret.toml", "port = 1\n")
    os.chmod(path, 0)
    if os.access(path, os.R_OK):
        pytest.skip("running as a user who can read anything")
    assert "secret.toml: cannot read it" in serve_fails(capsys, "--config", path)


def test_broken_toml_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.toml", 'port = 1\nbroker = "redis://\n')
    err = serve_fails(capsys, "--config", path)
    assert "c.toml: invalid TOML" in err
    assert "line 2" in err


def test_broken_json_says_where(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.json", '{\n  "port": 1,\n  "host": \n}')
    err = serve_fails(capsys, "--config", path)
    assert "c.json: invalid JSON" in err
    assert "line 4" in err


def test_json_must_be_an_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = serve_fails(capsys, "--config", write(tmp_path, "c.json", "[1, 2]"))
    assert "the top level must be an object" in err


def test_other_names_are_tried_as_json_then_toml(tmp_path: Path) -> None:
    """A file not named .json or .toml is read as whichever it is."""
    assert read_config_file(write(tmp_path, "feeds.conf", "port = 5\n")).values == {"port": 5}
    assert read_config_file(write(tmp_path, "feeds.cfg", '{"port": 6}')).values == {"port": 6}


def test_other_names_that_are_neither(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = serve_fails(capsys, "--config", write(tmp_path, "feeds.conf", "port: 5\n"))
    assert "feeds.conf: neither JSON (" in err
    assert "nor TOML (" in err


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"host = '\xff'\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        read_config_file(str(path))


@pytest.mark.parametrize(
    ("document", "message"),
    [
        # unknown keys, at every level, with a hint for near misses
        ({"histroy_size": 1}, "c.json: histroy_size: unknown option (did you mean history_size?)"),
        ({"clinet": {}}, "c.json: clinet: unknown option (did you mean client?)"),
        ({"client": {"tokn": {}}}, "c.json: client.tokn: unknown option (did you mean token?)"),
        ({"client": {"token": {"hmac_key": "s"}}}, "c.json: client.token.hmac_key: unknown"),
        ({"http_server": {"prot": 1}}, "c.json: http_server.prot: unknown option"),
        ({"engine": {"redis": {"adress": "x"}}}, "c.json: engine.redis.adress: unknown option"),
        ({"channel": {"namespace": []}}, "c.json: channel.namespace: unknown option"),
        (
            {"channel": {"namespaces": [{"name": "a1"}, {"name": "b1", "histroy_size": 1}]}},
            "c.json: channel.namespaces[1].histroy_size: unknown option",
        ),
        (
            {"channel": {"without_namespace": {"presense": True}}},
            "c.json: channel.without_namespace.presense: unknown option (did you mean presence?)",
        ),
        (
            {"channel": {"without_namespace": {"rate_limit": "1/1"}}},
            "channel.without_namespace.rate_limit: only a namespace has this option",
        ),
        # wrong types
        ({"port": "8000"}, "c.json: port: expected a whole number, got '8000'"),
        ({"page": "off"}, "c.json: page: expected true or false"),
        ({"host": 1}, "c.json: host: expected a string"),
        ({"allowed_origins": [1]}, "c.json: allowed_origins: expected a list of strings"),
        ({"max_message_size": "lots"}, "c.json: max_message_size: not a size"),
        ({"ping_interval": True}, "c.json: ping_interval: expected seconds"),
        ({"rate_limit": "fast"}, "c.json: rate_limit: expected COUNT/SECONDS"),
        ({"http_server": {"port": "80"}}, "c.json: http_server.port: expected a whole number"),
        ({"client": "yes"}, "c.json: client: expected an object"),
        ({"client": {"insecure": "true"}}, "c.json: client.insecure: expected true or false"),
        ({"client": {"allowed_origins": "x"}}, "client.allowed_origins: expected a list"),
        ({"client": {"token": {"hmac_secret_key": 5}}}, "client.token.hmac_secret_key: expected"),
        ({"log": {"level": "loud"}}, "c.json: log.level: expected one of trace, debug"),
        ({"engine": {"type": "kafka"}}, "c.json: engine.type: expected memory or redis"),
        ({"broker": {"enabled": True, "type": "postgres"}}, "broker.type: expected redis or nats"),
        ({"namespaces": {"name": "x"}}, "c.json: namespaces: expected a list of namespaces"),
        (
            {"channel": {"namespaces": [{"name": "ns", "presence": 1}]}},
            "channel.namespaces[0].presence: expected true or false",
        ),
        # namespaces
        (
            {"channel": {"namespaces": [{"presence": True}]}},
            "namespaces[0]: a namespace needs a name",
        ),
        ({"channel": {"namespaces": [{"name": "a b"}]}}, "channel.namespaces[0].name: expected"),
        ({"channel": {"namespaces": ["chat"]}}, "channel.namespaces[0]: expected an object"),
        (
            {"channel": {"namespaces": [{"name": "ab"}, {"name": "ab"}]}},
            "channel.namespaces[1].name: namespace 'ab' is defined twice "
            "(also channel.namespaces[0])",
        ),
        (
            {"channel": {"namespaces": [{"name": "ab", "history_ttl": "5 minutes"}]}},
            "channel.namespaces[0].history_ttl: not a duration",
        ),
        (
            {"channel": {"namespaces": [{"name": "ab", "channel_regex": "(["}]}},
            "channel.namespaces[0].channel_regex: not a valid regular expression",
        ),
        (
            {"channel": {"namespaces": [{"name": "ab", "history_size": 10}]}},
            "channel.namespaces[0].history_ttl: history needs both history_size and history_ttl",
        ),
        (
            {"channel": {"without_namespace": {"history_ttl": "1m"}}},
            "without_namespace.history_size: history needs both",
        ),
        # conflicts
        ({"port": 1, "http_server": {"port": 2}}, "c.json: http_server.port: conflicts with port"),
        (
            {"client": {"channel_limit": 5}, "max_channels": 6},
            "c.json: max_channels: conflicts with client.channel_limit (both set max_channels)",
        ),
        (
            {"namespaces": [], "channel": {"namespaces": []}},
            "channel.namespaces: conflicts with namespaces",
        ),
        (
            {"client": {"token": {"hmac_secret_key": "s", "rsa_public_key": PEM}}},
            "client.token.rsa_public_key: conflicts with client.token.hmac_secret_key",
        ),
        (
            {
                "engine": {"type": "redis"},
                "broker": {"enabled": True, "type": "nats"},
            },
            "conflicts with engine.type (both set broker)",
        ),
        (
            {"engine": {"type": "redis", "redis": {"address": ["a:1", "b:2"]}}},
            "engine.redis.address: several addresses (Redis sharding) are not supported",
        ),
        (
            {"engine": {"type": "redis", "redis": {"address": "redis+sentinel://h:1"}}},
            "Redis Sentinel is not supported; for a Redis Cluster give cluster_address",
        ),
        ({"client": {"allowed_origins": ["https://*.a.b"]}}, "origin patterns such as"),
        # values FeedsConfig refuses are named as the file spells them
        ({"http_server": {"port": 70000}}, "c.json: http_server.port: must be 0-65535"),
        ({"workers": 2}, "c.json: workers: an in-memory broker cannot span processes"),
        ({"auth": "token"}, "--auth token needs at least one TOKEN=USER pair"),
        ({"client": {"channel_limit": 0}}, "c.json: client.channel_limit: must be at least 1"),
    ],
)
def test_bad_documents_name_the_key(document: dict[str, Any], message: str) -> None:
    """Every mistake is a ConfigError whose message names the file and the dotted key (once)."""
    text = refused(document)
    assert message in text
    assert text.count("c.json") <= 1, text


def test_centrifugo_redis_settings_become_one_broker_url(tmp_path: Path) -> None:
    """Centrifugo names the server, credentials, database and TLS of its Redis apart; they all
    go into the broker URL, a cluster's too, and TLS files into its query."""
    files = make_certificates(tmp_path)

    def broker(redis: dict[str, Any]) -> str:
        return mapped({"engine": {"type": "redis", "redis": redis}}).broker

    assert broker({"address": "h:6380", "user": "app", "password": "p@ss:w", "db": 2}) == (
        "redis://app:p%40ss%3Aw@h:6380/2"
    )
    assert broker({"address": "redis://h:6380/1"}) == "redis://h:6380/1"
    tls = {"enabled": True, "server_ca_pem": str(files.ca), "insecure_skip_verify": True}
    assert broker({"address": "h:6380", "tls": tls}) == (
        f"rediss://h:6380?ssl_ca_certs={quote(str(files.ca), safe='')}&ssl_cert_reqs=none"
    )
    client = {"enabled": True, "cert_pem": str(files.cert), "key_pem": str(files.key)}
    url = broker({"cluster_address": ["a:7000", "b:7001"], "password": "pw", "tls": client})
    assert url.startswith("rediss-cluster://:pw@a:7000,b:7001?ssl_certfile=")
    assert broker({"address": "h:1", "tls": {"enabled": False}}) == "redis://h:1"
    settings = settings_from_document(
        {"engine": {"type": "redis", "redis": {"tls": {"enabled": True, "server_name": "x"}}}},
        "c.json",
    )
    assert settings.unimplemented == ("engine.redis.tls.server_name",)


@pytest.mark.parametrize(
    ("redis", "message"),
    [
        ({"tls": {"enabled": True, "server_ca_pem": "-----BEGIN CERTIFICATE-----\nMII"}}, "path"),
        ({"tls": {"enabled": True, "server_ca_pem": "LS0tLS1CRUdJTiBDRVJU"}}, "PEM file"),
        ({"tls": {"enabled": True, "server_ca_pem": "/nowhere/ca.pem"}}, "TLS settings"),
        ({"address": "h:1", "cluster_address": ["a:1"]}, "not both"),
        ({"cluster_address": ["a:1"], "db": 1}, "one database"),
        ({"cluster_address": ["a:x"]}, "invalid URL"),
        ({"address": "redis://u:p@h:1", "password": "q"}, "credentials of its own"),
        ({"user": 7}, "engine.redis.user"),
        ({"password": ["p"]}, "engine.redis.password"),
        (
            {"tls": {"enabled": True, "cert_pem": "/a.pem", "cert_pem_file": "/b.pem"}},
            "cert_pem is given too",
        ),
    ],
)
def test_centrifugo_redis_settings_that_cannot_be_a_url(
    redis: dict[str, Any], message: str
) -> None:
    assert message in refused({"engine": {"type": "redis", "redis": redis}})


def test_bad_documents_exit_2_through_the_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The command prints the same message and exits 2, for serve and publish."""
    path = write(tmp_path, "config.toml", '[[channel.namespaces]]\nname = "ab"\nhistroy_size = 1\n')
    expected = (
        "sanic-feeds: error: " + path + ": channel.namespaces[0].histroy_size: unknown option"
    )
    assert serve_fails(capsys, "--config", path).startswith(expected)
    assert cli.main(["publish", "--config", path, "chan", "1"]) == 2
    assert capsys.readouterr().err.startswith(expected)


def test_a_bad_file_value_is_refused_even_under_a_flag(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A file with a wrong type is refused even when a flag sets that setting: the file is
    wrong, and the next start without the flag would fail."""
    path = write(tmp_path, "c.toml", "port = '80'\n")
    assert "c.toml: port: expected a whole number" in serve_fails(
        capsys, "--config", path, "--port", "81"
    )


def test_publish_takes_the_broker_from_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish --config uses the file's broker (here a Redis nobody listens on: exit 1), and is
    not stopped by serve-only settings in it."""
    path = write(
        tmp_path,
        "c.json",
        '{"engine": {"type": "redis", "redis": {"address": "127.0.0.1:1"}}, "workers": 4}',
    )
    assert cli.main(["publish", "--config", path, "chan", "1"]) == 1
    assert "broker unavailable" in capsys.readouterr().err


# -- durations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0.0),
        ("300s", 300.0),
        ("1m30s", 90.0),
        ("500ms", 0.5),
        ("720h", 720 * 3600.0),
        ("1.5h", 5400.0),
        (".5s", 0.5),
        ("1h2m3s4ms5us6ns", 3723.004005006),
        ("10µs", 0.00001),
    ],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize(
    "text", ["", "s", "5", "-5s", "+5s", "5 s", " 5s", "1d", "5sm", "ms", "1.2.3s", "5S", "0s5"]
)
def test_parse_duration_refuses(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration"):
        parse_duration(text)


_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1, "ms": 0.001, "us": 0.000001, "ns": 0.000000001}


@given(st.lists(st.tuples(st.integers(0, 10**6), st.sampled_from(list(_UNIT_SECONDS))), min_size=1))
def test_duration_parts_add_up(parts: list[tuple[int, str]]) -> None:
    """Any sequence of <integer><unit> parts is the sum of its parts."""
    text = "".join(f"{count}{unit}" for count, unit in parts)
    expected = sum(count * _UNIT_SECONDS[unit] for count, unit in parts)
    assert parse_duration(text) == pytest.approx(expected)


@given(st.floats(0, 10**7, allow_nan=False))
def test_seconds_round_trip(seconds: float) -> None:
    """Seconds written as a bare number, as ``<n>s`` or as ``<n*1000>ms`` read back the same."""
    text = f"{seconds:.6f}"
    assert parse_seconds(text) == float(text)
    assert parse_duration(text + "s") == pytest.approx(float(text))
    assert parse_duration(f"{seconds * 1000:.3f}ms") == pytest.approx(seconds, abs=1e-6)


@given(st.text(max_size=20))
def test_garbage_durations_raise_only_value_error(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except ValueError:
        return
    assert seconds >= 0


# -- random documents ---------------------------------------------------------------------------

_json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**40), 2**40)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=12,
)
_known_names = st.sampled_from(
    [
        "port", "broker", "namespaces", "history_ttl", "allowed_origins", "rate_limit", "auth",
        "client", "channel", "engine", "http_server", "http_api", "log", "admin",
    ]
)  # fmt: skip
_inner_names = st.sampled_from(
    [
        "token", "insecure", "namespaces", "without_namespace", "type", "redis", "address",
        "enabled", "nats", "port", "key", "level", "name", "history_size", "history_ttl",
        "hmac_secret_key", "allowed_origins", "channel_limit", "presence", "channel_regex",
    ]
)  # fmt: skip
_documents = st.dictionaries(
    _known_names | st.text(max_size=8),
    st.dictionaries(_inner_names, _json_values, max_size=4) | _json_values,
    max_size=4,
)


@given(_documents)
def test_random_documents_raise_only_config_errors(document: dict[str, Any]) -> None:
    """Whatever a JSON file holds, mapping and building the config raise ConfigError or
    nothing."""
    try:
        settings = settings_from_document(document, "r.json")
        load_config({}, NO_ENV, file_values=settings.values, file_keys=settings.keys)
    except ConfigError:
        pass


@given(st.binary(max_size=40))
def test_random_bytes_raise_only_config_errors(data: bytes) -> None:
    """Whatever bytes a file holds, parsing it raises ConfigError or nothing."""
    for name in ("r.json", "r.toml", "r.conf"):
        with contextlib.suppress(ConfigError):
            parse_document(data, name)


def test_file_settings_only_keeps_the_named_fields() -> None:
    settings = FileSettings("c.json", {"port": 1, "broker": "x"}, {"port": "a", "broker": "b"})
    assert settings.only({"broker"}).values == {"broker": "x"}


# -- a real server from the documented Centrifugo example ---------------------------------------


async def close_code(ws: ClientConnection) -> int | None:
    """Read until the server closes ``ws``; the code of its close frame."""
    try:
        async with asyncio.timeout(5):
            while True:
                await recv_json(ws)
    except ConnectionClosed as closed:
        return closed.rcvd.code if closed.rcvd is not None else None


async def test_a_server_started_from_the_centrifugo_example() -> None:
    """``sanic-feeds serve --config docs/examples/centrifugo.json`` serves what the file says,
    over real sockets: its JWT secret, audience and issuer; history (message ids) in ``chat``;
    no publishing in ``news`` or at the top level (Centrifugo's default); 4404 for a namespace
    it does not define; its API key; and one warning for the options it does not implement."""
    example = orjson.loads(CENTRIFUGO_EXAMPLE.read_bytes())
    claims = {"sub": "ann", "aud": "chat-app", "iss": "https://auth.example.com"}
    token = jwt.encode(claims, example["client"]["token"]["hmac_secret_key"], "HS256")
    wrong_audience = jwt.encode({**claims, "aud": "other"}, "change-me-to-a-long-random-secret")

    def is_(kind: str) -> Any:
        return lambda message: message["type"] == kind

    with ServerProcess("memory://", extra_args=["--config", str(CENTRIFUGO_EXAMPLE)]) as server:
        async with connect(server.ws_url("chat:room", token=token)) as ws:
            assert (await recv_json(ws))["type"] == "system"
            await ws.send('{"type": "chat", "message": "hi"}')
            chat = await recv_until(ws, is_("chat"))
            assert chat["message"] == "hi"
            assert isinstance(chat["id"], int)  # chat keeps history: messages carry ids

        for channel in ("news:today", "lobby"):  # subscribe allowed, publish not
            async with connect(server.ws_url(channel, token=token)) as ws:
                assert (await recv_json(ws))["type"] == "system"
                await ws.send('{"type": "chat", "message": "hi"}')
                error = await recv_until(ws, is_("error"))
                assert error["code"] == "forbidden", channel

        for url, code in (
            (server.ws_url("games:chess", token=token), 4404),  # no such namespace
            (server.ws_url("chat:room"), 1008),  # no token
            (server.ws_url("chat:room", token=wrong_audience), 1008),
        ):
            async with connect(url) as ws:
                assert await close_code(ws) == code, url

        async with httpx.AsyncClient(base_url=server.http_url) as http:
            publish = "/api/channels/news:today/publish"
            assert (await http.post(publish, json=1)).status_code == 401
            headers = {"Authorization": "Bearer change-me-api-key"}
            assert (await http.post(publish, json=1, headers=headers)).status_code == 200

        log = server.log_text()
    warnings = [line for line in log.splitlines() if "not implemented here" in line]
    assert len(warnings) == 1
    for key in ("admin.enabled", "admin.password", "admin.secret", "prometheus.enabled"):
        assert key in warnings[0]
