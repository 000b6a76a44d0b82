"""Calibrations (what `shivam fit` writes) and their recipes (how to refit them).

A calibration hardware/calibrated/<gpu>-<engine>.json holds fitted parameter values; the recipe beside it,
<gpu>-<engine>.recipe.json, holds what the fit was told: the results it reads, the parameters it holds fixed and
whether each card gets its own energy scale. `shivam fit RESULTS -o FILE --recipe NAME` and `shivam check RESULTS`
read the recipe, so the committed figures reproduce without hand-typed flags.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shivam.bundled import data_dir
from shivam.errors import ShivamError, suggest
from shivam.userfiles import read_json, validation_message

_FIX = "give a file written by `shivam fit`"


class Band(BaseModel):
    """How far measurements fell from predictions: the 5th and 95th percentiles of measured / predicted, so that
    [prediction x low, prediction x high] is a 90 % band."""

    model_config = ConfigDict(extra="forbid")
    energy: tuple[float, float]
    time: tuple[float, float]
    points: int = Field(ge=0, description="held-out measured points the percentiles come from")
    basis: str


class Card(BaseModel):
    """The physical card a calibration was measured on (NVML), and the settings energy depends on."""

    uuid: str
    name: str
    power_limit_w: float | None = None
    max_sm_clock_mhz: float | None = None
    driver: str | None = None


class Calibration(BaseModel):
    """Fitted values that replace the defaults of the named parameters."""

    gpu: str
    engine: str
    parameters: dict[str, float | dict[str, float]]
    uncertainty: dict[str, float | dict[str, float]] = {}
    fitted_from: list[str] = []
    card_factors: dict[str, Annotated[float, Field(gt=0, le=100)]] = {}  # each card's energy scale (fit)
    recipe: str | None = None
    band: Band | None = Field(default=None, description="90 % band of predictions with this calibration")
    card: Card | None = Field(default=None, description="set when the calibration is of one card (shivam calibrate)")
    created: str | None = None
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


def user_calibrations_dir() -> Path:
    """Where `shivam calibrate` installs calibrations: the user's data directory (platformdirs), or
    $SHIVAM_DATA_DIR/calibrations."""
    root = os.environ.get("SHIVAM_DATA_DIR")
    if not root:
        from platformdirs import user_data_dir

        root = user_data_dir("shivam", appauthor=False)
    return Path(root) / "calibrations"


def user_calibrations(gpu_id: str | None = None, engine: str | None = None) -> list[tuple[Path, Calibration]]:
    """Installed calibrations (newest first), of one GPU and engine where given. Unreadable files are skipped: they
    are the user's, and `shivam calibrations` names them."""
    folder = user_calibrations_dir()
    out = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            cal = load_calibration(path)
        except ShivamError:
            continue
        if (gpu_id is None or cal.gpu == gpu_id) and (engine is None or cal.engine == engine):
            out.append((path, cal))
    return sorted(out, key=lambda pc: pc[1].created or "", reverse=True)


def local_card_uuids() -> set[str]:
    """UUIDs of the NVIDIA cards on this machine, through NVML where it is installed and a driver answers; else
    none. NVML needs no CUDA context and no torch."""
    try:
        import pynvml as nv
    except ImportError:
        return set()
    try:
        nv.nvmlInit()
        try:
            return {str(nv.nvmlDeviceGetUUID(nv.nvmlDeviceGetHandleByIndex(i))) for i in range(nv.nvmlDeviceGetCount())}
        finally:
            nv.nvmlShutdown()
    except nv.NVMLError:
        return set()


def find_calibration(gpu_id: str, engine: str) -> Path | None:
    """The calibration `predict` uses by default: an installed one of this card (when this machine has it), else the
    newest installed one of this GPU model, else the bundled one, else none."""
    return _installed(gpu_id, engine) or bundled_calibration(gpu_id, engine)


def _installed(gpu_id: str, engine: str | None) -> Path | None:
    """The installed calibration of this card (when this machine has it), else the newest of this GPU model."""
    installed = user_calibrations(gpu_id, engine)
    if not installed:
        return None
    here = local_card_uuids() if any(cal.card for _, cal in installed) else set()
    mine = [path for path, cal in installed if cal.card and cal.card.uuid in here]
    return mine[0] if mine else installed[0][0]


# the engine costed where none is named, among those a GPU is calibrated for: the serving-speed reference engine
# first; a GPU known only by its datasheet gets DATASHEET_ENGINE, whose datasheet-only band the most points measured
PREFERRED_ENGINES = ("ref", "graph")
DATASHEET_ENGINE = "graph"


def default_engine(gpu_id: str, calibration: str | Path | bool | None = None) -> str:
    """The engine `predict` costs without --engine: the given calibration file's; else that of the calibration
    installed for this card (or, failing that, the newest installed one of this GPU model), whichever engine it
    measured; else the first of PREFERRED_ENGINES with a bundled calibration of this GPU; else DATASHEET_ENGINE
    (also with calibration=False, datasheet figures wanted)."""
    if isinstance(calibration, (str, Path)):
        return load_calibration(calibration).engine
    if calibration is False:
        return DATASHEET_ENGINE
    installed = _installed(gpu_id, None)
    if installed is not None:
        return load_calibration(installed).engine
    return next((e for e in PREFERRED_ENGINES if bundled_calibration(gpu_id, e)), DATASHEET_ENGINE)


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
