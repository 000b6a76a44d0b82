"""`predict`: time and energy per token versus k and acceptance, as a typed Prediction."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from shivam.api.checks import (
    DEFAULT_ALPHAS,
    K_MAX,
    MAX_GRID_ROWS,
    CalibrationArg,
    build_scenario,
    check_acceptance,
    check_alphas,
    check_batches,
    check_float,
    check_ks,
)
from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario, predictions
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
    "sampling",
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
    # with several batch sizes: the best k per batch, and the crossover batches per acceptance and k
    best_by_batch: dict | None = None
    crossover: dict | None = None

    @property
    def warnings(self) -> list[str]:
        return self.meta["warnings"]

    def best_k(
        self, objective: Literal["energy", "latency"] = "energy", alpha: float | None = None, batch: int | None = None
    ) -> int:
        """The k of least energy (or time) per token, near-ties (within 0.5 %) going to the smaller k
        (shivam.sim.speculative.best_window), at `alpha` (needed when the prediction holds several) and `batch`
        (needed when it holds several)."""
        if objective not in ("energy", "latency"):
            raise ShivamError(f"objective {objective!r}: use 'energy' or 'latency'")
        best = self.best
        if self.best_by_batch is not None:
            if batch is None or str(batch) not in self.best_by_batch:
                raise ShivamError(
                    f"the prediction holds {len(self.best_by_batch)} batch sizes; pass batch= one of "
                    f"{', '.join(self.best_by_batch)}"
                )
            best = self.best_by_batch[str(batch)]
        labels = list(best)
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
        return best[label][f"best_k_{objective}"]

    def crossover_batch(
        self, alpha: float | None = None, k: int | None = None, objective: Literal["energy", "latency"] = "energy"
    ) -> int | None:
        """The smallest batch of the prediction's batch sizes at which speculation at window k costs more energy per
        token than standard decoding (objective 'energy') or stops being faster ('latency'); None if it never does
        there."""
        if self.crossover is None:
            raise ShivamError("the crossover needs several batch sizes: pass batch= a range, e.g. range(1, 257)")
        if objective not in ("energy", "latency"):
            raise ShivamError(f"objective {objective!r}: use 'energy' or 'latency'")
        labels = list(self.crossover)
        label = labels[0] if alpha is None and len(labels) == 1 else (None if alpha is None else f"{alpha:g}")
        if label not in self.crossover:
            raise ShivamError(f"pass alpha= one of {', '.join(labels)}")
        by_k = self.crossover[label]
        if k is None and len(by_k) == 1:
            k = int(next(iter(by_k)))
        if str(k) not in by_k:
            raise ShivamError(f"pass k= one of {', '.join(by_k)}")
        return by_k[str(k)][objective]

    def to_dict(self) -> dict:
        """The document `shivam predict --format json` prints."""
        out = {**self.meta, "rows": self.rows, "best": self.best, "contexts_averaged": self.contexts_averaged}
        if self.required_alpha is not None:
            out["required_alpha"] = self.required_alpha
        if self.best_by_batch is not None:
            out["best_by_batch"] = self.best_by_batch
            out["crossover"] = self.crossover
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
    sampling: str = "greedy",
    alpha_concentration: float | None = None,
    prompts: Iterable[int] | None = None,
    power_limit: bool = False,
) -> Prediction:
    """Time and energy per generated token versus speculation window k and acceptance.

    k: windows (k=0, standard decoding, is always added). alpha: i.i.d. acceptance rates (default 0.6-0.9), or
    acceptance: one per-position vector a_1..a_k instead (not both). draft: the draft model for k > 0 (default
    opt-125m, the paper's). calibration: a file from `shivam fit`, None for the bundled one of this GPU and engine,
    False for datasheet estimates. target_ratio: also report the alpha each k needs for this energy reduction.
    tp: GPUs the target is split over (tensor parallelism, 1-8); draft_tp: of those, the GPUs the draft is split over
    (default 1: the draft on one GPU while the others wait). batch: one size or several (then the prediction holds
    the crossover batches). sampling: greedy or rejection (rejection sampling over the vocabulary at every verified
    position). alpha_concentration: each sequence's acceptance rate drawn from a Beta distribution of mean alpha and
    this concentration. prompts: a ragged batch, one prompt length per sequence. power_limit: clock every step down
    to the board's power limit (by default an iteration or a prefill above it is held there, longer at its power)."""
    ks = sorted({0, *check_ks(k)})
    batches = check_batches(batch)
    concentration = (
        None if alpha_concentration is None else check_float(alpha_concentration, "--alpha-concentration", 1e-3, 1e6)
    )
    if concentration is not None and acceptance is not None:
        raise ShivamError(
            "--alpha-concentration spreads i.i.d. rates (--alpha) over the sequences; it does not apply to "
            "--acceptance: give one of them"
        )
    if prompts is not None:
        prompts = list(prompts)
        if len(batches) > 1:
            raise ShivamError("--prompts fixes the batch (one prompt per sequence): give no --batch range with it")
        if batches[0] not in (1, len(prompts)):
            raise ShivamError(f"--prompts gives {len(prompts)} sequences but --batch is {batches[0]}: give one of them")
        batches = [len(prompts)]  # the ragged batch's own size
    if acceptance is not None and alpha is not None:
        raise ShivamError(
            "--alpha and --acceptance are exclusive: give i.i.d. rates (--alpha) or one per-position "
            "vector (--acceptance), not both"
        )
    positional = check_acceptance(acceptance, max(ks)) if acceptance is not None else None
    alphas = None if positional is not None else check_alphas(DEFAULT_ALPHAS if alpha is None else alpha)
    rows_total = len(ks) * (1 if positional is not None else len(alphas)) * len(batches)
    if rows_total > MAX_GRID_ROWS:
        raise ShivamError(
            f"--k x --alpha{' x --batch' if len(batches) > 1 else ''} make {rows_total:,} rows, above the limit of "
            f"{MAX_GRID_ROWS:,}; give fewer values or a coarser step"
        )
    ratio = None if target_ratio is None else check_float(target_ratio, "--target-ratio", 1e-6, 1e6)
    if ratio is not None and max(ks) == 0:
        raise ShivamError("--target-ratio asks which alpha each k > 0 needs: give --k with some k above 0")

    def build(b):
        return build_scenario(
            model,
            gpu,
            draft=draft,
            k_max=max(ks),
            batch=b,
            prompt=prompt,
            gen=gen,
            engine=engine,
            calibration=calibration,
            weights_dtype=weights_dtype,
            act_dtype=act_dtype,
            kv_dtype=kv_dtype,
            tp=tp,
            draft_tp=draft_tp,
            sampling=sampling,
            prompts=prompts,
            power_limit=power_limit,
        )

    try:
        scn, meta = build(batches[-1])  # the largest: what fits at it fits at every smaller batch
    except ShivamError:
        if len(batches) == 1 or not _fits(build, batches[0]):
            raise
        lo, hi = 0, len(batches) - 1  # batches[lo] fits, batches[hi] does not
        while hi - lo > 1:
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if _fits(build, batches[mid]) else (lo, mid)
        dropped = len(batches) - hi
        batches = batches[:hi]
        scn, meta = build(batches[-1])
        meta["warnings"].append(
            f"the scan stops at batch {batches[-1]}: the {dropped} larger batch sizes do not fit in memory"
        )
    meta["alpha_concentration"] = concentration
    p = scn.params
    rows, best_by_batch = [], {}
    results = predictions(scn, batches, ks, alphas, positional, concentration, ratio)
    for b, res in zip(batches, results):
        context = {key: meta[key] for key in ROW_CONTEXT_KEYS} | {"batch": b}
        rows += [
            {
                **context,
                **row,
                "alpha": positional if positional is not None else row["alpha"],
                "alpha_concentration": concentration,
                **_band(row, p),
            }
            for row in res["rows"]
        ]
        best_by_batch[str(b)] = res["best"]
    first = results[0]
    meta["band"] = {"energy": list(p.energy_band), "time": list(p.time_band), "basis": p.band_basis}
    edge = _best_at_the_edge(best_by_batch, ks)
    if edge:
        meta["warnings"].append(
            f"the best k by energy is the largest k scanned ({max(ks)}) at {edge}: a larger window may save more; "
            f"scan further, e.g. --k 1..{min(2 * max(ks), K_MAX)}"
        )
    if len(batches) == 1:
        return Prediction(meta, rows, first["best"], first["contexts_averaged"], first.get("required_alpha"), scn)
    meta["batch"] = batches
    crossover = crossover_batches(rows, batches)
    for row in rows:
        cross = crossover.get(_row_label(row), {}).get(str(row["k"]))  # none at all when every k is 0
        row["crossover_batch_energy"] = cross and cross["energy"]
        row["crossover_batch_latency"] = cross and cross["latency"]
    return Prediction(
        meta,
        rows,
        best_by_batch[str(batches[0])],
        first["contexts_averaged"],
        first.get("required_alpha"),
        scn,
        best_by_batch,
        crossover,
    )


def _best_at_the_edge(best_by_batch: dict, ks) -> str | None:
    """Where a prediction at one batch size scans several k and the best k by energy is the largest of them (below
    the largest allowed, K_MAX), at an acceptance rate below 1 (where every draft is accepted, the largest k always
    wins): those rates, for a warning; None where there are none. A batch scan asks about the crossover, not k."""
    top = max(ks)
    if len(best_by_batch) != 1 or len(set(ks) - {0}) < 2 or top >= K_MAX:
        return None
    (best,) = best_by_batch.values()
    at = [label for label, b in best.items() if b["best_k_energy"] == top and label != "1"]
    return f"alpha {', '.join(at)}" if at else None


def _fits(build, batch: int) -> bool:
    try:
        build(batch)
    except ShivamError:
        return False
    return True


def _row_label(row: dict) -> str:
    a = row["alpha"]
    return "[" + ",".join(f"{x:g}" for x in a) + "]" if isinstance(a, list) else f"{a:g}"


def crossover_batches(rows: list[dict], batches: list[int]) -> dict:
    """Per acceptance label and k > 0: the smallest batch of `batches` at which speculation costs more energy per
    token than standard decoding (energy_ratio below 1) and the smallest at which it is slower (speedup below 1);
    None where it never is among them. Rows are those of predict, one per (batch, acceptance, k)."""
    out: dict = {}
    for row in rows:  # rows come in increasing batch
        if row["k"] == 0:
            continue
        cell = out.setdefault(_row_label(row), {}).setdefault(str(row["k"]), {"energy": None, "latency": None})
        if cell["energy"] is None and row["energy_ratio"] < 1:
            cell["energy"] = row["batch"]
        if cell["latency"] is None and row["speedup"] < 1:
            cell["latency"] = row["batch"]
    return out


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


def crossover(
    model: str | ModelSpec,
    gpu: str | GPU,
    draft: str | ModelSpec | None = None,
    k: int | Iterable[int] = (2, 4, 8),
    alpha: float | Iterable[float] = DEFAULT_ALPHAS,
    batch: Iterable[int] = range(1, 257),
    **scenario,
) -> dict:
    """The crossover table: for each alpha and k, the smallest batch (of `batch`, scanned) at which speculative
    decoding costs more energy per token than standard decoding, and the smallest at which it is slower; None where
    it saves at every batch scanned. Also the energy ratio and speed-up at every batch (`curves`). Other keyword
    arguments are predict's (prompt, gen, engine, calibration, dtypes, tp, sampling, alpha_concentration, ...)."""
    ks = check_ks(k)
    if 0 in ks:
        raise ShivamError("--k 0 is standard decoding, the baseline of the crossover: give windows of 1 or more")
    if scenario.get("prompts") is not None:
        raise ShivamError(
            "--prompts fixes the batch, which the crossover scans: use shivam predict --prompts for a ragged batch"
        )
    res = predict(model, gpu, k=ks, alpha=alpha, draft=draft, batch=list(batch), **scenario)
    if res.crossover is None:
        raise ShivamError("--batch: the crossover scans batch sizes; give at least two, e.g. 1..256")
    curves: dict = {}
    for row in res.rows:
        if row["k"]:
            cell = curves.setdefault(_row_label(row), {}).setdefault(
                str(row["k"]), {"batch": [], "energy_ratio": [], "speedup": []}
            )
            cell["batch"].append(row["batch"])
            cell["energy_ratio"].append(row["energy_ratio"])
            cell["speedup"].append(row["speedup"])
    meta = {key: value for key, value in res.meta.items() if key != "band"}
    return {**meta, "ks": ks, "crossover": res.crossover, "curves": curves}
