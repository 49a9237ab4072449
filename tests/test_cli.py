"""The ``sanic-feeds`` command, run as a real subprocess: exit codes and messages, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path

import pytest

from sanic_feeds import __version__
from sanic_feeds.config import ENV_PREFIX, FeedsConfig

# Port 1 (tcpmux) has no listener on any test machine: connecting is refused at once.
DEAD_REDIS = "redis://127.0.0.1:1/0"


def run_cli(*args: str, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sanic_feeds ARGS`` with no SANIC_FEEDS_* inherited from this process."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "sanic_feeds", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env=environ,
        check=False,
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], status: int, *says: str) -> None:
    """The command exited with ``status``, said why on stderr (each of ``says`` in it), and
    printed no traceback."""
    assert result.returncode == status, result
    assert result.stderr.strip()
    assert "Traceback" not in result.stderr
    assert "Traceback" not in result.stdout
    for words in says:
        assert words in result.stderr, (words, result.stderr)


def test_version() -> None:
    """--version prints the package version and exits 0."""
    result = run_cli("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"sanic-feeds {__version__}"


def test_serve_help_lists_every_setting() -> None:
    """serve --help has an option for every FeedsConfig field and mentions SANIC_FEEDS_."""
    result = run_cli("serve", "--help")
    assert result.returncode == 0
    for f in fields(FeedsConfig):
        assert "--" + f.name.replace("_", "-") in result.stdout, f.name
        assert ENV_PREFIX + f.name.upper() in result.stdout, f.name
    assert "SANIC_FEEDS_" in result.stdout


def test_no_command_is_a_usage_error() -> None:
    """Running without a command is an argparse usage error (status 2)."""
    result = run_cli()
    assert_clean_error(result, 2, "usage:")


def test_serve_many_workers_with_memory_broker() -> None:
    """serve --workers 2 with the default memory broker exits 2 explaining the in-memory broker."""
    result = run_cli("serve", "--workers", "2")
    assert_clean_error(result, 2, "in-memory broker", "--workers", "redis://")


def test_serve_many_workers_from_environment() -> None:
    """SANIC_FEEDS_WORKERS=2 in the environment is refused the same way."""
    result = run_cli("serve", env={"SANIC_FEEDS_WORKERS": "2"})
    assert_clean_error(result, 2, "in-memory broker", "SANIC_FEEDS_WORKERS")


def test_serve_bad_client_buffer() -> None:
    """serve --client-buffer lots exits 2 naming --client-buffer and the bad value."""
    result = run_cli("serve", "--client-buffer", "lots")
    assert_clean_error(result, 2, "--client-buffer", "SANIC_FEEDS_CLIENT_BUFFER", "'lots'")


def test_publish_with_memory_broker() -> None:
    """publish with the default memory broker exits 2: it cannot reach any server."""
    result = run_cli("publish", "lobby", '{"a": 1}')
    assert_clean_error(result, 2, "--broker", "memory://", "redis://")
    assert result.stdout == ""


def test_publish_to_unreachable_broker() -> None:
    """publish to a Redis nobody listens on exits 1 with 'broker unavailable'."""
    result = run_cli("publish", "--broker", DEAD_REDIS, "chan", "{}")
    assert_clean_error(result, 1, "broker unavailable")
    assert "published" not in result.stdout


def test_serve_with_an_unreachable_broker() -> None:
    """serve with a broker nobody listens on exits 1 with one line naming it, no traceback."""
    result = run_cli("serve", "--port", "0", "--broker", DEAD_REDIS)
    assert_clean_error(result, 1, f"cannot start: broker {DEAD_REDIS}: cannot connect to Redis")


def test_publish_broker_from_environment() -> None:
    """publish takes the broker from SANIC_FEEDS_BROKER when --broker is not given."""
    result = run_cli("publish", "chan", "1", env={"SANIC_FEEDS_BROKER": DEAD_REDIS})
    assert_clean_error(result, 1, "broker unavailable")


@pytest.mark.parametrize("channel", ["bad name", "_lead", "a/b", ""])
def test_publish_bad_channel(channel: str) -> None:
    """publish to an invalid channel name exits 2 naming the channel rules."""
    result = run_cli("publish", "--broker", DEAD_REDIS, channel, "1")
    assert_clean_error(result, 2, "invalid channel name")


def test_publish_invalid_json() -> None:
    """publish with data that is not JSON exits 2 saying so."""
    result = run_cli("publish", "--broker", DEAD_REDIS, "chan", "{not json")
    assert_clean_error(result, 2, "not valid JSON")


@pytest.mark.parametrize("url", ["redis://127.0.0.1:abc/0", "redis://127.0.0.1:99999/0"])
def test_publish_malformed_broker_url_is_a_setting_error(url: str) -> None:
    """A broker URL with a malformed port exits 2 naming --broker, without a traceback."""
    result = run_cli("publish", "--broker", url, "chan", "1")
    assert_clean_error(result, 2, "--broker")


def test_publish_ignores_serve_only_environment() -> None:
    """A serve-only variable (a bad port, a worker count) does not break a one-off publish."""
    result = run_cli(
        "publish",
        "chan",
        "1",
        env={
            "SANIC_FEEDS_PORT": "abc",
            "SANIC_FEEDS_WORKERS": "2",
            "SANIC_FEEDS_BROKER": DEAD_REDIS,
        },
    )
    assert_clean_error(result, 1, "broker unavailable")


def test_serve_with_a_bad_config_file(tmp_path: Path) -> None:
    """A configuration file with an unknown key exits 2 naming the file and the key, from
    --config or from SANIC_FEEDS_CONFIG."""
    path = tmp_path / "config.toml"
    path.write_text("[[channel.namespaces]]\nname = 'chat'\nhistroy_size = 10\n")
    for result in (
        run_cli("serve", "--config", str(path)),
        run_cli("serve", env={"SANIC_FEEDS_CONFIG": str(path)}),
    ):
        assert_clean_error(result, 2)
        assert f"{path}: channel.namespaces[0].histroy_size: unknown option" in result.stderr
