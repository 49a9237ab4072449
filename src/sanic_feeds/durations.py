"""Go duration strings (``"300s"``, ``"1m30s"``, ``"500ms"``, ``"720h"``) as seconds.

Centrifugo's configuration writes every duration this way, so a Centrifugo file read here needs
the same reading. The grammar is Go's ``time.ParseDuration``: one or more ``<number><unit>``
parts, the number a decimal with an optional fraction, the unit one of ``ns``, ``us`` (or
``µs``), ``ms``, ``s``, ``m``, ``h``; ``"0"`` alone needs no unit. Unlike Go, a sign is refused:
no setting here takes a negative time. Pure code.
"""

from __future__ import annotations

import re
from fractions import Fraction

_UNITS = {
    "ns": Fraction(1, 10**9),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),  # U+00B5 MICRO SIGN
    "μs": Fraction(1, 10**6),  # U+03BC GREEK SMALL LETTER MU
    "ms": Fraction(1, 1000),
    "s": Fraction(1),
    "m": Fraction(60),
    "h": Fraction(3600),
}
# Longest units first, so that "ms" is not read as "m" followed by garbage.
_PART = re.compile(
    r"(\d+\.?\d*|\.\d+)(" + "|".join(sorted(map(re.escape, _UNITS), key=len, reverse=True)) + ")"
)
_NUMBER = re.compile(r"\d+(\.\d*)?|\.\d+")


def parse_duration(text: str) -> float:
    """``"1m30s"`` -> ``90.0``; ``ValueError`` for anything that is not a Go duration."""
    if text == "0":
        return 0.0
    total = Fraction(0)
    position = 0
    while position < len(text):
        match = _PART.match(text, position)
        if match is None:
            raise ValueError(
                f"not a duration: {text!r} (examples: 500ms, 30s, 1m30s, 720h; units ns, us, "
                "ms, s, m, h)"
            )
        total += Fraction(match.group(1)) * _UNITS[match.group(2)]
        position = match.end()
    if position == 0:
        raise ValueError(f"not a duration: {text!r} (examples: 500ms, 30s, 1m30s, 720h)")
    return float(total)


def parse_seconds(text: str) -> float:
    """Seconds as a plain number (``"2.5"``) or as a Go duration (``"2500ms"``)."""
    stripped = text.strip()
    if _NUMBER.fullmatch(stripped):
        return float(stripped)
    return parse_duration(stripped)
