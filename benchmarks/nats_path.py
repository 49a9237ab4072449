"""The chat scenario of redis_path.py over NATS: two instances, one private nats-server -js.

``nats_chat_50x4_at_2k``: two ``sanic-feeds serve`` instances on a private ``nats-server -js``
(``tests/support/nats_server.py``), 50 rooms x 4 members chatting at 2,000 chats/s in all, as
``redis_chat_50x4_at_2k`` does on one Redis, beside one instance on the memory broker in the
same run. Measured: server CPU per chat (both instances), the NATS server's own CPU per chat
(every chat is stored in JetStream and fanned out on a core subject), deliveries and latency.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from procs import cpu_seconds_fine
from redis_path import MEMORY, RunResult, chat, instances

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from support.nats_server import NatsServer, find_nats_server_binary


class NatsMeter:
    """``RedisMeter``'s interface over a nats-server process: its CPU seconds; it has no keys."""

    client = None  # chat() reads Redis-only figures when a meter has a client

    def __init__(self, pid: int) -> None:
        self._pid = pid

    def cpu(self) -> float:
        return cpu_seconds_fine(self._pid)

    def keys(self) -> int:
        return 0

    def script_seconds(self) -> float:
        return 0.0  # no scripts: JetStream stores on its own


async def on_nats_chat(name: str, reps: int, seconds: float, _idle: int) -> dict[str, float] | None:
    if name != "sanic-feeds":
        return None
    try:
        find_nats_server_binary()
    except RuntimeError:
        return None
    nats = NatsServer()
    nats.start()
    try:
        pid = nats.pid
        meter = NatsMeter(pid)
        with instances(1, "memory://") as servers:
            memory = await chat(servers, meter, seconds, reps)
        with instances(2, nats.url) as servers:
            before = meter.cpu()
            on_nats = await chat(servers, meter, seconds, reps)
            spent = meter.cpu() - before
    finally:
        nats.stop()
    result = {f"{MEMORY}_{key}": value for key, value in memory.items()}
    result |= {f"nats_{key}": value for key, value in on_nats.items()}
    # chat() measures each run; the NATS server's CPU over the whole measured stretch (the
    # warm-up and the pauses between runs included) is an upper bound per chat.
    chats = on_nats["chats"] * reps
    result["nats_server_cpu_us_per_chat_upper_bound"] = spent / chats * 1e6
    result["server_cpu_ratio_nats_over_memory"] = (
        on_nats["server_cpu_us_per_chat"] / memory["server_cpu_us_per_chat"]
    )
    return result


NATS_PATH: dict[str, Callable[[str, int, float, int], RunResult]] = {
    "nats_chat_50x4_at_2k": on_nats_chat,
}


def nats_table(ours: dict[str, dict[str, float]]) -> str:
    r = ours.get("nats_chat_50x4_at_2k")
    if not r:
        return ""
    return "\n".join([
        "| nats_chat_50x4_at_2k | memory (1 instance) | NATS (2 instances) |",
        "|---|---|---|",
        f"| chats delivered / expected | {r[f'{MEMORY}_deliveries']:,.0f} / "
        f"{r[f'{MEMORY}_deliveries_expected']:,.0f} | {r['nats_deliveries']:,.0f} / "
        f"{r['nats_deliveries_expected']:,.0f} |",
        f"| error frames | {r[f'{MEMORY}_errors']:,.0f} | {r['nats_errors']:,.0f} |",
        f"| server CPU µs per chat | {r[f'{MEMORY}_server_cpu_us_per_chat']:.1f} | "
        f"{r['nats_server_cpu_us_per_chat']:.1f} |",
        f"| nats-server CPU µs per chat (upper bound) | | "
        f"{r['nats_server_cpu_us_per_chat_upper_bound']:.1f} |",
        f"| p50 / p99 ms | {r[f'{MEMORY}_p50_ms']:.2f} / {r[f'{MEMORY}_p99_ms']:.2f} | "
        f"{r['nats_p50_ms']:.2f} / {r['nats_p99_ms']:.2f} |",
        f"| server CPU, NATS / memory | | {r['server_cpu_ratio_nats_over_memory']:.2f}x |",
    ])  # fmt: skip
