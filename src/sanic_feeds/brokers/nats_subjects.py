"""Channel names as NATS subject tokens and key-value keys, reversibly.

Pure code. Channel names may hold ``.`` (the NATS token separator) and ``:`` and ``@`` (refused
in key-value keys and stream names), so each is written as ``_`` and a letter, and ``_`` itself
as ``__``. The result uses only ``A-Z a-z 0-9 _ -``: a valid subject token, key-value key token,
stream and bucket name, and still readable in ``nats`` tooling. Decoding is exact, so a channel
is never confused with another.
"""

from __future__ import annotations

_ESCAPES = {"_": "__", ".": "_d", ":": "_c", "@": "_a"}
_UNESCAPES = {code[1]: char for char, code in _ESCAPES.items()}


def to_token(name: str) -> str:
    """``room.1:a@b_c`` -> ``room_d1_ca_ab__c``."""
    return "".join(_ESCAPES.get(char, char) for char in name)


def from_token(token: str) -> str:
    """The inverse of :func:`to_token`; ``ValueError`` for a text it cannot have written."""
    out: list[str] = []
    chars = iter(token)
    for char in chars:
        if char != "_":
            out.append(char)
            continue
        code = next(chars, "")
        if code not in _UNESCAPES:
            raise ValueError(f"not an escaped channel name: {token!r}")
        out.append(_UNESCAPES[code])
    return "".join(out)
