"""`predict`: time and energy per token versus k and acceptance, as a typed Prediction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from shivam.api.checks import (
    DEFAULT_ALPHAS,
    MAX_GRID_ROWS,
    CalibrationArg,
    build_scenario,
    check_acceptance,
    check_alphas,
    check_float,
    check_ks,
)
from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario, prediction
from shivam.specs import GPU, ModelSpec, Params

# --- predict -------------------------------------------------------------------------------------------------------
ROW_CONTEXT_KEYS = (
    "model",
    "draft",
    "gpu",
    "engine",
    "batch",
    "prompt",
    "gen",
    "tp",
    "draft_tp",
    "weights_dtype",
    "act_dtype",
    "kv_dtype",
)


@dataclass(frozen=True)
class Prediction:
    """What `predict` returns: metadata, one row per (acceptance, k), the best k per acceptance."""

    meta: dict
    rows: list[dict]
    best: dict
    contexts_averaged: list[float]
    required_alpha: dict | None = None
    scenario: Scenario | None = field(default=None, repr=False, compare=False)

    @property
    def warnings(self) -> list[str]:
        return self.meta["warnings"]

    def best_k(self, objective: Literal["energy", "latency"] = "energy", alpha: float | None = None) -> int:
        """The k of least energy (or time) per token, at `alpha` (needed when the prediction holds several)."""
        if objective not in ("energy", "latency"):
            raise ShivamError(f"objective {objective!r}: use 'energy' or 'latency'")
        labels = list(self.best)
        if alpha is None:
            if len(labels) > 1:
                raise ShivamError(
                    f"the prediction holds {len(labels)} acceptance rates ({', '.join(labels)}); "
                    f"pass alpha= one of them"
                )
            label = labels[0]
        else:
            label = next((lab for lab in labels if lab == f"{alpha:g}"), None)
            if label is None:
                raise ShivamError(f"alpha {alpha:g} is not in the prediction; choose from {', '.join(labels)}")
        return self.best[label][f"best_k_{objective}"]

    def to_dict(self) -> dict:
        """The document `shivam predict --format json` prints."""
        out = {**self.meta, "rows": self.rows, "best": self.best, "contexts_averaged": self.contexts_averaged}
        if self.required_alpha is not None:
            out["required_alpha"] = self.required_alpha
        return out

    def to_pandas(self):
        """The rows as a pandas DataFrame, the energy breakdown as columns energy_<term>_j."""
        try:
            import pandas as pd
        except ImportError:
            raise ShivamError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(flat_rows(self.rows))


def flat_rows(rows: list[dict]) -> list[dict]:
    """Rows with the breakdown spread into energy_<term>_j columns and a per-position acceptance as text (CSV)."""
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if k != "breakdown_j"}
        flat.update({f"energy_{k}_j": v for k, v in r["breakdown_j"].items()})
        if isinstance(flat["alpha"], list):
            flat["alpha"] = ",".join(f"{a:g}" for a in flat["alpha"])
        out.append(flat)
    return out


def predict(
    model: str | ModelSpec,
    gpu: str | GPU,
    k: int | Iterable[int] = range(1, 9),
    alpha: float | Iterable[float] | None = None,
    draft: str | ModelSpec | None = None,
    batch: int = 1,
    prompt: int = 128,
    gen: int = 128,
    engine: str | None = None,
    calibration: CalibrationArg = None,
    weights_dtype: str | None = None,
    act_dtype: str | None = None,
    kv_dtype: str | None = None,
    acceptance: Iterable[float] | None = None,
    target_ratio: float | None = None,
    tp: int = 1,
    draft_tp: int = 1,
) -> Prediction:
    """Time and energy per generated token versus speculation window k and acceptance.

    k: windows (k=0, standard decoding, is always added). alpha: i.i.d. acceptance rates (default 0.6-0.9), or
    acceptance: one per-position vector a_1..a_k instead (not both). draft: the draft model for k > 0 (default
    opt-125m, the paper's). calibration: a file from `shivam fit`, None for the bundled one of this GPU and engine,
    False for datasheet estimates. target_ratio: also report the alpha each k needs for this energy reduction.
    tp: GPUs the target is split over (tensor parallelism, 1-8); draft_tp: of those, the GPUs the draft is split over
    (default 1: the draft on one GPU while the others wait)."""
    ks = sorted({0, *check_ks(k)})
    if acceptance is not None and alpha is not None:
        raise ShivamError(
            "--alpha and --acceptance are exclusive: give i.i.d. rates (--alpha) or one per-position "
            "vector (--acceptance), not both"
        )
    positional = check_acceptance(acceptance, max(ks)) if acceptance is not None else None
    alphas = None if positional is not None else check_alphas(DEFAULT_ALPHAS if alpha is None else alpha)
    rows_total = len(ks) * (1 if positional is not None else len(alphas))
    if rows_total > MAX_GRID_ROWS:
        raise ShivamError(
            f"--k x --alpha make {rows_total:,} rows, above the limit of {MAX_GRID_ROWS:,}; "
            f"give fewer values or a coarser step"
        )
    ratio = None if target_ratio is None else check_float(target_ratio, "--target-ratio", 1e-6, 1e6)
    if ratio is not None and max(ks) == 0:
        raise ShivamError("--target-ratio asks which alpha each k > 0 needs: give --k with some k above 0")
    scn, meta = build_scenario(
        model,
        gpu,
        draft=draft,
        k_max=max(ks),
        batch=batch,
        prompt=prompt,
        gen=gen,
        engine=engine,
        calibration=calibration,
        weights_dtype=weights_dtype,
        act_dtype=act_dtype,
        kv_dtype=kv_dtype,
        tp=tp,
        draft_tp=draft_tp,
    )
    res = prediction(scn, ks, alphas, positional, ratio)
    context = {key: meta[key] for key in ROW_CONTEXT_KEYS}
    p = scn.params
    rows = [
        {**context, **row, "alpha": positional if positional is not None else row["alpha"], **_band(row, p)}
        for row in res["rows"]
    ]
    meta["band"] = {"energy": list(p.energy_band), "time": list(p.time_band), "basis": p.band_basis}
    return Prediction(meta, rows, res["best"], res["contexts_averaged"], res.get("required_alpha"), scn)


def _band(row: dict, p: Params) -> dict:
    """The 90 % band of a row's energy and time per token: the prediction times the band of its parameters' source
    (a calibration's cross-validation, or the engine's datasheet-only band)."""
    (e_lo, e_hi), (t_lo, t_hi) = p.energy_band, p.time_band
    e, t = row["energy_per_token_j"], row["time_per_token_s"]
    return {
        "energy_per_token_j_low": e * e_lo,
        "energy_per_token_j_high": e * e_hi,
        "time_per_token_s_low": t * t_lo,
        "time_per_token_s_high": t * t_hi,
    }
