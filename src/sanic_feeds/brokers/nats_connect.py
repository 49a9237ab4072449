"""The first connection to NATS, shared by the broker and presence.

Both keep reconnecting for as long as the node runs (``max_reconnect_attempts=-1``: nats-py gives
up after 60 by default), every 0.2 s so that they come back with the server. With unlimited
reconnects nats-py also retries a *first* connection forever, so a node started while NATS is
down would hang at start: the first connection is bounded here instead.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import nats
from nats.aio.client import Client
from nats.errors import Error as NatsError

from ..errors import BrokerUnavailable
from ..nats_urls import NatsTls

log = logging.getLogger(__name__)

START_TIMEOUT = 5.0
"""Seconds a start waits for a first connection to NATS."""


async def first_connection(
    what: str, servers: list[str], tls: NatsTls | None = None, **options: Any
) -> Client:
    """Connect (``options`` as nats-py takes them, on top of the reconnect settings above);
    :class:`BrokerUnavailable` naming ``what`` when no server answers within the bound, with
    the last error nats-py met meanwhile (a refused connection, a certificate it could not
    verify): the attempts go on quietly until then.

    With ``tls``, a connection that is not TLS is refused, the first one and every reconnect
    (nats-py upgrades to TLS only when the server says it requires it).
    """
    errors: list[Exception] = []
    given_error = options.pop("error_cb", None)
    given_reconnected = options.pop("reconnected_cb", None)
    made: list[Client] = []

    async def on_error(exc: Exception) -> None:
        errors[:] = [exc]
        if given_error is not None:
            await given_error(exc)
        else:
            log.error("NATS: %r", exc)

    async def on_reconnected() -> None:
        if made and tls is not None and not secured(made[0], tls):
            log.error("NATS: a server without TLS answered the reconnect; closing (a TLS URL)")
            _closing.add(task := asyncio.ensure_future(made[0].close()))
            task.add_done_callback(_closing.discard)
            return
        if given_reconnected is not None:
            await given_reconnected()

    if tls is not None:
        options |= {"tls": tls.context, "tls_handshake_first": tls.handshake_first}
    try:
        client = await asyncio.wait_for(
            nats.connect(
                servers=servers,
                connect_timeout=2,
                reconnect_time_wait=0.2,
                max_reconnect_attempts=-1,
                error_cb=on_error,
                reconnected_cb=on_reconnected,
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
    if tls is not None and not secured(client, tls):
        await client.close()
        raise BrokerUnavailable(
            f"{what}: the NATS server does not require TLS, and the URL asks for TLS"
        )
    made.append(client)
    return client


def secured(client: Client, tls: NatsTls) -> bool:
    """The connection is TLS: from the first byte, or upgraded because the server said it
    requires TLS (nats-py's only reason to upgrade; its server info is where that is told)."""
    return tls.handshake_first or bool(client._server_info.get("tls_required"))


_closing: set[asyncio.Future[None]] = set()
"""Closes started from a callback (kept until done)."""
