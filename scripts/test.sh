#!/usr/bin/env bash
# Sets up a tox runner in .venv and runs every CPU suite (one env), then conformance against the real vLLM
# (tox env `vllm`: its 9.5 GiB env is cached under ~/.cache/refit-verify and built once, ~5.5 min cold).
# Works on a fresh clone.
set -euo pipefail
cd "$(dirname "$0")/.."
# report.html is tested in a real browser (suites/pr/test_report_browser.py); Debian's chromium, as root
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "test.sh: installing chromium for the report browser test (apt-get)" >&2
  apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1 \
    || (apt-get update -q >/dev/null 2>&1 && apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null 2>&1) \
    || echo "test.sh: chromium not installed; the browser tests will skip" >&2
fi
python3 -m venv .venv
.venv/bin/pip install -q --disable-pip-version-check tox
exec .venv/bin/tox -e cpu,vllm "$@"
