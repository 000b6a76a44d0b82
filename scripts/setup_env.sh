#!/usr/bin/env bash
# Creates .venv and installs shivam with what the tests need. torch is pinned to the CPU build that lies on this
# machine's disk (an unpinned torch pulls a multi-GB CUDA build); the validator's GPU-only pieces are skipped on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0" >/dev/null
.venv/bin/python -m pip install -q -e ".[test]" transformers nvidia-ml-py codecarbon "triton==3.9.0" >/dev/null
