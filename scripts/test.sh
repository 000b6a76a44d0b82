#!/usr/bin/env bash
# The test command: set up (idempotent), lint (ruff, configured in pyproject.toml) and run every test; GPU tests are
# skipped without a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
.venv/bin/ruff check shivam tests scripts validation
.venv/bin/ruff format --check shivam tests scripts validation
exec .venv/bin/python -m pytest -q "$@"
