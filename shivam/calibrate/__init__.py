"""Calibration and checking: fit the simulator's free parameters to measured points, and check predictions against
them. No torch here, and nothing from shivam.validate: the results-file format (shivam.calibrate.results) is all
this layer shares with the validator.

`fit_results` and `check_results` are what `shivam fit` and `shivam check` call; a calibration's recipe
(shivam.specs.calibration.Recipe) supplies the held parameters and card factors neither command needs typed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from shivam.calibrate.evaluate import best_k_check, card_factors_for, error_stats, leave_one_group_out, predictions
from shivam.calibrate.fit import ENERGY_PARAMS, TIME_PARAMS, FitResult, base_params, calibration_file, fit
from shivam.calibrate.points import Point, point_cost, predict_point
from shivam.calibrate.results import Measured, ResultsFile, load_records, load_results, read_records
from shivam.errors import ShivamError
from shivam.specs import Calibration, Recipe, load_engine, load_gpu, recipe_for, resolve_params

__all__ = [
    "ENERGY_PARAMS",
    "TIME_PARAMS",
    "Calibration",
    "FitResult",
    "Measured",
    "Point",
    "Recipe",
    "ResultsFile",
    "FitOutcome",
    "base_params",
    "best_k_check",
    "calibration_file",
    "card_factors_for",
    "check_fix",
    "check_results",
    "error_stats",
    "fit",
    "fit_results",
    "leave_one_group_out",
    "load_records",
    "load_results",
    "point_cost",
    "predict_point",
    "predictions",
    "read_records",
]


def check_fix(fix: dict[str, float]) -> dict[str, float]:
    """Held parameters must be ones the fit knows, at finite values."""
    known = TIME_PARAMS + ENERGY_PARAMS
    for name, value in fix.items():
        if name not in known:
            raise ShivamError(f"--fix {name}: unknown parameter; choose from {', '.join(known)}")
        if not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
            raise ShivamError(f"--fix {name}={value!r}: give a finite number")
    return {n: float(v) for n, v in fix.items()}


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
) -> FitOutcome:
    """Fit a calibration to results files. A recipe supplies the engine, the held parameters and the card factors;
    explicit arguments add to or override it."""
    if recipe is not None:
        engine = recipe.engine
        fix = {**recipe.fix, **(fix or {})}
        card_factors = recipe.card_factors if card_factors is None else card_factors
    fix = check_fix(fix or {})
    engine = load_engine(engine).engine
    data, found_gpu = load_results(paths, engine)
    gpu = gpu or found_gpu
    result = fit(data, base_params(gpu, engine), fix, strict=True, card_factors=bool(card_factors))
    note = (
        f"shivam fit {' '.join(paths)} --recipe {recipe.name}"
        if recipe
        else f"shivam fit {' '.join(paths)} --engine {engine} "
        f"{' '.join(f'--fix {n}={v:g}' for n, v in fix.items())}{' --card-factors' * bool(card_factors)}"
    ).strip()
    cal = calibration_file(result, gpu, engine, [str(p) for p in paths], note=note)
    if recipe is not None:
        cal.recipe = recipe.name
    rows = predictions(data, result.params, result.card_factors)
    return FitOutcome(
        result,
        cal,
        len(data),
        error_stats([r["energy_err"] for r in rows]),
        error_stats([r["time_err"] for r in rows]),
        fix,
    )


def check_results(
    paths: list[str],
    engine: str = "graph",
    gpu: str | None = None,
    calibration: str | None = None,
    fix: dict | None = None,
    card_factors: bool | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict:
    """Predicted against measured for every point with a calibration (default: the bundled one of the GPU and engine),
    error statistics, leave-one-model-out cross-validation and the best-k check. Where the calibration is the
    bundled one and it has a recipe, the recipe's held parameters and card factors apply unless given here."""
    engine = load_engine(engine).engine
    data, found_gpu = load_results(paths, engine)
    gpu = gpu or found_gpu
    if gpu is None:
        raise ShivamError("the results name no GPU shivam knows; pass --gpu")
    recipe = recipe_for(load_gpu(gpu).id, engine) if calibration is None else None
    fix = check_fix({**(recipe.fix if recipe else {}), **(fix or {})})
    if card_factors is None:
        card_factors = recipe.card_factors if recipe else False
    params = resolve_params(load_gpu(gpu), engine, calibration)
    factors = card_factors_for(data, params) if card_factors else None  # one energy scale per card
    rows = predictions(data, params, factors)
    stats = {key: error_stats([r[f"{key}_err"] for r in rows]) for key in ("time", "energy")}
    models = [m for m in data if m.group != "stage1"]
    cv = (
        leave_one_group_out(models, base_params(gpu, engine), fix, card_factors, progress)
        if len({m.group for m in models}) > 2
        else []
    )
    cv_stats = {key: error_stats([r[f"{key}_err"] for r in cv]) for key in ("time", "energy")} if cv else {}
    return {
        "gpu": gpu,
        "engine": engine,
        "parameters": params.source,
        "recipe": recipe.name if recipe else None,
        "fixed": fix,
        "card_factors_fitted": bool(card_factors),
        "card_factors": factors or {},
        "cards": {c: sum(m.card == c for m in data) for c in (factors or {})},
        "points": rows,
        "errors": stats,
        "cross_validation": {"errors": cv_stats, "points": cv},
        "best_k": best_k_check(rows),
    }
