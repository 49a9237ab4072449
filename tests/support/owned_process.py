"""What every server process a test owns has in common: its port, its process, and, for the
brokers, the start, stop, crash and freeze that outage tests do to it.

``RedisServer``, ``NatsServer`` and ``ServerProcess`` each launch a different program and know in
their own way when it is ready, but the rest is the same, and it is where the subtle parts are:
retrying a port someone else grabbed, resuming a frozen process before asking it to stop, reaping
every process so none is left behind, reading only the log written by the latest launch. Keeping
that in one place means a fix to it reaches every server the tests run.

Pytest-free, like the servers built on it.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import ClassVar, Self

from .ports import free_port

__all__ = [
    "AddressInUseError",
    "BrokerProcess",
    "OwnedProcess",
    "log_offsets",
    "read_since",
    "wait_for_proc_state",
]

_BIND_RETRY_S = 5.0
"""How long to keep retrying a fixed port that is still held (TIME_WAIT, a dying process)."""

_STOP_TIMEOUT_S = 5.0
"""How long SIGTERM gets before SIGKILL, and how long a killed process gets to be reaped."""

_MAX_FRESH_PORT_ATTEMPTS = 5
"""How many different ports to try when an auto-chosen port is taken before the server binds it."""


class AddressInUseError(RuntimeError):
    """The server exited because its port was taken; the caller decides whether to retry."""


def log_offsets(paths: Iterable[Path]) -> dict[Path, int]:
    """The current size of each log, so that what a new launch writes can be read on its own.

    Logs are appended to across restarts; only the latest launch's lines say why it failed.
    """
    return {path: (path.stat().st_size if path.exists() else 0) for path in paths}


def read_since(offsets: Mapping[Path, int]) -> str:
    """What each log gained after its offset (from ``log_offsets``), the logs one after another."""
    chunks = []
    for path, offset in offsets.items():
        with contextlib.suppress(OSError), path.open("rb") as fh:
            fh.seek(offset)
            chunks.append(fh.read().decode(errors="replace"))
    return "".join(chunks)


def wait_for_proc_state(pid: int, *, stopped: bool, timeout: float = 1.0) -> None:
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


class OwnedProcess:
    """A server subprocess on a port of its own: the state and answers every such server shares.

    Not thread-safe; drive it from one thread (the test's).
    """

    def __init__(self, port: int | None) -> None:
        self._port: int | None = port
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def port(self) -> int:
        """The TCP port; fixed after the first successful ``start()``."""
        if self._port is None:
            raise RuntimeError(f"{type(self).__name__} has no port yet: call start() first")
        return self._port

    @property
    def pid(self) -> int | None:
        """The main process's id while it runs (a paused process counts), else None."""
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    @property
    def is_running(self) -> bool:
        """True while the main process is alive (a paused process counts as alive)."""
        return self._proc is not None and self._proc.poll() is None


class BrokerProcess(OwnedProcess):
    """A broker server (Redis, NATS) that outage tests start, stop, crash, restart and freeze.

    The port is chosen once (or given) and then kept across ``restart()`` so that clients holding
    the URL can reconnect to the "same" server, which is what reconnection tests need. Each owns a
    temporary directory (its logs and any data) that ``stop()`` deletes and ``kill()`` keeps.

    A subclass names its program (``_label``), finds its binary and launches it once
    (``_launch_once``: return when ready, raise ``AddressInUseError`` when the port was taken,
    ``RuntimeError`` for anything else, reaping the process in both cases).
    """

    _label: ClassVar[str]
    """The program's name in error messages, e.g. ``redis-server``."""

    _dir_prefix: ClassVar[str]
    """Prefix of the temporary directory's name, so a leftover one says whose it is."""

    def __init__(self, port: int | None, *, binary: str | None) -> None:
        super().__init__(port)
        self._binary = binary
        self._paused = False
        self._dir: Path | None = None
        self._final_log = ""
        self._atexit_registered = False

    @property
    def is_paused(self) -> bool:
        """True between ``pause()`` and ``resume()``."""
        return self._paused and self.is_running

    # -- what a subclass provides -----------------------------------------------------------

    def _find_binary(self) -> str:
        raise NotImplementedError

    def _launch_once(self, binary: str, port: int) -> None:
        raise NotImplementedError

    def log_text(self) -> str:
        """Everything the server wrote, for failure messages."""
        raise NotImplementedError

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Launch the server and return once it is ready.

        A port chosen automatically may be grabbed by someone else between ``free_port()`` and the
        bind; then another free port is tried. A fixed port (given, or kept from an earlier start)
        is retried for up to 5 s, which covers a previous process that is still releasing it.
        """
        if self.is_running:
            raise RuntimeError(f"{self._label} is already running on port {self._port}")
        binary = self._binary or self._find_binary()
        if self._dir is None or not self._dir.is_dir():
            self._dir = Path(tempfile.mkdtemp(prefix=self._dir_prefix))
        fixed_port = self._port is not None
        bind_deadline = time.monotonic() + _BIND_RETRY_S
        fresh_attempts = 0
        while True:
            if self._port is None:
                self._port = free_port()
            try:
                self._launch_once(binary, self._port)
            except AddressInUseError as exc:
                if not fixed_port:
                    fresh_attempts += 1
                    self._port = None
                    if fresh_attempts >= _MAX_FRESH_PORT_ATTEMPTS:
                        raise RuntimeError(str(exc)) from None
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
        """Stop gracefully (SIGTERM, then SIGKILL after 5 s) and delete the directory.

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

        The port and directory are kept so ``start()``/``restart()`` can bring it back.
        """
        proc = self._proc
        if proc is not None:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
            proc.wait(timeout=_STOP_TIMEOUT_S)
        self._paused = False

    def restart(self) -> None:
        """Kill the server and start a new one on the same port."""
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP the process: connections stay open but nothing is answered (a stalled broker)."""
        proc = self._require_running()
        proc.send_signal(signal.SIGSTOP)
        self._paused = True
        wait_for_proc_state(proc.pid, stopped=True)

    def resume(self) -> None:
        """SIGCONT a paused process; harmless if it is not paused."""
        proc = self._require_running()
        proc.send_signal(signal.SIGCONT)
        self._paused = False
        wait_for_proc_state(proc.pid, stopped=False)

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
        return f"<{type(self).__name__} port={self._port} {state}>"

    # -- internals --------------------------------------------------------------------------

    def _require_running(self) -> subprocess.Popen[bytes]:
        proc = self._proc
        if proc is None or proc.poll() is not None:
            raise RuntimeError(f"{self._label} is not running")
        return proc

    def _started(self, proc: subprocess.Popen[bytes]) -> None:
        """Record a freshly launched process (not paused, whatever the previous one was)."""
        self._proc = proc
        self._paused = False

    def _reap_unready(self, proc: subprocess.Popen[bytes]) -> None:
        """Kill a launch that never became ready, so a failed start leaves nothing behind."""
        proc.kill()
        proc.wait(timeout=_STOP_TIMEOUT_S)
        self._proc = None

    def _atexit_cleanup(self) -> None:
        """Last resort when a test run aborts without teardown: never leave a server behind."""
        with contextlib.suppress(Exception):
            self.stop()
