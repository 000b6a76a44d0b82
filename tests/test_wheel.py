"""The wheel carries the bundled models and GPUs and works away from the checkout."""

import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT


@pytest.mark.slow
def test_wheel_contains_data_and_runs_outside_the_checkout(tmp_path):
    pytest.importorskip("hatchling")
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            str(ROOT),
        ],
        capture_output=True,
        text=True,
    )
    assert res.returncode == 0, res.stderr
    wheel = next((tmp_path / "dist").glob("shivam-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "shivam/_data/models/mistral-7b.json" in names
    assert "shivam/_data/hardware/h200.json" in names
    assert "shivam/_data/hardware/engines/graph.json" in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    run = subprocess.run(
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
            "4",
            "--format",
            "json",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(site), "PATH": "/usr/bin:/bin"},
    )
    assert run.returncode == 0, run.stderr
    assert '"energy_per_token_j"' in run.stdout
