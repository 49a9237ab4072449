"""What the hook and proxy tests ask of a centrifuge-python client, written once."""

from __future__ import annotations

import asyncio
from typing import Any

from centrifuge import Client, SubscriptionState

from .ws import eventually


async def refused_then_published(
    sdk: Client, refused: str, room: str, data: object, subscribe_data: object = None
) -> Any:
    """Subscribe ``refused`` (the backend refuses it: the subscription ends unsubscribed), then
    subscribe ``room`` (with ``subscribe_data`` in the command) and publish ``data`` on it;
    return the publication its subscribers receive."""
    secret = sdk.new_subscription(refused)
    await secret.subscribe()
    await eventually(
        lambda: secret.state == SubscriptionState.UNSUBSCRIBED,
        timeout=5,
        description=f"{refused} refused",
    )
    subscription = sdk.new_subscription(room, data=subscribe_data)
    got: asyncio.Queue[Any] = asyncio.Queue()

    async def on_publication(ctx: Any) -> None:
        await got.put(ctx)

    subscription.events.on_publication = on_publication
    await subscription.subscribe()
    await subscription.ready(5)
    await subscription.publish(data)
    return await asyncio.wait_for(got.get(), 5)
