"""A private, throwaway ``nats-server -js`` process for tests.

Like ``redis_server.py`` for Redis: outage tests kill, restart and freeze (SIGSTOP) the broker,
which must never happen to a server anyone else uses. Each ``NatsServer`` owns its process, port,
JetStream store directory and log. The store directory survives ``kill()`` and ``restart()``
(JetStream keeps its streams on disk, as a production server does) and is deleted by ``stop()``.

Pytest-free on purpose, like ``redis_server.py``; the fixtures live in ``fixtures.py``.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from .ports import free_port
from .redis_server import RedisServer

__all__ = ["NatsServer", "find_nats_server_binary"]

_STARTUP_TIMEOUT_S = 10.0
_BIND_RETRY_S = 5.0
_STOP_TIMEOUT_S = 5.0
_MAX_FRESH_PORT_ATTEMPTS = 5
_READY_MARKER = "Server is ready"
_ADDRESS_IN_USE_MARKER = "address already in use"


def find_nats_server_binary() -> str:
    """The ``nats-server`` on PATH (``scripts/test.sh`` installs Debian's when missing)."""
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError(
            "no nats-server binary on PATH: install it (Debian: apt-get install nats-server)"
        )
    return found


class NatsServer:
    """A ``nats-server -js`` subprocess; the port is kept across ``restart()``."""

    def __init__(self, port: int | None = None, *, binary: str | None = None) -> None:
        self._port = port
        self._binary = binary
        self._proc: subprocess.Popen[bytes] | None = None
        self._paused = False
        self._dir: Path | None = None
        self._final_log = ""
        self._atexit_registered = False

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("NatsServer has no port yet: call start() first")
        return self._port

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running server's process id (benchmarks read its CPU time)."""
        return self._require_running().pid

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def is_paused(self) -> bool:
        return self._paused and self.is_running

    def start(self) -> None:
        """Launch the server and return once it logged that it is ready."""
        if self.is_running:
            raise RuntimeError(f"nats-server is already running on port {self._port}")
        binary = self._binary or find_nats_server_binary()
        if self._dir is None or not self._dir.is_dir():
            self._dir = Path(tempfile.mkdtemp(prefix="sanic-feeds-nats-"))
        fixed_port = self._port is not None
        bind_deadline = time.monotonic() + _BIND_RETRY_S
        fresh_attempts = 0
        while True:
            if self._port is None:
                self._port = free_port()
            problem = self._launch_once(binary, self._port)
            if problem is None:
                break
            if _ADDRESS_IN_USE_MARKER not in problem:
                raise RuntimeError(problem)
            if not fixed_port:
                fresh_attempts += 1
                self._port = None
                if fresh_attempts >= _MAX_FRESH_PORT_ATTEMPTS:
                    raise RuntimeError(problem)
                continue
            if time.monotonic() >= bind_deadline:
                raise RuntimeError(f"port {self._port} stayed in use: {problem}")
            time.sleep(0.1)
        if not self._atexit_registered:
            atexit.register(self._atexit_cleanup)
            self._atexit_registered = True

    def stop(self) -> None:
        """Stop gracefully (SIGTERM, then SIGKILL) and delete the store. Idempotent."""
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
        """SIGKILL and reap: a crash. Port and store are kept for ``start()``."""
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT_S)
        self._paused = False

    def restart(self) -> None:
        """Kill and start again on the same port, with the same JetStream store."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing is answered."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        RedisServer._wait_for_proc_state(proc.pid, stopped=True)

    def resume(self) -> None:
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        RedisServer._wait_for_proc_state(proc.pid, stopped=False)

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers a PING on a fresh connection within ``timeout``."""
        if self._port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=timeout) as sock:
                sock.settimeout(timeout)
                reply = b""
                sock.sendall(b'CONNECT {"verbose":false}\r\nPING\r\n')
                while b"PONG" not in reply:
                    chunk = sock.recv(4096)
                    if not chunk:
                        return False
                    reply += chunk
                return True
        except OSError:
            return False

    def log_text(self) -> str:
        if self._dir is None:
            return self._final_log
        with contextlib.suppress(OSError):
            return (self._dir / "nats.log").read_text(errors="replace")
        return ""

    def __repr__(self) -> str:
        state = "paused" if self.is_paused else "running" if self.is_running else "stopped"
        return f"<NatsServer port={self._port} {state}>"

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError("nats-server is not running")
        return proc

    def _launch_once(self, binary: str, port: int) -> str | None:
        """Start one process; None once it is ready, else what went wrong (after reaping it)."""
        assert self._dir is not None
        log_file = self._dir / "nats.log"
        offset = log_file.stat().st_size if log_file.exists() else 0
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(self._dir / "store")]
        with log_file.open("ab") as log:
            # A new session keeps the terminal's Ctrl-C away from the server.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._proc = proc
        self._paused = False
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            with log_file.open("rb") as fh:
                fh.seek(offset)
                new_log = fh.read().decode(errors="replace")
            code = proc.poll()
            if code is not None:
                self._proc = None
                return f"nats-server on port {port} exited with code {code}:\n{new_log[-3000:]}"
            if _READY_MARKER in new_log:
                return None
            if time.monotonic() >= deadline:
                proc.kill()
                proc.wait(timeout=_STOP_TIMEOUT_S)
                self._proc = None
                return f"nats-server on port {port} not ready in time:\n{new_log[-3000:]}"
            time.sleep(0.02)

    def _atexit_cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop()
