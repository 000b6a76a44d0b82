"""The 90 % band of a calibration: its cross-validation folds, and its coverage on data of a known error law."""

import numpy as np
from test_fit import synthetic

from shivam.calibrate import Measured, fit
from shivam.calibrate.band import coverage
from shivam.calibrate.evaluate import cross_validate, leave_one_group_out, predictions
from shivam.calibrate.points import Point, point_cost
from shivam.calibrate.workflow import cross_validated_band
from shivam.specs import load_gpu, make_params
from shivam.validate.calibration import PRIORS, calibration_points

GPU = load_gpu("h200")
BASE = make_params(GPU, "graph")
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
    assert band.basis.startswith("cross-validation over 15 points (each model left out, mistral-7b one point")


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


def test_widened_band_is_the_union_of_the_two_intervals():
    from shivam.calibrate.band import widened
    from shivam.specs import Band

    band = Band(energy=(0.98, 1.02), time=(0.90, 1.05), points=14, basis="cv")
    floor = Band(energy=(0.96, 1.09), time=(0.96, 1.04), points=486, basis="dev")
    w = widened(band, floor)
    assert w.energy == (0.96, 1.09) and w.time == (0.90, 1.05) and w.points == 14 and "dev" in w.basis
    assert widened(band, None) is band


def test_the_graph_engines_band_floor_is_what_the_development_data_gives():
    """The floor stored in hardware/engines/graph.json is recomputed from the committed development data."""
    import importlib.util
    from pathlib import Path

    from shivam.specs import load_engine

    path = Path(__file__).resolve().parent.parent / "validation/band_coverage.py"
    spec = importlib.util.spec_from_file_location("band_coverage", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    stored, recomputed = load_engine("graph").calibration_band_floor, mod.floor()
    assert stored.points == recomputed.points == 531
    assert np.allclose(stored.energy, recomputed.energy) and np.allclose(stored.time, recomputed.time)
