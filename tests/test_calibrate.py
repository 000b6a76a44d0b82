"""`shivam calibrate`: the suite a GPU gets, the refusals, and the whole path on the CPU against the simulated counter
(measure, fit, install, and predict finding the installed calibration and saying so)."""

import json
from pathlib import Path

import pytest
from conftest import ROOT
from test_cli import assert_clean_error

from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario
from shivam.specs import GPU, Dtypes, load_gpu, load_model, make_params
from shivam.specs.calibration import find_calibration, load_calibration, load_recipe
from shivam.validate.calibration import (
    PRIORS,
    below_power_limit,
    calibration_points,
    card_points,
    engine_priors,
    kv_bound,
)


@pytest.mark.parametrize("gpu_id,dtype", [("t4", "fp16"), ("l4", "bf16"), ("h200", "bf16"), ("rtx-4090", "bf16")])
def test_the_suite_fits_the_gpu_and_uses_its_dtype(gpu_id, dtype):
    gpu = load_gpu(gpu_id)
    points = calibration_points(gpu, quick=True)
    assert {p.weights_dtype for p in points} == {dtype}
    params = make_params(gpu)
    for p in points:
        if p.kind == "stage1":
            continue
        scn = Scenario(
            target=load_model(p.model),
            params=params,
            dtypes=Dtypes.of(dtype),
            draft=load_model(p.draft) if p.draft else None,
            batch=p.batch,
            prompt=p.context + p.new_tokens + p.k,
            gen=1,
        )
        assert scn.memory_needed(p.k) <= gpu.capacity_bytes, p.label()
    kinds = {p.kind for p in points}
    # what identifies each fitted parameter: wide verify steps, batch, context, small models, PCIe
    assert {"step", "spec", "stage1"} <= kinds
    assert max(p.new_tokens for p in points) >= 129 and max(p.batch for p in points) >= 32
    assert len({p.model for p in points if p.model}) >= 4


def test_the_reference_engine_is_calibrated_on_its_own_points_and_priors():
    # a calibration of the ref engine measures ref points (the fit takes only its engine's), the same decode, verify
    # and speculative shapes as the graph engine's suite; stage I's plain GEMMs are graph points, so they are left out
    gpu = load_gpu("h200")
    graph, ref = calibration_points(gpu, quick=True), calibration_points(gpu, quick=True, engine="ref")
    assert {p.engine for p in ref} == {"ref"} and {p.engine for p in graph} == {"graph"}
    assert {p.label() for p in graph if p.kind != "stage1"} <= {p.label() for p in ref}
    # the ref engine's KV-bound decode of Mistral-7B at batch 128 runs at the H200's power limit (its bundled
    # calibration says so, and it drew 687-703 W when measured), where energy per byte moves nothing: it stays for
    # its time, and more of the mid and small models' join until five are predicted below the limit
    large = ["mistral-7b step n=1 b=128 c=2048", "mistral-7b step n=5 b=128 c=2048", "mistral-7b step n=1 b=128 c=4096"]
    assert [p.label() for p in graph if p.batch >= 128] == large == [p.label() for p in ref if p.batch >= 128]
    assert not any(below_power_limit([p for p in ref if p.batch >= 128], gpu, "ref"))
    assert all(below_power_limit([p for p in graph if p.batch >= 128], gpu, "graph"))  # the graph suite's as it was
    small_kv = [p for p in ref if 16 <= p.batch < 128 and p.context >= 1024]
    assert len(small_kv) == 5 and {p.model for p in small_kv} == {"opt-1.3b", "opt-125m"}
    assert all(below_power_limit(small_kv, gpu, "ref"))
    assert len(ref) == len(graph) - 4 + 3  # stage I's four points out, three KV-bound points in
    assert {p.engine for p in card_points(gpu, engine="ref")} == {"ref"}
    # the ref profile's priors join the ones every engine holds: the bundled calibration's resident-program power, its
    # e_kv (0) and attention products' rates (verify and prompt tiles), and the split-KV kernel's fixed and merge
    # times measured alone; the graph engine fits block power and fixed time, and holds the masked kernel's L2
    # re-reads at 0 (one GQA model per suite)
    bundled = load_calibration(find_calibration("h200", "ref")).parameters
    assert engine_priors("ref") == {
        **PRIORS,
        "block_power_w": pytest.approx(bundled["block_power_w"], rel=0.01),
        "kv_j_per_byte": 0.0,
        "attention_block_s": bundled["attention_block_s"],
        "attention_merge_s": bundled["attention_merge_s"],
        "attention_compute_fraction": pytest.approx(bundled["attention_compute_fraction"], abs=0.01),
        "prompt_attention_fraction": pytest.approx(bundled["prompt_attention_fraction"], abs=0.01),
    }
    assert engine_priors("graph") == {**PRIORS, "l2_j_per_byte": 0.0}
    with pytest.raises(ShivamError, match="--engine graph or ref"):
        engine_priors("hf-static")
    # a GPU model with a bundled ref calibration holds each resident program's power at its own fitted value (the
    # H100 SXM's, fitted over five cards' suites together); one without, the engine's; the graph engine's L2 prior
    # stays 0 on the H200 though its bundled calibration fits the term (the quick band was measured without it)
    from shivam.validate.calibration import gpu_priors

    h100 = load_calibration(find_calibration("h100-sxm", "ref"))
    assert "block_power_w" not in load_recipe("h100-sxm-ref").fix
    assert gpu_priors("ref", "h100-sxm") == {**engine_priors("ref"), "block_power_w": h100.parameters["block_power_w"]}
    assert 0.18 < h100.parameters["block_power_w"] < 0.20 and h100.uncertainty["block_power_w"] < 0.015
    assert gpu_priors("ref", "l4") == engine_priors("ref") and gpu_priors("ref", None) == engine_priors("ref")
    assert gpu_priors("graph", "h200") == engine_priors("graph")


