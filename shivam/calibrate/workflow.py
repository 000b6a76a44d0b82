"""What `shivam fit` and `shivam check` do, as library calls: read results, apply a recipe, fit or evaluate, and say
how far the predictions can be trusted (a 90 % band, shivam.calibrate.band)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from shivam.calibrate.band import band_of_rows, coverage
from shivam.calibrate.evaluate import best_k_check, card_factors_for, cross_validate, error_stats, predictions
from shivam.calibrate.fit import ENERGY_PARAMS, TIME_BOUNDS, TIME_PARAMS, FitResult, base_params, calibration_file, fit
from shivam.calibrate.results import Measured, load_results
from shivam.calibrate.serving import serving_check
from shivam.errors import ShivamError
from shivam.specs import (
    Band,
    Calibration,
    Recipe,
    bundled_calibration,
    find_calibration,
    load_engine,
    load_gpu,
    recipe_for,
    resolve_params,
)

# what a held energy coefficient may be: non-negative, and below anything a GPU draws
ENERGY_BOUNDS = {
    "static_power_w": (0.0, 10_000.0),
    "active_power_w": (0.0, 10_000.0),
    "block_power_w": (0.0, 100.0),
    "dram_j_per_byte": (0.0, 1e-8),
    "kv_j_per_byte": (0.0, 1e-8),
    "l2_j_per_byte": (0.0, 1e-8),
    "compute_scale": (0.0, 100.0),
    "pcie_j_per_byte": (0.0, 1e-8),
}


def check_fix(fix: dict[str, float]) -> dict[str, float]:
    """Held parameters must be ones the fit knows, within the range the fit itself would search."""
    bounds = {**TIME_BOUNDS, **ENERGY_BOUNDS}
    for name, value in fix.items():
        if name not in bounds:
            raise ShivamError(f"--fix {name}: unknown parameter; choose from {', '.join(TIME_PARAMS + ENERGY_PARAMS)}")
        lo, hi = bounds[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ShivamError(f"--fix {name}={value!r}: give a finite number")
        if not lo <= value <= hi or (name in TIME_BOUNDS and value == 0 and lo > 0):
            raise ShivamError(f"--fix {name}={value!r} is out of range: it must be between {lo:g} and {hi:g}")
    return {n: float(v) for n, v in fix.items()}


def results_of_one_gpu(paths: list[str], engine: str, gpu: str | None) -> tuple[list[Measured], str]:
    data, found = load_results(paths, engine)
    if gpu is not None and found is not None and load_gpu(gpu).id != found:
        raise ShivamError(f"--gpu {gpu}: the results were measured on {found}; drop --gpu or give results of {gpu}")
    gpu = gpu or found
    if gpu is None:
        raise ShivamError("the results name no GPU shivam knows; pass --gpu")
    return data, gpu


def cross_validated_band(data: list[Measured], base, fix: dict, card_factors: bool, progress=None, basis: str = ""):
    """Cross-validation rows (shivam.calibrate.evaluate.cross_validate) and the 90 % bands they give: for a card
    other than those measured (card factors taken out) and for the measured cards (card factors kept). None where
    fewer than three models were measured."""
    models = [m for m in data if m.group != "stage1"]
    if len({m.group for m in models}) <= 2:
        return [], None, None
    cv = cross_validate(models, base, fix, card_factors, progress)
    how = cross_validation_basis(cv)
    any_card = band_of_rows(cv, f"{how}: {basis}, any card", False)
    this_card = band_of_rows(cv, f"{how}: {basis}, the measured cards", True)
    return cv, any_card, this_card


def cross_validation_basis(cv: list[dict]) -> str:
    """How the cross-validation rows were held out, in words."""
    by_point = sorted({r["fold"] for r in cv if r["left_out"] == "point"})
    if not by_point:
        return f"leave-one-model-out over {len(cv)} points"
    return f"cross-validation over {len(cv)} points (each model left out, {', '.join(by_point)} one point at a time)"


@dataclass
class FitOutcome:
    result: FitResult
    calibration: Calibration
    points: int
    energy_errors: dict
    time_errors: dict
    fixed: dict


def fit_results(
    paths: list[str],
    engine: str = "graph",
    gpu: str | None = None,
    fix: dict | None = None,
    card_factors: bool | None = None,
    recipe: Recipe | None = None,
    band: bool = True,
    strict: bool | str = True,
) -> FitOutcome:
    """Fit a calibration to results files. A recipe supplies the engine, the held parameters and the card factors;
    explicit arguments add to or override it. band: also cross-validate, for the calibration's 90 % band. strict:
    as for shivam.calibrate.fit.fit ("hold": hold what the data cannot identify at its prior, and name it)."""
    if recipe is not None:
        engine = recipe.engine
        fix = {**recipe.fix, **(fix or {})}
        card_factors = recipe.card_factors if card_factors is None else card_factors
    fix = check_fix(fix or {})
    engine = load_engine(engine).engine
    data, gpu = results_of_one_gpu(paths, engine, gpu)
    result = fit(data, base_params(gpu, engine), fix, strict=strict, card_factors=bool(card_factors))
    note = (
        f"shivam fit {' '.join(paths)} --recipe {recipe.name}"
        if recipe
        else f"shivam fit {' '.join(paths)} --engine {engine} "
        f"{' '.join(f'--fix {n}={v:g}' for n, v in fix.items())}{' --card-factors' * bool(card_factors)}"
    ).strip()
    used = {m.source for m in data}  # the files that gave this engine's points: the calibration's provenance
    cal = calibration_file(result, load_gpu(gpu).id, engine, [str(p) for p in paths if str(p) in used], note=note)
    if recipe is not None:
        cal.recipe = recipe.name
    if band:
        # the folds hold what the whole fit held, so that the band is the band of this calibration's model
        _, any_card, _ = cross_validated_band(
            data, base_params(gpu, engine), {**fix, **result.held}, bool(card_factors), basis=f"{gpu}/{engine} fit"
        )
        cal.band = any_card
    rows = predictions(data, result.params, result.card_factors)
    return FitOutcome(
        result,
        cal,
        len(data),
        error_stats([r["energy_err"] for r in rows]),
        error_stats([r["time_err"] for r in rows]),
        fix,
    )


def datasheet_band(rows: list[dict]) -> tuple[Band, dict]:
    """The band of datasheet-only predictions (nothing fitted) and its coverage of each model's points when the
    band comes from the other models' points alone."""
    models = [r for r in rows if r["group"] != "stage1"]  # a band for predictions of models, not of stage I
    if len({r["group"] for r in models}) < 2:
        raise ShivamError("a datasheet band needs measured points of at least two models; give results with more")
    band = band_of_rows(models, f"datasheet-only predictions against {len(models)} measured points")
    groups = sorted({r["group"] for r in rows if r["group"] != "stage1"})
    inside = {"energy": 0.0, "time": 0.0}
    n = 0
    for g in groups:
        test = [r for r in rows if r["group"] == g]
        others = band_of_rows([r for r in models if r["group"] != g], "")
        for key, value in coverage(test, others).items():
            inside[key] += value * len(test)
        n += len(test)
    return band, {key: v / n for key, v in inside.items()} if n else {}


