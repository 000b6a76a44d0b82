"""Calibration: fit the simulator's free parameters to measured points, and check predictions against them.

Two stages, because the model is built that way (docs/model.md, section 3):
  time   = f(memory_efficiency, compute_efficiency, overlap_exponent, per_kernel_s, per_step_s, per_iteration_s, pcie_Bps,
             attention_cta_Bps):
           nonlinear (an overlap of memory and compute per operator), fitted with scipy.optimize.least_squares on relative error;
  energy = static_power * time + active_power * busy + block_power * floor SM-seconds + e_dram * bytes
           + compute_scale * E_compute + e_pcie * pcie (+ the fallback kernels' measured power, a fixed part):
           linear once the times are fixed, fitted with scipy.optimize.lsq_linear (bounded, relative error).
Uncertainties come from the Jacobian (time) or design matrix (energy) at the solution: s^2 (J^T J)^-1.
A parameter the data cannot identify (singular or with relative uncertainty above 100 %) is refused by name.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shivam.errors import ShivamError
from shivam.hardware import Calibration, Params, gpu_id_for, load_gpu, make_params
from shivam.roofline import energy_features, energy_not_fitted
from shivam.validate.points import Point, point_cost

TIME_PARAMS = ("memory_efficiency", "compute_efficiency", "overlap_exponent", "per_kernel_s", "per_step_s",
               "per_iteration_s", "pcie_Bps", "attention_cta_Bps")
TIME_BOUNDS = {"memory_efficiency": (0.05, 1.2), "compute_efficiency": (0.05, 1.2), "overlap_exponent": (1.0, 100.0),
               "per_kernel_s": (0.0, 1e-3),
               "per_step_s": (0.0, 0.05), "per_iteration_s": (0.0, 0.05), "pcie_Bps": (1e8, 2e11),
               "attention_cta_Bps": (1e8, 1e12)}
ENERGY_PARAMS = ("static_power_w", "active_power_w", "block_power_w", "dram_j_per_byte", "compute_scale",
                 "pcie_j_per_byte")


@dataclass
class Measured:
    point: Point
    time_s: float  # per call
    energy_j: float  # per call
    tokens: float  # per call, as measured (drawn acceptance for spec points)
    group: str  # for leave-one-model-out
    card: str = ""  # the GPU card (NVML UUID) or, where none was recorded, the campaign that measured the point

    @classmethod
    def from_record(cls, r: dict, card: str = "") -> "Measured":
        p = Point(**r["point"])
        m = r["measured"]
        group = p.model if p.kind != "stage1" else "stage1"
        return cls(p, m["time_per_call_s"], m["energy_per_call_j"], m.get("tokens_per_call", 0.0), group, card)


def load_records(paths: list[str]) -> list[dict]:
    """Every record of the given results files, in order."""
    from shivam.validate.runner import read_records

    for path in paths:
        if not Path(path).is_file():
            raise ShivamError(f"results file {path!r} does not exist; give JSONL files written by `shivam validate`")
    return [r for path in paths for r in read_records(path)]


def load_results(paths: list[str], engine: str | None = None) -> tuple[list[Measured], str | None]:
    """Measured points (status ok) from JSONL files, and the GPU id their environment records name."""
    out, gpu = [], None
    for path in paths:
        card = f"{Path(path).name} (no environment record)"
        for r in load_records([path]):
            if r.get("record") == "environment":
                # one environment record per campaign (a resumed run adds one): the points after it ran on its card
                card = r.get("gpu_uuid") or f"{Path(path).name} campaign of {str(r.get('date', '?'))[:16]}"
                if r.get("gpu"):
                    gpu = gpu or gpu_id_for(r["gpu"])
            if r.get("record") == "point" and r.get("status") == "ok":
                m = Measured.from_record(r, card)
                if engine is None or m.point.engine == engine:
                    out.append(m)
    if not out:
        raise ShivamError(f"no measured points{' of the ' + engine + ' engine' if engine else ''} in {', '.join(paths)}")
    return out, gpu


def _with(params: Params, values: dict) -> Params:
    return params.model_copy(update=values)


def _time_residuals(x, names, base: Params, data: list[Measured]) -> np.ndarray:
    p = _with(base, dict(zip(names, x)))
    return np.array([float(point_cost(m.point, p)[0].time_s) / m.time_s - 1.0 for m in data])


def _identifiable(names, cov, values) -> tuple[dict, list[str]]:
    sd = np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None else np.full(len(names), np.inf)
    unc, bad = {}, []
    for n, s, v in zip(names, sd, values):
        unc[n] = float(s)
        if not np.isfinite(s) or (v != 0 and s / abs(v) > 1.0) or (v == 0 and s > 0):
            bad.append(n)
    return unc, bad


def _covariance(J: np.ndarray, resid: np.ndarray, scale: np.ndarray | None = None) -> np.ndarray | None:
    """s^2 (J^T J)^-1, computed with columns scaled to unit size (parameters span 1e-6 s to 1e10 B/s)."""
    m, k = J.shape
    if m <= k:
        return None
    scale = np.ones(k) if scale is None else scale
    Js = J * scale
    JTJ = Js.T @ Js
    if np.linalg.cond(JTJ) > 1e12:
        return None
    return np.linalg.inv(JTJ) * float(resid @ resid) / (m - k) * np.outer(scale, scale)


@dataclass
class FitResult:
    params: Params
    values: dict
    uncertainty: dict
    residuals: dict = field(default_factory=dict)
    held: dict = field(default_factory=dict)  # parameters the data could not identify, held at their defaults
    card_factors: dict = field(default_factory=dict)  # energy scale of each card (geometric mean 1), when fitted


def card_scales(pred: np.ndarray, meas: np.ndarray, cards: list[str]) -> dict[str, float]:
    """For each card, the factor f minimizing sum((f * pred / meas - 1)^2) over its points: sum(r) / sum(r^2)."""
    r = pred / meas
    out = {}
    for c in sorted(set(cards)):
        sel = np.array([x == c for x in cards])
        out[c] = float(np.sum(r[sel]) / np.sum(r[sel] ** 2))
    return out


def fit(data: list[Measured], base: Params, fix: dict | None = None, strict: bool = True,
        card_factors: bool = False) -> FitResult:
    """Fit time then energy parameters. strict: refuse, by name, a parameter the data cannot identify. strict=False
    (cross-validation folds) keeps the least-squares values however uncertain; parameters that no point of the
    data moves at all are held at their defaults either way.

    card_factors: the same work drew 404-469 W on three lent H200 cards (docs/validation.md), so data from several
    cards can carry one energy scale per card, fitted alongside (alternating with the linear solve, normalized to a
    geometric mean of 1): the parameters then describe the typical card and the factors the spread between cards."""
    from scipy.optimize import least_squares

    fix = dict(fix or {})
    kinds = {m.point.kind for m in data}
    # parameters with no data that could move them are held, not fitted
    several = any(m.point.kind == "generate" or (m.point.kind == "spec" and m.point.k > 0)
                  or (m.point.kind == "step" and m.point.new_tokens > 1) for m in data)  # masked attention
    relevant = {"pcie_Bps": "stage1" in kinds, "per_iteration_s": bool(kinds & {"spec", "generate"}),
                "attention_cta_Bps": several,
                "per_step_s": bool(kinds - {"stage1"}), "per_kernel_s": bool(kinds - {"stage1"})}
    names = [n for n in TIME_PARAMS if n not in fix and relevant.get(n, True)]
    held = {n: getattr(base, n) for n in TIME_PARAMS if n not in names and n not in fix}
    base = _with(base, fix)
    # overlap_exponent near its default (100, the roofline max) sits on a plateau with no gradient: start at 4
    x0 = np.array([min(getattr(base, n), 4.0) if n == "overlap_exponent" else getattr(base, n) for n in names])
    lo, hi = np.array([TIME_BOUNDS[n][0] for n in names]), np.array([TIME_BOUNDS[n][1] for n in names])
    scale = np.maximum(np.abs(x0), 1e-7)
    sol = least_squares(_time_residuals, np.clip(x0, lo, hi), bounds=(lo, hi), args=(names, base, data),
                        x_scale=scale, method="trf")
    unc, bad = _identifiable(names, _covariance(sol.jac, sol.fun, np.maximum(np.abs(sol.x), scale)), sol.x)
    if bad and strict:
        raise _unidentifiable(bad)
    time_values = dict(zip(names, map(float, sol.x)))
    p = _with(base, time_values)

    # energy: linear in the energy parameters once the times are known
    costs = [point_cost(m.point, p)[0] for m in data]
    features = [energy_features(c) for c in costs]
    cols = {n: np.array([float(f[n]) for f in features]) for n in ENERGY_PARAMS}
    e_names = [n for n in ENERGY_PARAMS if n not in fix and np.any(cols[n] > 0)]
    meas_e = np.array([m.energy_j for m in data])
    fixed_part = (sum(fix[n] * cols[n] for n in ENERGY_PARAMS if n in fix)
                  + np.array([float(energy_not_fitted(c)) for c in costs]))
    cards = [m.card for m in data]
    factors = {c: 1.0 for c in cards}
    for _ in range(50 if card_factors else 1):
        f_row = np.array([factors[c] for c in cards])
        coef, e_unc = _energy_solve(cols, e_names, meas_e / f_row, fixed_part, strict)
        if not card_factors:
            break
        pred = sum(c * cols[n] for c, n in zip(coef, e_names)) + fixed_part
        new = card_scales(pred, meas_e, cards)
        g = float(np.exp(np.mean(np.log(list(new.values())))))
        new = {c: v / g for c, v in new.items()}
        done = max(abs(new[c] / factors[c] - 1) for c in new) < 1e-6
        factors = new
        if done:
            break
    energy_values = dict(zip(e_names, map(float, coef)))
    all_values = {**fix, **time_values, **energy_values}
    scale = all_values.get("compute_scale", 1.0)
    final = _with(p, {k: v for k, v in all_values.items() if k in Params.model_fields and k not in time_values})
    final = _with(final, {"j_per_flop": {d: v * scale for d, v in p.j_per_flop.items()}})
    f_row = np.array([factors[c] for c in cards]) if card_factors else 1.0
    energy_pred = f_row * np.array([float(point_cost(m.point, final)[0].energy_j) for m in data])
    return FitResult(final, all_values, {**{n: unc[n] for n in names}, **e_unc},
                     {"time": sol.fun.tolist(), "energy": (energy_pred / meas_e - 1).tolist()}, held,
                     factors if card_factors else {})


def _unidentifiable(bad: list[str]) -> ShivamError:
    return ShivamError(f"the data cannot identify {', '.join(bad)} (uncertainty above 100 %); measure points that "
                       f"move it or hold it with --fix {bad[0]}=VALUE")


def _energy_solve(cols, e_names, meas_e, fixed_part, strict):
    """Bounded linear least squares on relative error for the energy coefficients; refuses (strict) the
    coefficients the data cannot identify, keeps them however uncertain otherwise (cross-validation folds)."""
    from scipy.optimize import lsq_linear

    A = np.stack([cols[n] / meas_e for n in e_names], axis=1)
    b = 1.0 - fixed_part / meas_e
    colscale = np.maximum(np.abs(A).max(axis=0), 1e-30)
    coef = lsq_linear(A / colscale, b, bounds=(0, np.inf)).x / colscale
    cov = _covariance(A, A @ coef - b, np.maximum(np.abs(coef), 1.0 / colscale))
    e_unc, bad = _identifiable(e_names, cov, coef)
    if bad and strict:
        raise _unidentifiable(bad)
    return coef, e_unc


def predictions(data: list[Measured], params: Params, card_factors: dict | None = None) -> list[dict]:
    """Predicted vs measured per point; energy scaled by the point's card factor where one is given."""
    rows = []
    for m in data:
        cost, tokens, bound = point_cost(m.point, params)
        f = (card_factors or {}).get(m.card, 1.0)
        row = {"label": m.point.label(), "group": m.group, "kind": m.point.kind, "k": m.point.k,
               "alpha": None if m.point.alpha is None else str(m.point.alpha),  # as the label shows it
               "card": m.card, "card_factor": f,
               "time_pred": float(cost.time_s), "time_meas": m.time_s,
               "energy_pred": f * float(cost.energy_j), "energy_meas": m.energy_j, "bound": bound}
        if m.tokens:
            # per token: the prediction with the measured tokens per call, so acceptance draws do not count as error
            row.update(energy_tok_pred=row["energy_pred"] / m.tokens, energy_tok_meas=m.energy_j / m.tokens,
                       time_tok_pred=row["time_pred"] / m.tokens, time_tok_meas=m.time_s / m.tokens,
                       tokens=m.tokens, expected_tokens=tokens)
        row["time_err"] = row["time_pred"] / row["time_meas"] - 1
        row["energy_err"] = row["energy_pred"] / row["energy_meas"] - 1
        rows.append(row)
    return rows


