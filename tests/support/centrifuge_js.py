"""Running a Node check of Centrifugo's JavaScript SDK (``tests/js/check_*.js``) from a test.

Each check takes what it needs (addresses, tokens) as one JSON argument and prints its findings
as one JSON line last (``tests/js/check_common.js``); the test asserts on those. Running it the
same way everywhere keeps the bound on a hung Node run and the failure message (its whole
output) alike across the SDK tests.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

__all__ = ["JS", "needs_node", "run_check"]

JS = Path(__file__).resolve().parents[1] / "js"
"""The Node package with the checks and their SDK (``npm ci`` there installs it)."""

NODE_RUN_TIMEOUT_S = 60
"""A check that has not finished by then has hung; the test fails instead of waiting."""

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (JS / "node_modules" / "centrifuge").is_dir(),
    reason="needs node and `npm ci` in tests/js",
)
"""Skips a test where Node or the installed SDK is missing (``scripts/test.sh`` installs it)."""


async def run_check(
    script: str, given: Mapping[str, object], *, flags: Sequence[str] = ()
) -> dict[str, Any]:
    """Run ``tests/js/<script>`` with ``given`` and return the results it printed.

    Fails the test, with everything Node printed, when the check exits with an error.
    ``flags`` go to ``node`` before the script (``--experimental-eventsource``).
    """
    node = await asyncio.create_subprocess_exec(
        "node",
        *flags,
        str(JS / script),
        orjson.dumps(given).decode(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(node.communicate(), NODE_RUN_TIMEOUT_S)
    assert node.returncode == 0, (out + err).decode()
    results: dict[str, Any] = orjson.loads(out.strip().splitlines()[-1])
    return results
