"""The 90 % band of a calibration: its cross-validation folds, and its coverage on data of a known error law."""

import numpy as np
from test_fit import synthetic

from shivam.calibrate import Measured, fit
from shivam.calibrate.band import coverage
from shivam.calibrate.evaluate import cross_validate, leave_one_group_out, predictions
from shivam.calibrate.points import Point, point_cost
from shivam.calibrate.workflow import cross_validated_band
from shivam.sim.workload import kv_cache_bytes, weight_bytes
from shivam.specs import Dtypes, load_gpu, load_model, make_params
from shivam.validate.calibration import calibration_points, engine_priors

GPU = load_gpu("h200")
BASE = make_params(GPU, "graph")
PRIORS = engine_priors("graph")  # what `shivam calibrate` holds for the graph engine
TRUTH = BASE.model_copy(
    update={
        "memory_efficiency": 0.8,
        "compute_efficiency": 0.7,
        "overlap_exponent": 2.0,
        "per_kernel_s": 3.5e-6,
        "per_step_s": 20e-6,
        "static_power_w": 130.0,
        "dram_j_per_byte": 1.2e-10,
        "block_power_w": 1.5,
        "kv_j_per_byte": 2e-11,
        "j_per_flop": {k: 1.15 * v for k, v in BASE.j_per_flop.items()},
        **PRIORS,
    }
)
# other models at shapes the quick suite does not have
HELD_OUT = [
    Point(suite="held-out", kind="step", model=m, new_tokens=n, batch=b, context=c)
    for m in ("llama-2-7b", "opt-6.7b", "gemma-2b", "qwen2-0.5b", "tinyllama-1.1b", "phi-3-mini")
    for n, b, c in ((1, 1, 512), (9, 1, 512), (1, 16, 512), (33, 1, 1024), (1, 4, 2048))
]


def measured(points, rng, sd):
    """Points as measured: the true cost times a log-normal error of sd in time and in energy."""
    out = []
    for p in points:
        cost, tokens, _ = point_cost(p, TRUTH)
        e = np.exp(sd * rng.standard_normal(2))
        group = "stage1" if p.kind == "stage1" else p.model
        out.append(Measured(p, float(cost.time_s) * e[0], float(cost.energy_j) * e[1], tokens, group))
    return out


def test_a_suite_whose_every_model_can_be_left_out_is_cross_validated_model_by_model():
    # four models at five shapes each: every fold identifies what all the data identifies, so the folds are those of
    # leave-one-model-out, row for row
    data, _ = synthetic()
    fix = {"per_iteration_s": 40e-6, "active_power_w": 0.0, "pcie_j_per_byte": 5.2e-11}
    rows = cross_validate(data, BASE, fix)
    assert {r["left_out"] for r in rows} == {"model"} and all(r["identified"] for r in rows)
    lomo = leave_one_group_out(data, BASE, fix)
    assert [(r["label"], r["energy_pred"], r["time_pred"]) for r in rows] == [
        (r["label"], r["energy_pred"], r["time_pred"]) for r in lomo
    ]


def test_the_quick_suite_leaves_its_anchor_out_one_point_at_a_time():
    # without mistral-7b (the only model with verify widths, batches and contexts) the other models cannot identify the
    # compute terms: its points are left out one at a time, the other models whole
    data = measured(calibration_points(GPU, quick=True), np.random.default_rng(0), 0.02)
    models = [m for m in data if m.group != "stage1"]
    rows = cross_validate(models, BASE, dict(PRIORS))
    how = {r["fold"]: r["left_out"] for r in rows}
    assert how == {"mistral-7b": "point", "opt-1.3b": "model", "opt-125m": "model", "llama-68m": "model"}
    assert len(rows) == len(models)
    _, band, _ = cross_validated_band(data, BASE, dict(PRIORS), False, basis="test")
    assert band.basis.startswith("cross-validation over 21 points (each model left out, mistral-7b one point")


