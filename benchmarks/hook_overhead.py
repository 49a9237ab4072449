"""What a subscribe hook costs a connect: 5,000 connects with and without one.

    .venv/bin/python benchmarks/hook_overhead.py                  # 5,000 connects, 3 rounds
    .venv/bin/python benchmarks/hook_overhead.py --clients 500 --rounds 1

One sanic-feeds process (memory broker, pinned to CPU 0 like benchmarks/run.py) per variant:
``off`` has no hooks, ``on`` an in-process subscribe hook that allows everything
(benchmarks/servers/hooked_feeds.py). Each round opens ``--clients`` /feed/ sockets (picows,
200 handshakes in flight) on channels ``room-0`` .. ``room-99`` and waits for every welcome
(sent once the join of the URL's channel, hook included, holds); the figures are the wall time
and the server's CPU time for that, and the ratio on/off (target: at most 1.5). The variants
alternate round by round, so drift of the machine hits both. Bounded throughout.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

import uvloop

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from loadgen import Tally, close_all, open_clients  # noqa: E402  (after the path tweak)
from procs import cpu_seconds_fine, free_port, running  # noqa: E402

PY = sys.executable
SERVER = str(HERE / "servers" / "hooked_feeds.py")


async def connects(port: int, count: int) -> float:
    """Open ``count`` sockets, wait for every welcome; the wall time. Closes them after."""
    tally = Tally()
    started = time.perf_counter()
    clients = []
    per_room = max(count // 100, 1)
    for room in range(0, count, per_room):
        url = f"ws://127.0.0.1:{port}/feed/room-{room // per_room}"
        clients += await open_clients(url, min(per_room, count - room), tally)
    async with asyncio.timeout(60):
        while tally.welcomed < count:
            tally.changed.clear()
            await tally.changed.wait()
    elapsed = time.perf_counter() - started
    close_all(clients)
    await asyncio.sleep(1.0)  # let the server see them go before the next round
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    ports = {"off": free_port(), "on": free_port()}
    with (
        running("off", [PY, SERVER, str(ports["off"]), "off"], ports["off"]) as off,
        running("on", [PY, SERVER, str(ports["on"]), "on"], ports["on"]) as on,
    ):
        procs = {"off": off, "on": on}
        uvloop.install()
        for _ in range(args.rounds):
            for variant in ("off", "on"):
                pid = procs[variant].pid
                cpu = cpu_seconds_fine(pid)
                wall = asyncio.run(connects(ports[variant], args.clients))
                results[variant].append((wall, cpu_seconds_fine(pid) - cpu))
    walls = {v: statistics.median(w for w, _ in r) for v, r in results.items()}
    cpus = {v: statistics.median(c for _, c in r) for v, r in results.items()}
    for variant in ("off", "on"):
        print(
            f"{variant:>3}: {args.clients} connects in {walls[variant]:.2f} s wall, "
            f"{cpus[variant]:.2f} s server CPU (median of {args.rounds})"
        )
    wall_ratio, cpu_ratio = walls["on"] / walls["off"], cpus["on"] / cpus["off"]
    print(f"ratio on/off: wall {wall_ratio:.2f}x, CPU {cpu_ratio:.2f}x")


if __name__ == "__main__":
    main()
