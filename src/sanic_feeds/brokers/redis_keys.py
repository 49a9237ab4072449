"""The names of a channel's Redis keys and pub/sub channel, on one Redis or a Redis Cluster.

Every name of a channel carries its hash tag ``{<channel>}``: the pub/sub channel
``<prefix>ch:{<channel>}``, the history stream ``<prefix>hist:{<channel>}`` and its counter and
epoch. So they all hash to one slot, and the stored-publish script, which appends to the stream
and publishes in one step, touches a single slot, as Redis Cluster requires of a script (and of
``SPUBLISH`` from one). On a single Redis the tag is just part of the name.
"""

from __future__ import annotations


def channel_key(prefix: str, channel: str) -> bytes:
    """The pub/sub (or, on a cluster, shard) channel of ``channel``."""
    return f"{prefix}ch:{{{channel}}}".encode()


def history_keys(prefix: str, channel: str) -> tuple[str, str, str]:
    """The offset counter, the stream and the epoch of ``channel``'s history."""
    base = f"{prefix}hist:{{{channel}}}"
    return base + ":seq", base, base + ":epoch"