def test_the_quick_suite_fits_the_kv_caches_energy_per_byte():
    # five KV-bound steps (cache 1.25-4.7x the weights): the fit recovers e_kv to within its noise instead of holding
    # it, and the suite without them cannot tell it from e_dram and holds it
    suite = calibration_points(GPU, quick=True)
    dt = Dtypes.of("bf16")
    kv_bound = [
        p
        for p in suite
        if p.kind == "step"
        and kv_cache_bytes(load_model(p.model), dt, p.batch, p.context) > weight_bytes(load_model(p.model), dt)
    ]
    assert len(kv_bound) == 5
    result = fit(measured(suite, np.random.default_rng(1), 0.01), BASE, dict(PRIORS), strict="hold")
    assert "kv_j_per_byte" not in result.held
    assert abs(result.params.kv_j_per_byte / TRUTH.kv_j_per_byte - 1) < 0.3, result.params.kv_j_per_byte
    without = [p for p in suite if p not in kv_bound]
    result = fit(measured(without, np.random.default_rng(1), 0.01), BASE, dict(PRIORS), strict="hold")
    assert "kv_j_per_byte" in result.held


def test_the_band_of_a_quick_calibration_holds_about_90_percent_of_other_points():
    # the model exact, every measurement off by a log-normal 2 %: over ten simulated cards, the band estimated from
    # the quick suite alone holds 80-95 % of 30 points of six other models, in energy and in time (percentiles of
    # 15 out-of-fold points: a little under 90 % on average)
    suite = calibration_points(GPU, quick=True)
    inside = []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        train, test = measured(suite, rng, 0.02), measured(HELD_OUT, rng, 0.02)
        result = fit(train, BASE, dict(PRIORS), strict="hold")
        _, band, _ = cross_validated_band(train, BASE, {**PRIORS, **result.held}, False)
        inside.append(coverage(predictions(test, result.params), band))
    mean = {key: float(np.mean([c[key] for c in inside])) for key in ("energy", "time")}
    assert 0.80 <= mean["energy"] <= 0.95 and 0.80 <= mean["time"] <= 0.95, mean


def test_a_quick_calibration_takes_its_engines_quick_band_and_keeps_its_own_without_one():
    from shivam.calibrate.band import quick_band
    from shivam.specs import Band

    own = Band(energy=(0.98, 1.02), time=(0.83, 1.05), points=14, basis="cv")
    engine = Band(energy=(0.96, 1.07), time=(0.96, 1.04), points=84, basis="held-out sets")
    q = quick_band(own, engine)
    assert q.energy == (0.96, 1.07) and q.time == (0.96, 1.04) and q.points == 84 and "held-out sets" in q.basis
    assert quick_band(own, None) is own and quick_band(None, None) is None
    assert quick_band(None, engine).energy == engine.energy  # a fit too small to cross-validate still gets it


def test_the_graph_engines_quick_band_is_what_the_held_out_sets_give():
    """The band stored in hardware/engines/graph.json is recomputed from the committed held-out sets: 17 + 32 + 15 +
    20 + 15 + 30 points refitted from their cards' quick suites, and the 20 whose card's check table is all that came
    back; each card's points against the band of the other cards' hold the pooled counts docs/validation.md gives."""
    from conftest import validation_script

    from shivam.specs import load_engine

    mod = validation_script("band_coverage")
    assert len(mod.printed_rows(mod.HELD_OUT / "check-a140912a.txt")) == 20
    stored, recomputed = load_engine("graph").quick_calibration_band, mod.quick_calibration_band()
    assert stored.points == recomputed.points == 149
    assert np.allclose(stored.energy, recomputed.energy) and np.allclose(stored.time, recomputed.time)
    pooled = mod.leave_one_card_out()["pooled"]
    assert pooled == {"points": 149, "inside": {"energy": 132, "time": 127}}


