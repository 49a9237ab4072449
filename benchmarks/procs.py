"""Processes under test: free ports, CPU time from /proc, a private Redis, servers started and
stopped around a measurement. Shared by run.py and redis_path.py."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

TICKS = os.sysconf("SC_CLK_TCK")
SERVER_CPU = "0"
"""The CPU every server under test is pinned to (the load generator takes the other one)."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid``, all threads, from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def cpu_seconds_fine(pid: int) -> float:
    """The same to the nanosecond: the run time of each of ``pid``'s threads in
    /proc/<pid>/task/*/schedstat (where the kernel has it, else ``cpu_seconds``). /proc/<pid>/stat
    counts in clock ticks (10 ms), too coarse for a few hundred short reconnects."""
    try:
        return (
            sum(
                int((task / "schedstat").read_text().split()[0])
                for task in Path(f"/proc/{pid}/task").iterdir()
            )
            / 1e9
        )
    except (OSError, ValueError, IndexError):
        return cpu_seconds(pid)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def wait_listening(port: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        except OSError:
            time.sleep(0.05)
        else:
            return True
    return False


@contextmanager
def running(name: str, argv: list[str], port: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``argv`` pinned to ``SERVER_CPU``, wait until it listens on ``port``; stop it with
    SIGINT (then SIGKILL after 10 s) on the way out."""
    if shutil.which("taskset"):
        argv = ["taskset", "-c", SERVER_CPU, *argv]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_listening(port, 20):
        proc.kill()
        proc.wait()
        raise RuntimeError(f"{name} did not start")
    time.sleep(0.3)
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def private_redis() -> Iterator[str | None]:
    """A throwaway redis-server on a free port, nothing on disk (None when there is none on
    PATH). Never the shared one on 6379."""
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with tempfile.TemporaryDirectory() as tmp:
        port = free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--save", "", "--appendonly", "no", "--dir", tmp],
            stdout=subprocess.DEVNULL,
        )
        wait_listening(port, 10)
        try:
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.kill()
            proc.wait()