def test_calibrate_measures_the_engine_it_is_asked_for(tmp_path, monkeypatch):
    # what calibrate hands the campaign, and the file it is kept in (the measuring itself is the campaign's tests')
    import shivam.validate.calibration as calibration

    seen = {}

    def measured(points, meter, folder, name, *args):
        seen.update(engines={p.engine for p in points}, name=name)
        raise ShivamError("stop here")

    monkeypatch.setenv("SHIVAM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "_measure", measured)
    for engine, suffix in (("ref", "-ref"), ("graph", "")):
        with pytest.raises(ShivamError, match="stop here"):
            calibration.calibrate(engine=engine, gpu="h200", simulate_meter=True, output=str(tmp_path / "c.json"))
        assert seen["engines"] == {engine} and seen["name"].startswith(f"h200-simulate-quick{suffix}-")
    # named none: the reference engine where its widest tiles' 224 KiB of shared memory fit a thread block (H200's
    # 227 KB), the graph engine where they do not (L4's 99 KB) or there is no bf16 (T4)
    for gpu, engine, suffix in (("h200", "ref", "-ref"), ("l4", "graph", ""), ("t4", "graph", "")):
        with pytest.raises(ShivamError, match="stop here"):
            calibration.calibrate(gpu=gpu, simulate_meter=True, output=str(tmp_path / "c.json"))
        assert seen["engines"] == {engine} and seen["name"].startswith(f"{gpu}-simulate-quick{suffix}-")
    engines = {g: calibration.calibration_engine(load_gpu(g)) for g in ("h100-sxm", "a100-80gb", "rtx-4090", "t4")}
    assert engines == {"h100-sxm": "ref", "a100-80gb": "graph", "rtx-4090": "graph", "t4": "graph"}
    # a GPU file that does not say how much shared memory a block may take keeps the graph engine
    unknown = load_gpu("h200").model_copy(update={"shared_memory_per_block_kb": None})
    assert calibration.calibration_engine(unknown) == "graph"


def test_calibrating_an_engine_that_runs_no_decode_steps_is_refused_before_measuring(cli, tmp_path):
    out = cli(
        "calibrate", "--simulate-meter", "--gpu", "h200", "--engine", "hf", "-o", str(tmp_path / "c.json"),
        env={"SHIVAM_DATA_DIR": str(tmp_path)},
    )  # fmt: skip
    assert_clean_error(out, "--engine graph or ref")
    assert not (tmp_path / "c.json").exists() and not (tmp_path / "measurements").exists()


def test_without_a_calibration_to_tell_every_kv_bound_candidate_is_measured():
    # the H100 PCIe has no bundled calibration: its datasheet figures cannot say which steps run at its limit (they
    # put the ref engine's at 320-470 W where the H200 drew 700), so the mid and small models' all join the anchor's
    h100, h200 = load_gpu("h100-pcie"), load_gpu("h200")
    assert below_power_limit(calibration_points(h100, quick=True, engine="ref"), h100, "ref") is None
    kv = [p for p in calibration_points(h100, quick=True, engine="ref") if p.batch >= 16 and p.context >= 1024]
    assert len(kv) > 5 and {p.model for p in kv} >= {"opt-1.3b", "opt-125m"}
    # without a power limit nothing is held there
    unlimited = h200.model_copy(update={"power_limit_w": None})
    assert below_power_limit(calibration_points(h200, quick=True, engine="ref"), unlimited, "ref") == [True] * 24


def test_kv_bound_steps_stay_within_the_models_positions():
    # OPT-1.3B holds 2,048 positions: a cache 4x its weights at batch 32 would need 2,048 cached tokens plus the new
    # one, so the next shape of that size (batch 64 over 1,024) is taken
    m, dt = load_model("opt-1.3b"), Dtypes.of("bf16")
    b, c = kv_bound(load_gpu("l4"), "opt-1.3b", dt, 4.0)
    assert (b, c) == (64, 1024) and c + 1 <= m.max_context
    for gpu in ("t4", "l4", "rtx-4090", "a100-80gb", "h200"):
        for engine in ("graph", "ref"):
            for p in calibration_points(load_gpu(gpu), quick=True, engine=engine):
                p.check()  # raises for a point beyond its models' positions


def test_a_gpu_too_small_for_every_model_is_refused():
    small = json.loads((ROOT / "hardware/t4.json").read_text())
    small.update(id="tiny-gpu", name="Tiny GPU")
    small["memory"]["capacity_gb"] = 0.5
    del small["memory"]["usable_gb"]
    with pytest.raises(ShivamError, match="no model of the calibration suite fits"):
        calibration_points(GPU.model_validate(small))
    with pytest.raises(ShivamError, match="no model of the calibration suite fits"):
        card_points(GPU.model_validate(small))


def test_calibrate_without_a_gpu_is_one_line(cli):
    import shutil

    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has an NVIDIA driver")
    assert_clean_error(cli("calibrate", "--quick"), "no NVIDIA GPU")
    assert_clean_error(cli("calibrate", "--card", "--quick"), "exclusive")
    assert_clean_error(cli("calibrate", "--simulate-meter"), "--simulate-meter needs --gpu")


def test_calibrate_without_nvml_is_one_line(cli, tmp_path):
    # a Python where `import pynvml` fails: the meter says what to install
    (tmp_path / "pynvml.py").write_text("raise ImportError('no NVML here')\n")
    res = cli("calibrate", "--quick", env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert_clean_error(res, "nvidia-ml-py is not installed")


def test_calibrate_installs_a_calibration_predict_then_uses(cli, tmp_path):
    # the simulated counter draws a constant 100 W on a CPU: the fit is no calibration of a T4, so it is written only
    # where -o says (into the test's data directory, where predict looks), never installed by default
    env = {"SHIVAM_DATA_DIR": str(tmp_path)}
    assert_clean_error(cli("calibrate", "--simulate-meter", "--gpu", "t4", env=env), "-o FILE")
    target = tmp_path / "calibrations" / "t4-graph-simulated.json"
    res = cli("calibrate", "--simulate-meter", "--gpu", "t4", "--min-periods", "1", "-o", str(target), env=env)
    assert res.returncode == 0, res.stderr
    installed = list((tmp_path / "calibrations").glob("t4-graph-*.json"))
    assert installed == [target]
    cal = json.loads(target.read_text())
    assert cal["gpu"] == "t4" and cal["card"]["name"] == "NVIDIA T4"
    # every parameter is either fitted or held, and the held ones are named with their prior values
    assert set(cal["parameters"]) >= {"memory_efficiency", "static_power_w", "dram_j_per_byte"}
    assert "per_iteration_s" in cal["note"] and "active_power_w" in cal["note"]
    measurements = list((tmp_path / "measurements").glob("*.jsonl"))
    assert len(measurements) == 1 and "written to" in res.stdout
    pred = cli("predict", "--model", "opt-125m", "--gpu", "t4", "--k", "2", "--format", "json", env=env)
    assert json.loads(pred.stdout)["parameters"].startswith(f"calibration {installed[0]}")
    listed = cli("calibrations", env=env)
    assert "installed" in listed.stdout and "t4" in listed.stdout
    # elsewhere (no installed calibration) the T4 stays on its datasheet
    bare = cli(
        "predict",
        "--model",
        "opt-125m",
        "--gpu",
        "t4",
        "--k",
        "2",
        "--format",
        "json",
        env={"SHIVAM_DATA_DIR": str(tmp_path / "empty")},
    )
    assert "datasheet" in json.loads(bare.stdout)["parameters"]


def test_card_scales_every_energy_coefficient(tmp_path, monkeypatch):
    # against a constant simulated power, the card's scale is measured / predicted energy; the installed calibration
    # multiplies every energy coefficient by it, so its energy predictions are the bundled ones times the scale
    import shivam
    from shivam.validate.calibration import calibrate_card

    monkeypatch.setenv("SHIVAM_DATA_DIR", str(tmp_path))
    # the simulated counter's energy is its constant power times the CPU's time, which a loaded machine stretches
    # unevenly between runs: the agreement asked is loose, the scaling below is exact whatever the scale
    agree = 3.0
    out = calibrate_card(
        gpu="h200", engine="graph", simulate_meter=True, agree=agree, min_periods=2, output=str(tmp_path / "c.json")
    )
    f = out["scale"]
    assert f > 0 and abs(out["runs"][-1] / out["runs"][-2] - 1) <= agree
    assert out["engine"] == "graph" and json.loads(Path(out["calibration"]).read_text())["engine"] == "graph"
    bundled_file = str(ROOT / "hardware/calibrated/h200-graph.json")
    # gpt2's unaligned head runs the fallback kernels (misaligned_power_w); stage I moves PCIe bytes
    for model in ("mistral-7b", "gpt2"):
        mine = shivam.predict(model, "h200", k=2, alpha=0.8, calibration=out["calibration"])
        bundled = shivam.predict(model, "h200", k=2, alpha=0.8, calibration=bundled_file)
        for a, b in zip(mine.rows, bundled.rows):
            assert a["energy_per_token_j"] == pytest.approx(f * b["energy_per_token_j"], rel=1e-9)
            assert a["time_per_token_s"] == pytest.approx(b["time_per_token_s"], rel=1e-12)
    mine = shivam.stage1("h200", reuse=[1, 10], calibration=out["calibration"])
    bundled = shivam.stage1("h200", reuse=[1, 10], calibration=bundled_file)
    assert mine["energy_reload_j"] == pytest.approx([f * e for e in bundled["energy_reload_j"]], rel=1e-9)


def test_the_datasheet_band_covers_held_out_models_on_the_h200():
    # the H200's data treated as uncalibrated: a band taken from the other models' datasheet-only errors covers
    # 80-95 % of each held-out model's points, and is no wider than +-30 % about its centre
    from shivam.calibrate import check_results
    from shivam.specs import load_engine

    files = sorted(str(p) for p in (ROOT / "validation/results/h200").glob("*.jsonl"))
    for engine in ("graph", "hf"):
        out = check_results(files, engine, calibration=False)
        for key in ("energy", "time"):
            assert 0.80 <= out["band_coverage"][key] <= 0.95, (engine, key, out["band_coverage"])
            lo, hi = out["band"][key]
            assert (hi - lo) / (hi + lo) <= 0.30
            assert list(load_engine(engine).datasheet_band.model_dump()[key]) == pytest.approx([lo, hi])


def test_every_bundled_gpu_prediction_has_a_band():
    import shivam
    from shivam.specs import gpu_ids

    for gid in gpu_ids():
        r = shivam.predict("opt-1.3b", gid, k=2, alpha=0.8)
        lo, hi = r.scenario.params.energy_band
        for row in r.rows:
            assert row["energy_per_token_j_low"] == pytest.approx(lo * row["energy_per_token_j"], rel=1e-12)
            assert row["energy_per_token_j_high"] == pytest.approx(hi * row["energy_per_token_j"], rel=1e-12)
            assert row["time_per_token_s_low"] < row["time_per_token_s_high"]
        expected = "calibration band" if gid in ("h200", "h100-sxm") else "datasheet-only band"
        assert r.meta["band"]["basis"].startswith(expected)


def test_predict_takes_the_engine_of_the_calibration_it_uses(tmp_path, monkeypatch):
    # the H200 bundles ref and graph calibrations: ref by default; datasheet figures wanted: graph; a calibration
    # installed for this GPU model (here a copy of the bundled graph one): its engine
    import shutil

    from shivam.specs import default_engine

    monkeypatch.setenv("SHIVAM_DATA_DIR", str(tmp_path))
    assert default_engine("h200") == "ref"
    assert default_engine("h200", False) == "graph"
    assert default_engine("l4") == "graph"  # no bundled calibration
    assert default_engine("h200", str(ROOT / "hardware/calibrated/h200-graph.json")) == "graph"
    (tmp_path / "calibrations").mkdir()
    shutil.copy(ROOT / "hardware/calibrated/h200-graph.json", tmp_path / "calibrations" / "h200-graph-mine.json")
    assert default_engine("h200") == "graph"


def test_card_takes_the_engine_predict_takes_and_keeps_a_cards_own_fit(tmp_path, monkeypatch):
    # named none, --card scales the engine predict takes on the GPU (the bundled ref calibration on an H200)
    import shivam.validate.calibration as calibration
    from shivam.specs.calibration import Card

    seen = {}

    def points(gpu, simulated=False, engine="graph"):
        seen["engine"] = engine
        raise ShivamError("stop here")

    monkeypatch.setenv("SHIVAM_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(calibration, "card_points", points)
    with pytest.raises(ShivamError, match="stop here"):
        calibration.calibrate_card(gpu="h200", simulate_meter=True, output=str(tmp_path / "c.json"))
    assert seen["engine"] == "ref"
    # where this card's own calibration is installed, --card would replace it: refused before anything runs, and
    # a --card calibration of before is replaced as asked
    card = Card(uuid="GPU-0123abcd-0000", name="NVIDIA H200")
    own = calibration._installed_path("h200", "ref", card)
    own.parent.mkdir(parents=True)
    bundled = json.loads((ROOT / "hardware/calibrated/h200-ref.json").read_text())
    own.write_text(json.dumps({**bundled, "note": "shivam calibrate --quick on NVIDIA H200 GPU-0123abcd-0000"}))
    with pytest.raises(ShivamError, match="own ref calibration"):
        calibration._refuse_replacing_own_fit("h200", "ref", card, None)
    calibration._refuse_replacing_own_fit("h200", "ref", card, str(tmp_path / "elsewhere.json"))  # -o: no clash
    own.write_text(json.dumps({**bundled, "note": f"{calibration.CARD_NOTE} on NVIDIA H200 GPU-0123abcd-0000"}))
    calibration._refuse_replacing_own_fit("h200", "ref", card, None)


def test_refit_fits_kept_measurements_again_without_a_gpu(cli, tmp_path):
    # an H100's quick suite, its 24th point failed (out of memory): --refit fits the 23 that measured with this
    # version's fit, names the one left out, and writes the calibration of that card; it measures nothing
    kept = "validation/results/h100-calibrate/h100-ad369a38-quick-ref.jsonl"
    target = tmp_path / "h100.json"
    res = cli("calibrate", "--refit", kept, "-o", str(target))
    assert res.returncode == 0, res.stderr
    assert "left out (failed when measured): mistral-7b step n=5 b=128 c=2048" in res.stdout
    cal = json.loads(target.read_text())
    assert cal["gpu"] == "h100-sxm" and cal["engine"] == "ref"
    assert cal["card"]["uuid"].startswith("GPU-ad369a38") and "1 failed point(s) left out" in cal["note"]
    assert "memory_efficiency" not in cal["note"].split("held at priors: ")[1].split(", ")  # fitted, not held
    assert cal["band"]["basis"].startswith("the engine's quick-calibration band")


def test_refit_refuses_what_it_cannot_fit_in_one_line(cli, tmp_path):
    assert_clean_error(cli("calibrate", "--refit", str(tmp_path / "none.jsonl")), "no such file")
    assert_clean_error(cli("calibrate", "--refit", "validation/results/h200-ref/quick.jsonl"), "shivam fit")
    kept = "validation/results/h100-calibrate/h100-ad369a38-quick-ref.jsonl"
    assert_clean_error(cli("calibrate", "--refit", kept, "--quick"), "--refit fits measurements already taken")
    # installed, a refit would be what predict takes for every H100 SXM here: not from a suite with failed points,
    # nor from a card this machine does not have, without -o
    env = {"SHIVAM_DATA_DIR": str(tmp_path)}
    assert_clean_error(cli("calibrate", "--refit", kept, env=env), "1 of its points failed")
    whole = "validation/results/h100-calibrate/h100-778b0c9e-quick-ref.jsonl"
    assert_clean_error(cli("calibrate", "--refit", whole, env=env), "is not on this machine")
    assert not (tmp_path / "calibrations").exists() or not list((tmp_path / "calibrations").iterdir())


def test_the_bundled_h100_calibration_is_its_recipe_and_its_band_is_a_card_it_never_saw():
    # hardware/calibrated/h100-sxm-ref.json: the recipe's fit of five H100 cards' quick suites (parameters and card
    # factors refit here), and a band from the held-out probe sets of each card that measured some, predicted by the
    # recipe fitted on the other cards' suites with no card factor (validation/h100_calibration.py)
    from conftest import validation_script

    from shivam.calibrate import fit_results
    from shivam.calibrate.band import band_over_gpus
    from shivam.specs.calibration import default_engine, find_calibration, load_recipe

    path = ROOT / "hardware/calibrated/h100-sxm-ref.json"
    stored = json.loads(path.read_text())
    recipe = load_recipe("h100-sxm-ref")
    refit = fit_results([str(ROOT / f) for f in recipe.results], recipe=recipe, band=False)
    for name, value in refit.result.values.items():
        if name != "compute_scale":  # which is in the per-FLOP energies
            assert stored["parameters"][name] == pytest.approx(value, rel=1e-6), name
    assert stored["parameters"]["j_per_flop"]["bf16"] == pytest.approx(refit.result.params.j_per_flop["bf16"])
    assert len(stored["card_factors"]) == 5
    for card, factor in refit.result.card_factors.items():
        assert stored["card_factors"][card] == pytest.approx(factor, rel=1e-6)
    mod = validation_script("h100_calibration")
    by_card = mod.rows_of_unseen_cards()
    counts = {"GPU-778b0c9e": 90, "GPU-f6c727ca": 30, "GPU-ffb5d03d": 30, "GPU-0993e514": 30}
    assert {c: len(r) for c, r in by_card.items()} == counts
    band = band_over_gpus(by_card, "")
    assert stored["band"]["points"] == 180
    assert stored["band"]["energy"] == pytest.approx(band.energy) and stored["band"]["time"] == pytest.approx(band.time)
    # predict on an H100 SXM takes it, on the engine it was measured on
    assert default_engine("h100-sxm") == "ref" and find_calibration("h100-sxm", "ref") == path
