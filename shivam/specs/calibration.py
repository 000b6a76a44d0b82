"""Calibrations (what `shivam fit` writes) and their recipes (how to refit them).

A calibration hardware/calibrated/<gpu>-<engine>.json holds fitted parameter values; the recipe beside it,
<gpu>-<engine>.recipe.json, holds what the fit was told: the results it reads, the parameters it holds fixed and
whether each card gets its own energy scale. `shivam fit RESULTS -o FILE --recipe NAME` and `shivam check RESULTS`
read the recipe, so the committed figures reproduce without hand-typed flags.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shivam.errors import ShivamError, suggest
from shivam.userfiles import read_json, validation_message
from shivam.bundled import data_dir

_FIX = "give a file written by `shivam fit`"


class Calibration(BaseModel):
    """Fitted values that replace the defaults of the named parameters."""

    gpu: str
    engine: str
    parameters: dict[str, float | dict[str, float]]
    uncertainty: dict[str, float | dict[str, float]] = {}
    fitted_from: list[str] = []
    card_factors: dict[str, float] = {}  # energy scale of each GPU card in the data (fit with card factors)
    recipe: str | None = None
    note: str = ""


class Recipe(BaseModel):
    """How a calibration is fitted: what `shivam fit --recipe` and `shivam check` apply."""

    model_config = ConfigDict(extra="forbid")
    name: str
    gpu: str
    engine: str
    results: list[str] = Field(min_length=1, description="results files (globs, relative to the repository root)")
    fix: dict[str, float] = Field(default={}, description="parameters held at these values, with the reason in basis")
    card_factors: bool = Field(default=False, description="one energy scale per GPU card")
    basis: str = Field(description="why each parameter is held where it is")


def _calibrated_dir() -> Path:
    return data_dir("hardware") / "calibrated"


def bundled_calibration(gpu_id: str, engine: str) -> Path | None:
    path = _calibrated_dir() / f"{gpu_id}-{engine}.json"
    return path if path.is_file() else None


def load_calibration(path: str | Path) -> Calibration:
    raw = read_json(path, "calibration file", _FIX)
    try:
        return Calibration.model_validate(raw)
    except ValidationError as exc:
        raise ShivamError(validation_message(exc, str(path), fix=_FIX)) from None


def recipe_names() -> tuple[str, ...]:
    return tuple(sorted(p.name[: -len(".recipe.json")] for p in _calibrated_dir().glob("*.recipe.json")))


def load_recipe(ref: str) -> Recipe:
    """A bundled recipe by name (h200-graph) or a recipe file."""
    if ref.endswith(".json") or "/" in ref:
        path = Path(ref)
    else:
        if ref not in recipe_names():
            raise ShivamError(
                f"unknown recipe {ref[:80]!r}{suggest(ref, recipe_names())}: use one of "
                f"{', '.join(recipe_names())}, or a path to a recipe file"
            )
        path = _calibrated_dir() / f"{ref}.recipe.json"
    fix = "give a recipe name (hardware/calibrated/*.recipe.json) or a recipe file"
    try:
        return Recipe.model_validate(read_json(path, "recipe file", fix))
    except ValidationError as exc:
        raise ShivamError(validation_message(exc, str(path), fix=fix)) from None


def recipe_for(gpu_id: str, engine: str) -> Recipe | None:
    """The recipe of the bundled calibration of this GPU and engine, if it has one."""
    name = f"{gpu_id}-{engine}"
    return load_recipe(name) if name in recipe_names() else None
