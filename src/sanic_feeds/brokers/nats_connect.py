"""The first connection to NATS, shared by the broker and presence.

Both keep reconnecting for as long as the node runs (``max_reconnect_attempts=-1``: nats-py gives
up after 60 by default), every 0.2 s so that they come back with the server. With unlimited
reconnects nats-py also retries a *first* connection forever, so a node started while NATS is
down would hang at start: the first connection is bounded here instead.
"""

from __future__ import annotations

import asyncio
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from ..errors import BrokerUnavailable

START_TIMEOUT = 5.0
"""Seconds a start waits for a first connection to NATS."""


async def first_connection(what: str, servers: list[str], **options: Any) -> Client:
    """Connect (``options`` as nats-py takes them, on top of the reconnect settings above);
    :class:`BrokerUnavailable` naming ``what`` when no server answers within the bound, with
    the last error nats-py met meanwhile (a refused connection, a certificate it could not
    verify): the attempts go on quietly until then."""
    errors: list[Exception] = []
    given = options.pop("error_cb", None)

    async def on_error(exc: Exception) -> None:
        errors[:] = [exc]
        if given is not None:
            await given(exc)

    try:
        return await asyncio.wait_for(
            nats.connect(
                servers=servers,
                connect_timeout=2,
                reconnect_time_wait=0.2,
                max_reconnect_attempts=-1,
                error_cb=on_error,
                **options,
            ),
            START_TIMEOUT,
        )
    except TimeoutError:
        last = f" (last error: {errors[0]!r})" if errors else ""
        raise BrokerUnavailable(
            f"{what}: no NATS server answered within {START_TIMEOUT:g} s{last}"
        ) from None
    except (NatsError, OSError) as exc:
        raise BrokerUnavailable(f"{what}: {exc!r}") from exc
