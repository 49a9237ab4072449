"""A private, throwaway ``nats-server -js`` process for tests.

Like ``redis_server.py`` for Redis: outage tests kill, restart and freeze (SIGSTOP) the broker,
which must never happen to a server anyone else uses. Each ``NatsServer`` owns its process, port,
JetStream store directory and log. The store directory survives ``kill()`` and ``restart()``
(JetStream keeps its streams on disk, as a production server does) and is deleted by ``stop()``.

Pytest-free on purpose, like ``redis_server.py``; the fixtures live in ``fixtures.py``.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import ssl
import subprocess
import time

from .owned_process import AddressInUseError, BrokerProcess, log_offsets, read_since
from .tls import TlsFiles

__all__ = ["NatsServer", "find_nats_server_binary"]

_STARTUP_TIMEOUT_S = 10.0
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


class NatsServer(BrokerProcess):
    """A ``nats-server -js`` subprocess; the port is kept across ``restart()``."""

    _label = "nats-server"
    _dir_prefix = "sanic-feeds-nats-"

    def __init__(
        self, port: int | None = None, *, binary: str | None = None, tls: TlsFiles | None = None
    ) -> None:
        """``tls``: serve TLS only (clients verify it with ``tls.ca``; ``url`` says so)."""
        super().__init__(port, binary=binary)
        self.tls = tls

    @property
    def url(self) -> str:
        if self.tls is not None:
            return f"tls://127.0.0.1:{self.port}?ssl_ca_certs={self.tls.ca}"
        return f"nats://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        """The running server's process id (benchmarks read its CPU time)."""
        return self._require_running().pid

    def ping(self, timeout: float = 1.0) -> bool:
        """True when the server answers a PING on a fresh connection within ``timeout``."""
        if self._port is None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", self._port), timeout=timeout) as raw:
                raw.settimeout(timeout)
                sock = raw
                if self.tls is not None:  # the INFO line comes in the clear, then the handshake
                    info = b""
                    while not info.endswith(b"\r\n"):
                        chunk = raw.recv(4096)
                        if not chunk:
                            return False
                        info += chunk
                    context = ssl.create_default_context(cafile=str(self.tls.ca))
                    sock = context.wrap_socket(raw, server_hostname="127.0.0.1")
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

    def _find_binary(self) -> str:
        return find_nats_server_binary()

    def _launch_once(self, binary: str, port: int) -> None:
        """Start one process and wait until it is ready; raise (after reaping it) otherwise."""
        assert self._dir is not None
        log_file = self._dir / "nats.log"
        offsets = log_offsets((log_file,))
        argv = [binary, "-js", "-a", "127.0.0.1", "-p", str(port), "-sd", str(self._dir / "store")]
        if self.tls is not None:
            argv += ["--tls", "--tlscert", str(self.tls.cert), "--tlskey", str(self.tls.key)]
        with log_file.open("ab") as log:
            # A new session keeps the terminal's Ctrl-C away from the server.
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._started(proc)
        deadline = time.monotonic() + _STARTUP_TIMEOUT_S
        while True:
            new_log = read_since(offsets)
            code = proc.poll()
            if code is not None:
                self._proc = None
                message = f"nats-server on port {port} exited with code {code}:\n{new_log[-3000:]}"
                if _ADDRESS_IN_USE_MARKER in message:
                    raise AddressInUseError(message)
                raise RuntimeError(message)
            if _READY_MARKER in new_log:
                return
            if time.monotonic() >= deadline:
                self._reap_unready(proc)
                raise RuntimeError(
                    f"nats-server on port {port} not ready in time:\n{new_log[-3000:]}"
                )
            time.sleep(0.02)