def card_factors_for(data: list[Measured], params: Params) -> dict[str, float]:
    """Each card's energy scale relative to fixed parameters (a calibration): what `check` and `report` apply with
    --card-factors."""
    pred = np.array([float(point_cost(m.point, params)[0].energy_j) for m in data])
    return card_scales(pred, np.array([m.energy_j for m in data]), [m.card for m in data])


def error_stats(errors) -> dict:
    a = np.abs(np.asarray(errors, dtype=float))
    return {"median": float(np.median(a)), "max": float(np.max(a)), "mean": float(np.mean(a)), "n": int(a.size)}


def leave_one_group_out(data: list[Measured], base: Params, fix: dict | None = None,
                        card_factors: bool = False) -> list[dict]:
    """Fit without each model's points, predict that model's points. With card factors, a held-out point takes its
    card's factor as fitted from the other models measured on that card (1 where the card measured no other)."""
    rows = []
    for g in sorted({m.group for m in data}):
        train = [m for m in data if m.group != g]
        test = [m for m in data if m.group == g]
        if len({m.group for m in train}) < 2:
            continue
        result = fit(train, base, fix, strict=False, card_factors=card_factors)
        rows += [{**r, "fold": g, "held": sorted(result.held)}
                 for r in predictions(test, result.params, result.card_factors)]
    return rows


