#!/usr/bin/env bash
# The test command: set up (idempotent) and run every test; GPU tests are skipped without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m pytest -q "$@"
