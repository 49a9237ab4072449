"""Each module logs under its own name, so that one module's lines can be told apart from
another's and turned up or down on their own (``logging.getLogger("sanic_feeds.hub")``)."""

from __future__ import annotations

import importlib
import logging
import pkgutil

import pytest

import sanic_feeds

PENDING: dict[str, tuple[str, bool]] = {}
"""Modules whose logger is yet to be renamed in the module itself -> (why, strict). Strict:
fixing the module makes its case fail until it is removed from here."""


def module_loggers() -> dict[str, logging.Logger]:
    """Module name -> the logger it keeps as ``log``, for every module of the package."""
    found = {}
    for info in pkgutil.walk_packages(sanic_feeds.__path__, "sanic_feeds."):
        if info.name.endswith("__main__"):
            continue  # importing it runs the command line
        log = getattr(importlib.import_module(info.name), "log", None)
        if isinstance(log, logging.Logger):
            found[info.name] = log
    return found


LOGGERS = module_loggers()


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(
            name,
            marks=pytest.mark.xfail(strict=PENDING[name][1], reason=PENDING[name][0]),
        )
        if name in PENDING
        else name
        for name in sorted(LOGGERS)
    ],
)
def test_a_module_logs_under_its_own_name(name: str) -> None:
    assert LOGGERS[name].name == name


def test_the_modules_that_log_include_the_connection_path() -> None:
    """The scan above finds the modules it is meant to check."""
    assert {
        "sanic_feeds.connection",
        "sanic_feeds.extension",
        "sanic_feeds.tasks",
        "sanic_feeds.websocket_protocol",
    } <= set(LOGGERS)
