"""What the simulator is told: schemas and loaders for models, GPUs, engine profiles, calibrations and number formats.

Nothing here computes a cost; every layer above reads these typed objects.
"""

from shivam.specs.calibration import (
    Band,
    Calibration,
    Recipe,
    bundled_calibration,
    default_engine,
    find_calibration,
    load_calibration,
    load_recipe,
    recipe_for,
    recipe_names,
)
from shivam.specs.dtypes import Dtypes, nbytes, normalize
from shivam.specs.engine import EngineProfile, Kernels, engine_ids, load_engine
from shivam.specs.gpu import GPU, differs_from_bundled, gpu_id_for, gpu_ids, load_gpu
from shivam.specs.model import ModelSpec, bundled_index, load_model
from shivam.specs.params import Params, make_params, resolve_params

__all__ = [
    "Band",
    "default_engine",
    "find_calibration",
    "GPU",
    "Calibration",
    "Dtypes",
    "EngineProfile",
    "Kernels",
    "ModelSpec",
    "Params",
    "Recipe",
    "bundled_calibration",
    "bundled_index",
    "engine_ids",
    "gpu_id_for",
    "differs_from_bundled",
    "gpu_ids",
    "load_calibration",
    "load_engine",
    "load_gpu",
    "load_model",
    "load_recipe",
    "make_params",
    "nbytes",
    "normalize",
    "recipe_for",
    "recipe_names",
    "resolve_params",
]
