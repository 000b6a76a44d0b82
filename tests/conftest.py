import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

if not Path("/dev/nvidia0").exists() and not shutil.which("nvidia-smi"):
    # no GPU: the reference engine's Triton kernels run in Triton's interpreter, which must be chosen before anything
    # imports triton (torch does)
    os.environ.setdefault("TRITON_INTERPRET", "1")

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def no_installed_calibrations(tmp_path_factory, monkeypatch):
    """Tests see no calibration installed on the machine they run on (`shivam calibrate` writes to the user's data
    directory, which predict and check then prefer): the figures they check are the repository's alone."""
    monkeypatch.setenv("SHIVAM_DATA_DIR", str(tmp_path_factory.mktemp("shivam-data")))


def run_cli(*args, env=None):
    """Run `python -m shivam ARGS` in a fresh interpreter, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "shivam", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def write_config(tmp_path):
    def write(cfg, name="config.json"):
        path = tmp_path / name
        path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
        return str(path)

    return write


def has_cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


def pytest_collection_modifyitems(config, items):
    if has_cuda():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run on the device machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def validation_script(name: str):
    """A probe of validation/ (not a package) loaded as a module."""
    spec = importlib.util.spec_from_file_location(name, ROOT / f"validation/{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
