"""`shivam check` over the committed H200 data reproduces the figures docs/validation.md and the README state, from
any working directory, with no flags (the calibration's recipe supplies them)."""

import json
import subprocess
import sys

from conftest import ROOT


def test_check_reproduces_the_documented_figures_from_another_directory(tmp_path):
    files = sorted(str(p) for p in (ROOT / "validation/results/h200").glob("*.jsonl"))
    res = subprocess.run(
        [sys.executable, "-m", "shivam", "check", *files, "--format", "json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["recipe"] == "h200-graph" and out["card_factors_fitted"]
    cv = out["cross_validation"]["errors"]
    figures = (
        f"{100 * cv['energy']['median']:.1f} % median / {100 * cv['energy']['max']:.1f} % max in energy",
        f"{100 * cv['time']['median']:.1f} % / {100 * cv['time']['max']:.1f} % in time",
    )
    assert figures == ("1.9 % median / 14.0 % max in energy", "1.6 % / 9.9 % in time")
    assert cv["energy"]["n"] == 228 and len({r["fold"] for r in out["cross_validation"]["points"]}) == 13
    # the issues' bound: the measured energy at the predicted k within 1 % of the measured least, in and out of sample
    # (near-ties go to the smaller window: in sample Mistral-7B at alpha 0.6 takes k = 4, 0.5 % above measured k = 3)
    for best, exact in ((out["best_k"], 5), (out["cross_validation"]["best_k"], 6)):
        assert len(best) == 6 and all(b["ok"] for b in best)
        assert sum(b["best_k_measured"] == b["best_k_predicted"] for b in best) == exact
    readme = " ".join((ROOT / "README.md").read_text().split())
    assert all(f in readme for f in figures)


def test_every_option_has_help():
    from shivam.cli.parser import build_parser

    parser = build_parser()
    missing = []
    for action in parser._subparsers._group_actions[0].choices.items():
        name, sub = action
        for opt in sub._actions:
            if opt.dest != "help" and not opt.help:
                missing.append(f"{name} {opt.option_strings or opt.dest}")
    assert not missing, missing
