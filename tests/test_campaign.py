"""Campaigns: append-only results, resume after a kill, failed points recorded, and the validator's error cases."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT

pytest.importorskip("torch")

TINY = str(ROOT / "tests/data/tiny-llama.json")
TINY_OPT = str(ROOT / "tests/data/tiny-opt.json")


def points(n):
    pts = [{"suite": "t", "kind": "step", "model": TINY, "new_tokens": 1 + i % 3, "context": 8 + i} for i in range(n)]
    pts.append({"suite": "t", "kind": "spec", "model": TINY, "draft": TINY_OPT, "k": 2, "alpha": 0.5, "context": 8})
    return pts


def validate_cmd(pfile, out):
    return [
        sys.executable,
        "-m",
        "shivam",
        "validate",
        "--simulate-meter",
        "--points-file",
        str(pfile),
        "--out",
        str(out),
        "--repeats",
        "1",
        "--min-periods",
        "3",
    ]


def point_records(path):
    return [json.loads(l) for l in path.read_text().splitlines() if '"record": "point"' in l]


def test_killed_campaign_resumes_with_every_point_exactly_once(tmp_path):
    pts = points(7)
    pfile = tmp_path / "points.json"
    pfile.write_text(json.dumps(pts))
    results = tmp_path / "out" / "points.jsonl"
    proc = subprocess.Popen(
        validate_cmd(pfile, tmp_path / "out"),
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 120
    while time.time() < deadline:  # kill it once 3 points are on disk
        if results.exists() and len(point_records(results)) >= 3:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    before = point_records(results)
    assert 3 <= len(before) < len(pts), "the kill must land mid-campaign"
    res = subprocess.run(validate_cmd(pfile, tmp_path / "out"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    after = point_records(results)
    ids = [r["id"] for r in after]
    assert len(ids) == len(set(ids)) == len(pts)  # each point exactly once
    assert [r["id"] for r in after[: len(before)]] == [r["id"] for r in before]  # nothing earlier rewritten
    assert all(r["status"] == "ok" for r in after)


def test_half_written_line_is_dropped_on_resume(tmp_path):
    from shivam.validate.runner import ResultsFile

    path = tmp_path / "r.jsonl"
    path.write_text('{"record": "point", "id": "a"}\n{"record": "point", "id": "b", "trunc')
    rf = ResultsFile(path)
    assert rf.done_ids() == {"a"}
    rf.append({"record": "point", "id": "c"})
    assert rf.done_ids() == {"a", "c"}


def test_a_failing_point_is_recorded_and_the_campaign_goes_on(tmp_path):
    # a tiny mixture-of-experts model, which the graph engine refuses to build: that point fails, the next runs
    moe = tmp_path / "tiny-mixtral.json"
    moe.write_text(
        json.dumps(
            {"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
             "num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 256, "num_local_experts": 4,
             "num_experts_per_tok": 2, "max_position_embeddings": 2048}
        )
    )  # fmt: skip
    pts = [{"suite": "t", "kind": "step", "model": str(moe)}, {"suite": "t", "kind": "step", "model": TINY}]
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps(pts))
    res = subprocess.run(validate_cmd(pfile, tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    recs = point_records(tmp_path / "points.jsonl")
    assert [r["status"] for r in recs] == ["failed", "ok"]
    assert "mixture-of-experts" in recs[0]["error"]


def test_validate_without_a_gpu_says_so(cli):
    res = cli("validate", "--suite", "quick")
    if res.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert "GPU" in res.stderr


def test_validate_unknown_suite(cli):
    res = cli("validate", "--suite", "stage9", "--simulate-meter")
    assert res.returncode == 2 and "unknown suite" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_a_point_beyond_its_models_positions_is_refused_before_anything_runs(cli, tmp_path):
    # gpt2 holds 1,024 positions: 1,024 cached + 5 new tokens cannot run; nothing is measured or written
    pfile = tmp_path / "points.json"
    pfile.write_text(json.dumps([{"suite": "t", "kind": "step", "model": "gpt2", "new_tokens": 5, "context": 1024}]))
    res = cli("validate", "--simulate-meter", "--points-file", str(pfile), "--out", str(tmp_path / "out"))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "1,029 tokens exceed gpt2's max_position_embeddings 1,024" in res.stderr and "fix or drop" in res.stderr
    assert not (tmp_path / "out").exists()


def test_every_suite_is_well_formed():
    from shivam.validate.suites import SUITES, suite_points

    for name in SUITES:
        pts = suite_points(name)
        assert pts and len({p.id for p in pts}) == len(pts), name
        for p in pts:
            p.check()  # every point fits its models' positions


def test_codecarbon_cross_check_is_recorded_beside_the_meter(tmp_path):
    pytest.importorskip("codecarbon")
    pfile = tmp_path / "p.json"
    pfile.write_text(json.dumps([{"suite": "t", "kind": "step", "model": TINY}]))
    res = subprocess.run(
        validate_cmd(pfile, tmp_path) + ["--codecarbon"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert res.returncode == 0, res.stderr
    cc = point_records(tmp_path / "points.jsonl")[0]["codecarbon"]
    # the simulated counter's constant power; CodeCarbon's own sampling thread runs during this window, and on a
    # busy 2-core host the edge detection of a 0.1 s period then lags by up to a few ms (the meter's precision on an
    # idle host is tested in test_meter.py)
    assert cc["shivam_power_w"] == pytest.approx(100.0, rel=0.03)
    assert cc["codecarbon_total_energy_j"] > 0 and cc["codecarbon_wall_s"] > 0.3


@pytest.mark.parametrize("probe", sorted(p.name for p in (ROOT / "validation/probes").glob("*.json")))
def test_every_committed_probe_file_is_one_the_validator_takes(probe):
    # a probe is committed before a card measures it: one the validator refuses costs a device call to find out
    from shivam.validate.campaign import select_points

    path = ROOT / "validation/probes" / probe
    if not isinstance(json.loads(path.read_text()), list):
        pytest.skip("not a points file")
    assert select_points([], points_file=str(path))


def test_a_printed_table_is_read_back_against_its_probe_file(tmp_path):
    # the table `shivam validate` prints (ms and J per call) stands in for a results file that was lost: each row is
    # matched to its probe point by label, failed points are left out, and a bad table is one ShivamError
    from shivam.calibrate.results import printed_measurements
    from shivam.errors import ShivamError

    probe = tmp_path / "probe.json"
    points = [
        {"suite": "p", "engine": "ref", "kind": "step", "model": "gpt2", "new_tokens": 1, "context": 512, "batch": b}
        for b in (4, 8)
    ]
    probe.write_text(json.dumps(points))

    def table(*rows):
        log = tmp_path / f"log-{len(list(tmp_path.glob('log-*')))}.txt"
        head = "┃ point ┃ ms/call ┃ J/call ┃ spread ┃ W ┃ predicted J/call ┃ pred. error ┃\n"
        log.write_text(head + "".join(f"│ {r} │\n" for r in rows))
        return log

    good = table("gpt2 step n=1 b=4 c=512 │   1.250 │ 0.4000 │  0.2 % │ 320", "gpt2 step n=1 b=8 c=512 │ FAILED │ │ │")
    (m,) = printed_measurements(good, probe, "GPU-x")
    assert (m.point.batch, m.time_s, m.energy_j, m.card) == (4, 0.00125, 0.4, "GPU-x")
    for bad, why in (
        (table("gpt2 step n=1 b=4 c=512 │ — │ 0.4000 │ │"), "no positive ms and J"),
        (table("gpt2 step n=1 b=4 c=512 │ 1.0 │ 0.4 │ │", "gpt2 step n=1 b=4 c=512 │ 1.0 │ 0.4 │ │"), "printed twice"),
        (table("opt-125m step n=1 b=4 c=512 │ 1.0 │ 0.4 │ │"), "no measured point"),
    ):
        with pytest.raises(ShivamError, match=why):
            printed_measurements(bad, probe, "GPU-x")
    probe.write_text('{"not": "a list"}')
    with pytest.raises(ShivamError, match="not a list of points"):
        printed_measurements(good, probe, "GPU-x")


def test_a_generate_points_record_holds_its_calls_phases(tmp_path):
    # transformers' generate() on the static cache: the record keeps the calls' set-up, prefill and step times, so a
    # cost per call can be told from a cost per token (shivam.validate.runner.phase_summary)
    pfile = tmp_path / "points.json"
    point = {"suite": "t", "engine": "hf-static", "kind": "generate", "model": TINY, "prompt": 6, "gen": 4}
    pfile.write_text(json.dumps([{**point, "weights_dtype": "fp32"}]))
    res = subprocess.run(validate_cmd(pfile, tmp_path / "out"), cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    (rec,) = point_records(tmp_path / "out" / "points.jsonl")
    phases = rec["measured"]["generate_phases"]
    assert phases["steps"] == 3 and phases["calls"] >= 3
    assert phases["setup_range_s"][0] <= phases["setup_s"] <= phases["setup_range_s"][1]
    assert 0 < phases["step_s"] < rec["measured"]["time_per_call_s"]
