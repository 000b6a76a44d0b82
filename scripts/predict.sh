#!/usr/bin/env bash
# The main job: install shivam (light: no torch) and write prediction tables and a report under out/.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q . >/dev/null
mkdir -p out
shivam=.venv/bin/shivam
$shivam overview | tee out/overview.txt
$shivam predict --model mistral-7b --gpu l4 --k 1..8 --report out/mistral-7b-l4.html | tee out/mistral-7b-l4.txt
$shivam predict --model mistral-7b --gpu l4 --k 1..8 --format json > out/mistral-7b-l4.json
$shivam predict --model opt-1.3b --gpu t4 --draft opt-125m --k 1..8 --act-dtype fp16 | tee out/opt-1.3b-t4.txt
echo "wrote out/overview.txt, out/mistral-7b-l4.{txt,json,html}, out/opt-1.3b-t4.txt"