def best_k_check(rows: list[dict]) -> list[dict]:
    """For each (target, alpha) of the speculative points: the k of least measured energy per token, against the
    k of least predicted energy per token (k=0, standard decoding, competes at every alpha)."""
    spec = [r for r in rows if r["kind"] == "spec"]
    out = []
    for model in sorted({r["group"] for r in spec}):
        baseline = [r for r in spec if r["group"] == model and r["k"] == 0]
        for alpha in sorted({r["alpha"] for r in spec if r["group"] == model and r["k"] > 0}):
            cands = baseline + [r for r in spec if r["group"] == model and r["k"] > 0 and r["alpha"] == alpha]
            meas = min(cands, key=lambda r: r["energy_tok_meas"])
            pred = min(cands, key=lambda r: r["energy_tok_pred"])
            gap = pred["energy_tok_meas"] / meas["energy_tok_meas"] - 1
            out.append({"model": model, "alpha": alpha, "best_k_measured": meas["k"], "best_k_predicted": pred["k"],
                        "energy_gap": gap, "ok": meas["k"] == pred["k"] or gap <= 0.02})
    return out


def calibration_file(result: FitResult, gpu: str, engine: str, sources: list[str], note: str = "") -> Calibration:
    p = result.params
    params = {n: getattr(p, n) for n in TIME_PARAMS + ("static_power_w", "active_power_w", "block_power_w",
                                                         "dram_j_per_byte", "pcie_j_per_byte")}
    params["j_per_flop"] = dict(p.j_per_flop)
    return Calibration(gpu=gpu, engine=engine, parameters=params,
                       uncertainty={k: v for k, v in result.uncertainty.items()}, fitted_from=sources,
                       card_factors=result.card_factors,
                       note=note or f"held at defaults (not identifiable from this data): {sorted(result.held) or 'none'}")


def base_params(gpu: str | None, engine: str) -> Params:
    if gpu is None:
        raise ShivamError("the results name no GPU shivam knows; pass --gpu")
    return make_params(load_gpu(gpu), engine)
