"""The documentation runs: every Python example of docs/api.md executes, and every README command that needs no GPU
runs as written and exits 0."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT


def _python_blocks(text: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", text, flags=re.S)


def _shell_lines(text: str) -> list[str]:
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#.*$", "", line).strip()  # a trailing comment
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


API_EXAMPLES = _python_blocks((ROOT / "docs/api.md").read_text())


def test_api_doc_has_examples():
    assert len(API_EXAMPLES) >= 5


@pytest.mark.parametrize("code", API_EXAMPLES, ids=[f"example{i}" for i in range(len(API_EXAMPLES))])
def test_api_doc_example_runs(code):
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert res.returncode == 0, res.stderr


def test_the_api_doc_first_example_gives_the_k_the_cli_marks():
    import json

    import shivam

    r = shivam.predict(model="mistral-7b", gpu="l4", k=range(0, 9), alpha=0.8)
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "shivam",
            "predict",
            "--model",
            "mistral-7b",
            "--gpu",
            "l4",
            "--k",
            "0..8",
            "--alpha",
            "0.8",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    marked = [row["k"] for row in json.loads(res.stdout)["rows"] if row["best_energy"]]
    assert marked == [r.best_k()]


# README commands: those that need a GPU, write into the repository, or run the README's own set-up are not run
NEEDS_GPU_OR_SETUP = ("shivam validate", "shivam calibrate", "pip install", "bash scripts/", "-o hardware/")
README_COMMANDS = [
    c for c in _shell_lines((ROOT / "README.md").read_text()) if not any(s in c for s in NEEDS_GPU_OR_SETUP)
]


def test_readme_shows_commands():
    assert len(README_COMMANDS) >= 8


@pytest.mark.parametrize("command", README_COMMANDS)
def test_readme_command_runs_as_written(command, tmp_path):
    # run by bash (globs expand as a user's shell expands them) with this environment's `shivam` first on PATH; what
    # the command writes (out/, docs/report-h200.html) goes to a temporary folder so the checkout stays clean
    written = command.replace("out/", f"{tmp_path}/").replace("docs/report-h200.html", f"{tmp_path}/report.html")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    res = subprocess.run(
        ["bash", "-c", f"set -euo pipefail; {written}"], capture_output=True, text=True, cwd=ROOT, timeout=300, env=env
    )
    assert res.returncode == 0, f"{command}: {res.stderr}"
