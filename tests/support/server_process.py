"""Run the real ``sanic-feeds serve`` command as a subprocess for end-to-end tests.

Why a subprocess instead of Sanic's in-process test client: the things worth testing end to end
(startup and graceful shutdown on SIGTERM, several server processes fanning out through one Redis,
a server that crashes) only exist at the process level, and running the CLI exercises the same
code path users run.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Self
from urllib.parse import quote, urlencode

import httpx

from .owned_process import AddressInUseError, OwnedProcess, log_offsets, read_since
from .ports import free_port

__all__ = ["QueryValue", "ServerProcess"]

QueryValue = str | int | float | bool | None
"""A query-string value for ``ServerProcess.ws_url``; None leaves the key out."""

_SRC_DIR = Path(__file__).resolve().parents[2] / "src"
"""The repository's ``src``: put on PYTHONPATH so the checkout runs even when not installed."""

_HEALTH_POLL_INTERVAL_S = 0.1
_HEALTH_REQUEST_TIMEOUT_S = 1.0
_KILL_WAIT_S = 5.0
_LOG_TAIL_CHARS = 4000
_MAX_FRESH_PORT_ATTEMPTS = 3
_ADDRESS_IN_USE_MARKERS = ("address already in use", "errno 98", "eaddrinuse")

# RFC 3986 "pchar" minus the percent sign: characters that may appear unescaped in a path segment.
_PATH_SEGMENT_SAFE = "-._~!$&'()*+,;=:@"


