#!/usr/bin/env bash
# Sets up a tox runner in .venv and runs every CPU suite, then conformance against the real vLLM
# (tox env `vllm`: its 9.5 GiB env is cached under ~/.cache/refit-verify and built once, ~5.5 min cold).
# Works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check tox
exec .venv/bin/tox -e pr,selftest,vllm "$@"
