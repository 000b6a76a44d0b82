"""shivam's public Python API: what the command line calls, with the same checks and the same one-line errors.

    import shivam
    r = shivam.predict(model="mistral-7b", gpu="l4", k=range(0, 9), alpha=0.8)
    r.best_k()            # the k of least energy per token (near-ties to the smaller)
    r.rows                # the rows `shivam predict --format json` prints
    r.to_pandas()         # a DataFrame (pandas is imported only here)

Every argument is checked before anything is costed (shivam.api.checks); a bad one raises ShivamError whose message
names the argument (by its command-line option) and the fix. docs/api.md documents each function with runnable
examples.
"""

from shivam.api.checks import (
    DEFAULT_ALPHAS,
    DEFAULT_DRAFT,
    DEFAULT_ENGINE,
    K_MAX,
    MAX_BATCH,
    MAX_BATCHES,
    MAX_GRID_ROWS,
    MAX_TOKENS,
    MAX_TP,
    build_scenario,
    check_fits,
)
from shivam.api.prediction import Prediction, crossover, flat_rows, predict
from shivam.api.tools import inspect, overview, stage1

__all__ = [
    "DEFAULT_ALPHAS",
    "DEFAULT_DRAFT",
    "DEFAULT_ENGINE",
    "K_MAX",
    "MAX_BATCH",
    "MAX_BATCHES",
    "MAX_TP",
    "MAX_GRID_ROWS",
    "MAX_TOKENS",
    "Prediction",
    "build_scenario",
    "check_fits",
    "crossover",
    "flat_rows",
    "inspect",
    "overview",
    "predict",
    "stage1",
]
