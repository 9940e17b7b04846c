#!/usr/bin/env bash
# Sets up a tox runner in .venv and runs every CPU suite. Works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check tox
exec .venv/bin/tox -e pr,selftest "$@"