def test_the_ref_engines_quick_band_is_what_its_held_out_sets_give():
    """The same for the reference engine: sets 8, 9, 10 and 13 on four H200 cards, sets 12, 10 and 9 on an H100, set 12
    on two more H100s (one of them as validate printed it) and set 13 on a fourth (300 points), each refitted from its
    card's quick suite with the ref profile's priors, each GPU model weighing the same; each card's points against the
    band of the other seven cards' hold the pooled counts docs/validation.md gives (270 and 272 of 300)."""
    from conftest import validation_script

    from shivam.specs import load_engine

    mod = validation_script("band_coverage")
    stored, recomputed = load_engine("ref").quick_calibration_band, mod.quick_calibration_band("ref")
    assert stored.points == recomputed.points == 300
    assert np.allclose(stored.energy, recomputed.energy) and np.allclose(stored.time, recomputed.time)
    pooled = mod.leave_one_card_out("ref")["pooled"]
    assert pooled == {"points": 300, "inside": {"energy": 270, "time": 272}}


def test_a_band_over_gpu_models_weighs_each_model_the_same():
    # four points of one GPU at x 1.0, two of another at x 2.0: weights 1/8 and 1/4, so the cumulative weight's
    # middles are 1/16, 3/16, 5/16, 7/16 (x 1.0) and 5/8, 7/8 (x 2.0); the 5th percentile lies below the first middle
    # (x 1.0, the end value) and the 95th above the last (x 2.0); pooled by rows, 2 of 6 points would make it x 2.0
    # only from the 67th percentile, and with 40 points of the first GPU the second would fall outside the band
    from shivam.calibrate.band import band_over_gpus

    def rows(ratio, n):
        return [{"energy_meas": ratio, "energy_pred": 1.0, "time_meas": 1.0, "time_pred": 1.0}] * n

    band = band_over_gpus({"a": rows(1.0, 4), "b": rows(2.0, 2)}, "")
    assert band.energy == (1.0, 2.0) and band.time == (1.0, 1.0) and band.points == 6
    band = band_over_gpus({"a": rows(1.0, 40), "b": rows(2.0, 2)}, "")
    assert band.energy == (1.0, 2.0)
    # between the middles it interpolates: 20 points of one GPU at x 1.00, 1.01, ... 1.19 have middles (i + 0.5) / 20,
    # so the 5th percentile falls halfway between the first two (x 1.005), the 95th between the last two (x 1.185)
    band = band_over_gpus({"a": [rows(1.0 + 0.01 * i, 1)[0] for i in range(20)]}, "")
    assert np.allclose(band.energy, (1.005, 1.185))


def test_the_ref_engines_datasheet_band_is_both_measured_gpu_models():
    """The datasheet band stored in hardware/engines/ref.json is recomputed from the H200's 93 steps and five H100
    cards' 114 quick-suite points, each GPU model weighing the same, and is no wider than +-30 % about its centre; the
    H200's own band held only 80 % (energy) and 55 % (time) of the H100's points, the figures docs/validation.md
    gives."""
    from conftest import validation_script

    from shivam.specs import load_engine

    out = validation_script("datasheet_band").figures()
    stored = load_engine("ref").datasheet_band
    assert stored.points == out["pooled"].points == 207
    assert np.allclose(stored.energy, out["pooled"].energy) and np.allclose(stored.time, out["pooled"].time)
    for lo, hi in (stored.energy, stored.time):
        assert (hi - lo) / (hi + lo) <= 0.30
    assert round(100 * out["cross"]["h100-sxm"]["energy"]) == 80 and round(100 * out["cross"]["h100-sxm"]["time"]) == 55
    assert round(100 * out["cross"]["h200"]["energy"]) == 81 and round(100 * out["cross"]["h200"]["time"]) == 85
    # the H200's calibration on the H100's datasheet figures: time within 2.3 % median / 9.3 % max, energy x 0.93-1.20
    moved = validation_script("datasheet_band").transfer()
    t_err = np.abs(1 / moved["time"] - 1)
    assert round(100 * np.median(t_err), 1) == 2.3 and round(100 * t_err.max(), 1) == 9.3
    assert round(moved["energy"].min(), 2) == 0.93 and round(moved["energy"].max(), 2) == 1.20