class ServerProcess(OwnedProcess):
    """One ``python -m sanic_feeds serve`` process listening on 127.0.0.1.

    The server runs in its own session (process group): Sanic may start worker processes, and
    ``kill()`` must take all of them down, not only the parent.

    Not thread-safe; drive it from the test's thread.
    """

    def __init__(
        self,
        broker_url: str,
        *,
        port: int | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str | None] | None = None,
        cwd: str | os.PathLike[str] | None = None,
    ) -> None:
        """Prepare, but do not start, a server.

        ``broker_url``: passed as ``--broker``. ``port``: a fixed port, else a free one is picked.
        ``extra_args``: appended to the command line. ``env``: overrides on top of ``os.environ``;
        a None value removes that variable. ``cwd``: working directory (default: inherited).
        """
        super().__init__(port)
        self._broker_url = broker_url
        self._fixed_port = port is not None
        self._extra_args = tuple(extra_args)
        self._env_overrides = dict(env or {})
        self._cwd = cwd
        self._dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-server-"))
        self._log_path = self._dir / "server.log"
        self._final_log: str | None = None

    # -- properties -------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        """Base URL for plain HTTP requests, without a trailing slash."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def returncode(self) -> int | None:
        """Exit code once the process has exited (negative: killed by that signal)."""
        return None if self._proc is None else self._proc.poll()

    @property
    def log_path(self) -> Path:
        """File that receives the server's stdout and stderr."""
        return self._log_path

    def ws_url(self, channel: str, **query: QueryValue) -> str:
        """WebSocket URL of a channel's feed, e.g. ``ws://127.0.0.1:P/feed/news?since=3``.

        Valid channel names need no escaping and pass through unchanged; anything that would break
        the URL (``/``, ``?``, spaces, non-ASCII) is percent-encoded so tests of invalid names
        still produce a well-formed request. Booleans become ``true``/``false``; None values are
        left out.
        """
        url = f"ws://127.0.0.1:{self.port}/feed/{quote(channel, safe=_PATH_SEGMENT_SAFE)}"
        pairs = [
            (key, ("true" if value else "false") if isinstance(value, bool) else str(value))
            for key, value in query.items()
            if value is not None
        ]
        return f"{url}?{urlencode(pairs)}" if pairs else url

    # -- lifecycle --------------------------------------------------------------------------

    def start(self, timeout: float = 20.0) -> None:
        """Launch the server and return once ``GET /health`` answers 200.

        Raises RuntimeError, with the tail of the server's log, if the process exits first or the
        deadline passes (the process is killed then, so nothing is leaked). If an automatically
        chosen port turns out to be taken, another one is tried.
        """
        if self.is_running:
            raise RuntimeError(f"server is already running on port {self._port}")
        deadline = time.monotonic() + timeout
        attempts = 0
        while True:
            attempts += 1
            if self._port is None:
                self._port = free_port()
            try:
                self._launch_once(deadline)
            except AddressInUseError as exc:
                if self._fixed_port or attempts >= _MAX_FRESH_PORT_ATTEMPTS:
                    raise RuntimeError(str(exc)) from None
                self._port = None
                continue
            return

    def stop(self, timeout: float = 10.0) -> int:
        """Ask the server to shut down (SIGTERM) and return its exit code.

        If it is still running after ``timeout`` seconds its whole process group gets SIGKILL
        (the code is then ``-9``). Leftover workers are killed either way. Calling it on a server
        that already exited just returns the code.
        """
        proc = self._proc
        if proc is None:
            raise RuntimeError("server was never started")
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGUSR1)  # stacks into the log, for the failure
                time.sleep(0.5)
                self._kill_group(proc)
                print(
                    f"server on port {self._port} ignored SIGTERM:\n{self.log_tail()}",
                    file=sys.stderr,
                )
                proc.wait(timeout=_KILL_WAIT_S)
        self._kill_group(proc)  # workers that outlived the main process
        return proc.returncode

    def kill(self) -> None:
        """SIGKILL the server's whole process group and reap the main process (a crash)."""
        proc = self._proc
        if proc is None:
            return
        self._kill_group(proc)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        proc.wait(timeout=_KILL_WAIT_S)

    def close(self) -> None:
        """Kill the server if needed and delete the temporary directory.

        The log is read first and stays available from ``log_text()``.
        """
        if self._proc is not None and self._proc.poll() is None:
            self.stop()
        if self._final_log is None:
            self._final_log = self.log_text()
            shutil.rmtree(self._dir, ignore_errors=True)

    def log_text(self) -> str:
        """Everything the server printed so far (stdout and stderr interleaved)."""
        if self._final_log is not None:
            return self._final_log
        try:
            return self._log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, chars: int = _LOG_TAIL_CHARS) -> str:
        """The last ``chars`` characters of the log, for assertion and error messages."""
        return self.log_text()[-chars:]

    # -- context manager --------------------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else f"exited({self.returncode})"
        return f"<ServerProcess port={self._port} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _argv(self) -> list[str]:
        return [
            sys.executable, "-m", "sanic_feeds", "serve",
            "--host", "127.0.0.1",
            "--port", str(self.port),
            "--broker", self._broker_url,
            *self._extra_args,
        ]  # fmt: skip

    def _environ(self) -> dict[str, str]:
        env = dict(os.environ)
        python_path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = f"{_SRC_DIR}{os.pathsep}{python_path}" if python_path else str(_SRC_DIR)
        for key, value in self._env_overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = value
        env["PYTHONUNBUFFERED"] = "1"  # so the log is complete when the process is killed
        return env

    def _launch_once(self, deadline: float) -> None:
        offsets = log_offsets((self._log_path,))
        with self._log_path.open("ab") as log:
            proc = subprocess.Popen(
                self._argv(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self._environ(),
                cwd=self._cwd,
                start_new_session=True,
            )
        self._proc = proc
        health = f"{self.http_url}/health"
        # trust_env=False: a proxy from HTTP_PROXY must never see requests to 127.0.0.1.
        with httpx.Client(timeout=_HEALTH_REQUEST_TIMEOUT_S, trust_env=False) as client:
            while True:
                code = proc.poll()
                if code is not None:
                    self._kill_group(proc)
                    new_log = read_since(offsets)
                    message = (
                        f"server exited with code {code} before {health} answered 200; "
                        f"log tail:\n{new_log[-_LOG_TAIL_CHARS:]}"
                    )
                    if any(m in new_log.lower() for m in _ADDRESS_IN_USE_MARKERS):
                        raise AddressInUseError(message)
                    raise RuntimeError(message)
                last = ""
                remaining = deadline - time.monotonic()
                try:
                    response = client.get(
                        health, timeout=min(_HEALTH_REQUEST_TIMEOUT_S, max(remaining, 0.05))
                    )
                except httpx.TransportError as exc:
                    last = f"{type(exc).__name__}: {exc}"
                else:
                    if response.status_code == 200:
                        return
                    last = f"HTTP {response.status_code}"
                if time.monotonic() >= deadline:
                    self.kill()
                    raise RuntimeError(
                        f"server did not answer 200 on {health} in time (last: {last}); "
                        f"log tail:\n{self.log_tail()}"
                    )
                time.sleep(_HEALTH_POLL_INTERVAL_S)

    @staticmethod
    def _kill_group(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL every process in the server's session (its pgid is the main pid)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
