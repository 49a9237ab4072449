"""A channel's history as the server API's ``history`` shows it: a window and publications.

The broker reads a history from its newest end (what a reconnecting client missed). The server
API iterates it as Centrifugo does: forward from the oldest kept message (or from ``since``),
or backward from the newest (or from before ``since``), ``limit`` at a time. Histories are
bounded (``history_size``), so the window is cut here from the whole kept history.

Pure code: no I/O.
"""

from __future__ import annotations

import orjson

from .history import HistoryPage
from .server_requests import ApiCode, ApiError


def window(
    page: HistoryPage, since: tuple[int, str] | None, limit: int, reverse: bool
) -> list[tuple[int, bytes]]:
    """The (offset, body) pairs a ``history`` call returns from ``page`` (the whole kept
    history, oldest first): at most ``limit`` (all when negative, none when 0), after
    ``since`` going forward or before it going backward, newest first when ``reverse``.

    ``since`` from another epoch, past the top, or older than what is kept going forward is
    error 112: the caller cannot continue from there.
    """
    entries = list(zip(page.offsets, page.messages, strict=True))
    if since is not None:
        offset, epoch = since
        oldest = entries[0][0] if entries else page.top + 1
        if epoch != page.epoch or offset > page.top or (not reverse and offset + 1 < oldest):
            raise ApiError(ApiCode.UNRECOVERABLE_POSITION, f"epoch {page.epoch!r}, top {page.top}")
        if reverse:
            entries = [e for e in entries if e[0] < offset]
        else:
            entries = [e for e in entries if e[0] > offset]
    if reverse:
        entries.reverse()
    return entries if limit < 0 else entries[:limit]


def publication(offset: int, body: bytes) -> dict[str, object]:
    """One stored message as a publication: ``data`` (a data message's ``data``, a chat's
    ``message``), its ``offset``, and for a chat the sender as ``info``."""
    message = orjson.loads(body)
    if not isinstance(message, dict):  # never stored so; shown as it is rather than failing
        return {"data": message, "offset": offset}
    if message.get("type") == "chat":
        info = {"client": message.get("client", ""), "user": message.get("user", "")}
        return {"data": message.get("message"), "offset": offset, "info": info}
    if message.get("type") == "data":
        return {"data": message.get("data"), "offset": offset}
    rest = {k: v for k, v in message.items() if k not in ("id", "epoch")}
    return {"data": rest, "offset": offset}