def check_results(
    paths: list[str],
    engine: str = "graph",
    gpu: str | None = None,
    calibration: str | bool | None = None,
    fix: dict | None = None,
    card_factors: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Predicted against measured for every point with a calibration (default: the bundled one of the GPU and engine;
    False: datasheet figures alone), error statistics, leave-one-model-out cross-validation, the best-k check and
    the 90 % band. Where the calibration is the bundled one and it has a recipe, the recipe's held parameters and
    card factors apply unless given here."""
    engine = load_engine(engine).engine
    data, gpu = results_of_one_gpu(paths, engine, gpu)
    datasheet = calibration is False
    if calibration is None:  # what predict would use: this card's installed calibration, else the bundled one
        found = find_calibration(load_gpu(gpu).id, engine)
        calibration = str(found) if found else None
    # a recipe belongs to the bundled calibration it refits, and applies to it alone
    bundled = bundled_calibration(load_gpu(gpu).id, engine)
    is_bundled = (
        isinstance(calibration, str) and bundled is not None and Path(calibration).resolve() == bundled.resolve()
    )
    recipe = recipe_for(load_gpu(gpu).id, engine) if is_bundled else None
    fix = check_fix({**(recipe.fix if recipe else {}), **(fix or {})})
    if card_factors is None:
        card_factors = recipe.card_factors if recipe else False
    params = resolve_params(load_gpu(gpu), engine, None if datasheet else calibration, use_bundled=not datasheet)
    factors = card_factors_for(data, params) if card_factors and not datasheet else None  # one energy scale per card
    rows = predictions(data, params, factors)
    stats = {key: error_stats([r[f"{key}_err"] for r in rows]) for key in ("time", "energy")}
    out = {
        "gpu": gpu,
        "engine": engine,
        "parameters": params.source,
        "recipe": recipe.name if recipe else None,
        "fixed": fix,
        "card_factors_fitted": bool(factors),
        "card_factors": factors or {},
        "cards": {c: sum(m.card == c for m in data) for c in (factors or {})},
        "points": rows,
        "errors": stats,
        "best_k": best_k_check(rows),
        "speculation": serving_check(rows),
    }
    if datasheet:
        band, cov = datasheet_band(rows)
        out.update(cross_validation={"errors": {}, "points": []}, band=band.model_dump(), band_coverage=cov)
        return out
    cv, any_card, this_card = cross_validated_band(
        data, base_params(gpu, engine), fix, bool(card_factors), progress, basis=f"{gpu}/{engine}"
    )
    out["cross_validation"] = {
        "errors": {key: error_stats([r[f"{key}_err"] for r in cv]) for key in ("time", "energy")} if cv else {},
        "points": cv,
        "best_k": best_k_check(cv),
        "speculation": serving_check(cv),
    }
    if any_card is not None:
        out.update(band=any_card.model_dump(), band_this_card=this_card.model_dump())
    return out
