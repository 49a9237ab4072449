"""Free TCP port discovery for test subprocesses.

Tests start their own redis-server and sanic-feeds processes and must never collide with services
already running on the machine (a shared Redis on 6379, another test run in parallel), so every
listener gets a port the kernel has just reported as unused.
"""

from __future__ import annotations

import socket

__all__ = ["free_port"]


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago.

    The kernel picks the port (bind to port 0); the socket is closed again so the caller's
    subprocess can bind it. There is an unavoidable race between closing and the subprocess
    binding, which is why the callers in this package retry when a bind fails.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port
