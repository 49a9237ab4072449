#!/usr/bin/env bash
# Set up a virtual environment with the test extras and run every check: ruff, mypy --strict and
# the whole pytest suite (which starts its own private redis-server). Works on a fresh machine
# with only Python 3.11+; re-running reuses .venv.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[test]'

.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/python -m pytest "$@"
