"""Calibration and checking: fit the simulator's free parameters to measured points, and check predictions against
them. No torch here, and nothing from shivam.validate: the results-file format (shivam.calibrate.results) is all
this layer shares with the validator.

`fit_results` and `check_results` are what `shivam fit` and `shivam check` call; a calibration's recipe
(shivam.specs.calibration.Recipe) supplies the held parameters and card factors neither command needs typed.
"""

from __future__ import annotations

from shivam.calibrate.evaluate import best_k_check, card_factors_for, error_stats, leave_one_group_out, predictions
from shivam.calibrate.fit import ENERGY_PARAMS, TIME_PARAMS, FitResult, base_params, calibration_file, fit
from shivam.calibrate.points import Point, point_cost, predict_point
from shivam.calibrate.results import Measured, ResultsFile, load_records, load_results, read_records
from shivam.calibrate.workflow import FitOutcome, check_fix, check_results, datasheet_band, fit_results
from shivam.specs import Calibration, Recipe

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
    "datasheet_band",
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
