"""Reports without a browser: self-contained, the promised figures present, and no torch on the predict path."""

import subprocess
import sys

from conftest import ROOT


def test_predict_report_is_self_contained_and_light(tmp_path):
    html = tmp_path / "r.html"
    code = (
        "import sys; from shivam.cli import main; "
        "rc = main(['predict','--model','mistral-7b','--gpu','l4','--k','1..8',"
        f"'--report',{str(html)!r},'--format','json']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
    text = html.read_text()
    assert "<script src=" not in text and '<script type="text/javascript" src=' not in text  # embedded: offline
    assert len(text) > 3_000_000  # plotly.js itself (~4.6 MB) is inside
    for title in (
        "Energy per generated token vs speculation window k",
        "Energy saving vs standard decoding",
        "Speed-up vs standard decoding",
        "Roofline",
        "Energy per token by term",
        "Stage I",
    ):
        assert title in text, title
    assert "energy per token (J)" in text and "arithmetic intensity (FLOP per DRAM byte)" in text


def test_validation_report_applies_the_bundled_recipes_card_factors_as_check_does(tmp_path):
    # with no flags, report and check read the same recipe: one energy scale per card for the bundled graph
    # calibration, so the report's energy errors are check's (fitted on all points), not the card spread's
    import re

    from shivam.calibrate import check_results
    from shivam.report.validation import validation_report

    files = sorted(str(p) for p in (ROOT / "validation/results/h200").glob("*.jsonl"))
    html = tmp_path / "v.html"
    validation_report(files, str(html))
    cells = re.search(
        r"<td>energy</td><td>(\d+)</td><td>([\d.]+) %</td><td>[\d.]+ %</td><td>([\d.]+) %</td>", html.read_text()
    )
    out = check_results(files, "graph")
    e = out["errors"]["energy"]
    assert out["card_factors_fitted"]
    assert int(cells.group(1)) == e["n"]
    assert (cells.group(2), cells.group(3)) == (f"{100 * e['median']:.1f}", f"{100 * e['max']:.1f}")
