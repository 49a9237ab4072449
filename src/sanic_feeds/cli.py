"""The ``sanic-feeds`` command: ``serve`` runs a server, ``publish`` sends one message.

Every ``serve`` option is a :class:`~sanic_feeds.config.FeedsConfig` field and can also be set
with ``SANIC_FEEDS_<NAME>`` or in a configuration file (``--config``, ours or Centrifugo's); the
option wins over the environment, which wins over the file. Errors in settings exit with status 2
and a message naming the setting, never with a traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import fields

import orjson

from . import __version__, protocol
from .backends import create_broker_for
from .channels import CHANNEL_RULES, is_valid_channel
from .client import Message
from .config import ENV_PREFIX, FeedsConfig, setting_help
from .config_file import CONFIG_ENV, FileSettings, load_with_file
from .envelope import seal
from .errors import BrokerUnavailable, ConfigError

_FLAGS = {"join_leave": "on|off", "page": "on|off"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sanic-feeds",
        description="Real-time WebSocket feeds on Sanic, scaled out through Redis.",
    )
    parser.add_argument("--version", action="version", version=f"sanic-feeds {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser(
        "serve",
        help="run the feed server",
        description="Run the feed server. Every option can also be set as "
        f"{ENV_PREFIX}<NAME> in the environment (e.g. {ENV_PREFIX}BROKER).",
    )
    _add_config_option(serve)
    helps = setting_help()
    for f in fields(FeedsConfig):
        serve.add_argument(
            "--" + f.name.replace("_", "-"),
            dest=f.name,
            default=None,
            metavar=_FLAGS.get(f.name, f.name.upper()),
            help=f"{helps[f.name]} [{ENV_PREFIX}{f.name.upper()}; default: {_show(f.default)}]",
        )

    publish = commands.add_parser(
        "publish",
        help="publish one message to a channel through the broker",
        description="Publish JSON to CHANNEL; members receive "
        '{"type": "data", "channel": CHANNEL, "data": JSON}.',
    )
    _add_config_option(publish, "its broker settings only; ")
    publish.add_argument("--broker", default=None, help=f"broker URL [{ENV_PREFIX}BROKER]")
    publish.add_argument("--redis-prefix", dest="redis_prefix", default=None)
    publish.add_argument(
        "--history-size",
        dest="history_size",
        default=None,
        help="as given to the servers (0: do not store the message) "
        f"[{ENV_PREFIX}HISTORY_SIZE; default 1000]",
    )
    publish.add_argument(
        "--history-ttl",
        dest="history_ttl",
        default=None,
        help=f"as given to the servers [{ENV_PREFIX}HISTORY_TTL; default 600]",
    )
    publish.add_argument(
        "--namespaces",
        default=None,
        help=f"as given to the servers (a channel's namespace decides whether it is stored) "
        f"[{ENV_PREFIX}NAMESPACES]",
    )
    publish.add_argument("channel", help=f"channel name ({CHANNEL_RULES})")
    publish.add_argument("json", help="the message data, as JSON text")
    tail = commands.add_parser(
        "tail",
        help="print a channel's messages as they arrive",
        description="Follow CHANNEL and print every message, one per line. Reconnects and "
        "resumes by itself.",
    )
    tail.add_argument("channel", help="channel to follow")
    tail.add_argument(
        "--url",
        action="append",
        dest="urls",
        default=None,
        help="server base URL; repeat it for the instances of a cluster, which are tried in "
        "turn when one goes away [default: ws://127.0.0.1:8000]",
    )
    tail.add_argument("--token", default=None, help=f"credential [{ENV_PREFIX}TOKEN]")
    tail.add_argument("--since", type=int, default=None, help="start after this message id")
    tail.add_argument("--json", action="store_true", help="print the raw JSON messages")
    return parser


def _add_config_option(command: argparse.ArgumentParser, note: str = "") -> None:
    command.add_argument(
        "--config",
        dest="config_file",
        default=None,
        metavar="FILE",
        help=f"configuration file, TOML or JSON, ours or Centrifugo v6's ({note}options and "
        f"environment variables win over it) [{CONFIG_ENV}]",
    )


def _config_path(args: argparse.Namespace) -> str | None:
    path: str | None = args.config_file or os.environ.get(CONFIG_ENV) or None
    return path


def _show(value: object) -> str:
    if value is None:  # a rate that is not set
        return "off"
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, tuple):
        return ",".join(value) or "none"
    return str(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "tail":
            return _tail(args)
        return _publish(args)
    except ConfigError as exc:
        print(f"sanic-feeds: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


def _serve(args: argparse.Namespace) -> int:
    given = {f.name: getattr(args, f.name) for f in fields(FeedsConfig)}
    config, settings = load_with_file(given, None, _config_path(args))
    from .app import configure_logging, serve  # Sanic is imported only when serving

    configure_logging(config.log_level)
    _warn_unimplemented(settings)
    try:
        asyncio.run(_reach_broker(config))
    except BrokerUnavailable as exc:
        where = config.broker_address.redacted
        print(f"sanic-feeds: cannot start: broker {where}: {exc}", file=sys.stderr)
        return 1
    serve(config)
    return 0


async def _reach_broker(config: FeedsConfig) -> None:
    """Connect to the broker once before the server starts: a wrong address, a node that does
    not answer, a server of the wrong kind (a plain Redis given as a cluster, a Redis without
    sharded pub/sub) is one clear line and exit status 1, not a traceback from each worker."""
    if config.broker_address.kind == "memory":
        return
    broker = create_broker_for(config)
    try:
        await broker.open()  # publish-only: no subscriber, no probe
    finally:
        await broker.aclose()


def _warn_unimplemented(settings: FileSettings | None) -> None:
    """One warning for every Centrifugo option the file holds and this server lacks: in the log
    (which goes to stderr), or straight to stderr when the log level hides warnings."""
    warning = settings.warning() if settings else None
    if warning is None:
        return
    logger = logging.getLogger("sanic_feeds.config_file")
    if logger.isEnabledFor(logging.WARNING):
        logger.warning("%s", warning)
    else:
        print(f"sanic-feeds: warning: {warning}", file=sys.stderr)


def _publish(args: argparse.Namespace) -> int:
    # Only the broker settings matter here: a serve-only variable in the environment (a port,
    # a worker count) must not break a one-off publish.
    given = {
        "broker": args.broker,
        "redis_prefix": args.redis_prefix,
        "history_size": args.history_size,
        "history_ttl": args.history_ttl,
        "namespaces": args.namespaces,
    }
    wanted = {ENV_PREFIX + name.upper() for name in given}
    environ = {k: v for k, v in os.environ.items() if k in wanted}
    config, _ = load_with_file(given, environ, _config_path(args), names=set(given))
    if config.broker_address.kind == "memory":
        raise ConfigError(
            "--broker",
            "memory:// lives inside one server process; publish through a shared broker "
            "such as redis://127.0.0.1:6379/0",
        )
    if not is_valid_channel(args.channel):
        raise ConfigError("CHANNEL", f"invalid channel name; channel names are {CHANNEL_RULES}")
    if not config.channel_namespaces.known(args.channel):
        raise ConfigError("CHANNEL", "its namespace is not configured (see --namespaces)")
    try:
        data = orjson.loads(args.json)
    except orjson.JSONDecodeError as exc:
        raise ConfigError("JSON", f"not valid JSON: {exc}") from None
    body = protocol.data(args.channel, data)
    try:
        asyncio.run(_send(config, args.channel, body))
    except BrokerUnavailable as exc:
        print(f"sanic-feeds: broker unavailable: {exc}", file=sys.stderr)
        return 1
    print(f"published to {args.channel}")
    return 0


async def _send(config: FeedsConfig, channel: str, body: bytes) -> None:
    broker = create_broker_for(config)
    await broker.open()  # publish-only: no subscriber, no liveness probe
    try:
        if config.channel_namespaces.history_rules.for_channel(channel).size > 0:
            await broker.publish_stored(channel, body)
        else:
            await broker.publish(channel, seal(body))
    finally:
        await broker.aclose()


def _tail(args: argparse.Namespace) -> int:
    from .client import FeedClient, FeedClosed

    token = args.token or os.environ.get(ENV_PREFIX + "TOKEN")
    urls: list[str] = args.urls or ["ws://127.0.0.1:8000"]

    async def follow() -> None:
        async with FeedClient(urls, args.channel, token=token, since=args.since) as feed:
            async for message in feed:
                line = orjson.dumps(dict(message.raw)).decode() if args.json else describe(message)
                print(line, flush=True)

    try:
        asyncio.run(follow())
    except FeedClosed as exc:
        print(f"sanic-feeds: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"sanic-feeds: cannot connect to {', '.join(urls)}: {exc}", file=sys.stderr)
        return 1
    return 0


def describe(message: Message) -> str:
    """One readable line for a message."""
    raw = message.raw
    where = f"[{message.channel}]" if message.channel else ""
    match message.type:
        case "chat":
            return f"{where} {raw.get('user')}: {_text(raw.get('message'))}"
        case "data":
            return f"{where} data: {_text(raw.get('data'))}"
        case "user_joined" | "user_left":
            verb = "joined" if message.type == "user_joined" else "left"
            return f"{where} * {raw.get('user')} {verb}"
        case "error":
            return f"{where} error {raw.get('code')}: {raw.get('message')}"
        case _:
            return f"{where} {message.type}: {_text(dict(raw))}"


def _text(value: object) -> str:
    return value if isinstance(value, str) else orjson.dumps(value).decode()
