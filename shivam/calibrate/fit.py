"""Calibration: fit the simulator's free parameters to measured points, and check predictions against them.

Two stages, because the model is built that way (docs/model.md, section 3):
  time   = f(memory_efficiency, compute_efficiency, overlap_exponent, per_kernel_s, per_step_s, per_iteration_s,
             pcie_Bps, attention_cta_Bps):
           nonlinear (an overlap of memory and compute per operator), fitted with scipy.optimize.least_squares on
           relative error;
  energy = static_power * time + active_power * busy + block_power * floor SM-seconds + e_dram * bytes
           + compute_scale * E_compute + e_pcie * pcie (+ the fallback kernels' measured power, a fixed part):
           linear once the times are fixed, fitted with scipy.optimize.lsq_linear (bounded, relative error).
Uncertainties come from the Jacobian (time) or design matrix (energy) at the solution: s^2 (J^T J)^-1.
A parameter the data cannot identify (singular or with relative uncertainty above 100 %) is refused by name, or in
"hold" mode held at its prior, one at a time (the least identified first) until the rest are identified.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np

from shivam.calibrate.points import PointSet
from shivam.calibrate.results import Measured
from shivam.errors import ShivamError
from shivam.specs import Calibration, Params, load_gpu, make_params
from shivam.specs.params import TIME_PARAMS

TIME_BOUNDS = {
    "memory_efficiency": (0.05, 1.2),
    "compute_efficiency": (0.05, 1.2),
    "attention_compute_fraction": (0.1, 2.0),
    "prompt_attention_fraction": (0.05, 2.0),
    "overlap_exponent": (1.0, 100.0),
    "per_kernel_s": (0.0, 1e-3),
    "per_step_s": (0.0, 0.05),
    "per_iteration_s": (0.0, 0.05),
    "pcie_Bps": (1e8, 2e11),
    "attention_cta_Bps": (1e8, 1e12),
    "attention_block_s": (0.0, 1e-3),
    "attention_iteration_s": (1e-8, 1e-4),
    "attention_merge_s": (0.0, 1e-5),
    "attention_memory_efficiency": (0.05, 1.2),
    "limit_stretch_exponent": (0.0, 3.0),
}
KV_POINTS = 5  # points streaming more KV cache than weights, below which kv_j_per_byte is held, not fitted
CAP_ROUNDS = 12  # redesigns of the energy fit until its power-capped steps stop changing (2-4 suffice)
ENERGY_PARAMS = (
    "static_power_w",
    "active_power_w",
    "block_power_w",
    "dram_j_per_byte",
    "kv_j_per_byte",
    "l2_j_per_byte",
    "compute_scale",
    "pcie_j_per_byte",
)


def _with(params: Params, values: dict) -> Params:
    return params.model_copy(update=values)


def _time_residuals(x, names, base: Params, points: PointSet, meas_t: np.ndarray, scale=1.0) -> np.ndarray:
    p = _with(base, dict(zip(names, x)))
    return points.costs(p, scale).time_s / meas_t - 1.0  # scale: each point's card factor, which the hold sees


def _identifiable(names, cov, values) -> tuple[dict, list[str]]:
    sd = np.sqrt(np.clip(np.diag(cov), 0, None)) if cov is not None else np.full(len(names), np.inf)
    unc, bad = {}, []
    for n, s, v in zip(names, sd, values):
        unc[n] = float(s)
        if not np.isfinite(s) or (v != 0 and s / abs(v) > 1.0) or (v == 0 and s > 0):
            bad.append(n)
    return unc, bad


def _least_identified(names, J: np.ndarray, scale: np.ndarray, unc: dict, bad: list[str]) -> str:
    """The one parameter of `bad` to hold first: the largest uncertainty relative to its scale, or, where J^T J is
    singular (no uncertainty at all), the parameter with the largest share of the directions the data does not see
    (the right singular vectors of the scaled Jacobian with singular values below 1e-6 of the largest, and every
    direction past the points' count). One parameter the data cannot see inflates the uncertainty of every
    parameter correlated with it; holding them all at once threw away what the data does identify."""
    if all(np.isfinite(unc[n]) for n in bad):
        rel = {n: unc[n] / s for n, s in zip(names, scale)}
        return max(bad, key=lambda n: rel[n])
    Js = J * scale
    if not np.all(np.isfinite(Js)):
        return bad[0]
    _, sv, vt = np.linalg.svd(Js, full_matrices=True)
    unseen = [i for i in range(len(names)) if i >= len(sv) or sv[i] <= 1e-6 * sv[0]] or [len(names) - 1]
    weight = dict(zip(names, np.sum(vt[unseen] ** 2, axis=0)))
    return max(bad, key=lambda n: weight[n])


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
    unidentified: list = field(default_factory=list)  # kept however uncertain (strict=False): what the data cannot pin


def card_scales(pred: np.ndarray, meas: np.ndarray, cards: list[str]) -> dict[str, float]:
    """For each card, the factor f minimizing sum((f * pred / meas - 1)^2) over its points: sum(r) / sum(r^2)."""
    r = pred / meas
    out = {}
    for c in sorted(set(cards)):
        sel = np.array([x == c for x in cards])
        out[c] = float(np.sum(r[sel]) / np.sum(r[sel] ** 2))
    return out


def _masked_keys_spread(data) -> float:
    """max / min of the keys attended by the points that run attention over several new tokens (verify steps)."""
    keys = [
        m.point.context + (m.point.new_tokens if m.point.kind == "step" else m.point.k + 1)
        for m in data
        if (m.point.kind == "step" and m.point.new_tokens > 1) or (m.point.kind == "spec" and m.point.k > 0)
    ]
    return max(keys) / min(keys) if keys else 0.0


ATTENTION_POINTS = 5  # points whose time moves by ATTENTION_MOVE or more when attention's products run at half the
ATTENTION_MOVE = 0.02  # rate, below which attention_compute_fraction is held (nothing in the data sets it)


def _moved_by(points: PointSet, base: Params, name: str, value: float) -> np.ndarray:
    """Per point, how much its time changes when parameter `name` takes `value` instead of base's: whether the data
    can see that parameter at all."""
    t0 = points.uncapped(base).time_s
    return np.abs(points.uncapped(_with(base, {name: value})).time_s / t0 - 1.0)


def _seen(points: PointSet, base: Params, name: str, value: float) -> bool:
    """Whether at least ATTENTION_POINTS points' time moves by ATTENTION_MOVE when `name` takes `value`."""
    return int(np.sum(_moved_by(points, base, name, value) >= ATTENTION_MOVE)) >= ATTENTION_POINTS


# held at their priors where the data cannot identify them, not refused
SOFT_PARAMS = ("limit_stretch_exponent", "attention_compute_fraction", "prompt_attention_fraction")
LIMIT_POINTS = 10  # points at the board's limit, below which limit_stretch_exponent is held, not fitted
LIMIT_ROUNDS = 6  # refits from the fitted energy parameters, for the time of calls held at the board's limit


def fit(
    data: list[Measured], base: Params, fix: dict | None = None, strict: bool | str = True, card_factors: bool = False
) -> FitResult:
    """fit_once, then again from its fitted energy parameters while that moves the fit: which calls run at the
    board's power limit, and how much longer they run there (limit_stretch_exponent, a time parameter), depend on
    the energy parameters, which the time fit takes from its starting point."""
    points = PointSet([m.point for m in data], base)
    fix = dict(fix or {})
    result = fit_once(data, base, fix, strict, card_factors, points)
    for _ in range(LIMIT_ROUNDS - 1):
        if base.power_limit_w is None or "limit_stretch_exponent" in fix:
            break  # the time fit does not depend on the energy parameters
        # from the fitted values: energy parameters for the held calls, time parameters as the solver's start, and
        # each point's card factor (what the hold sees)
        carried = [n for n in (*ENERGY_PARAMS, *TIME_PARAMS) if n != "compute_scale" and n in Params.model_fields]
        start = _with(base, {n: getattr(result.params, n) for n in carried})
        scale = 1.0  # compute_scale of the rounds before, relative to base's per-FLOP energies
        if "compute_scale" not in fix:  # a fixed one is applied to base's per-FLOP energies again each round
            start = _with(start, {"j_per_flop": dict(result.params.j_per_flop)})
            scale = result.values.get("compute_scale", 1.0)
        factors = np.array([result.card_factors.get(m.card, 1.0) for m in data])
        again = fit_once(data, start, fix, strict, card_factors, points, factors)
        if "compute_scale" in again.values and "compute_scale" not in fix:
            again.values["compute_scale"] *= scale
            if "compute_scale" in again.uncertainty:
                again.uncertainty["compute_scale"] *= scale
        before = {**result.values, **{f"card {c}": v for c, v in result.card_factors.items()}}
        after = {**again.values, **{f"card {c}": v for c, v in again.card_factors.items()}}
        shared = [n for n in after if isinstance(after[n], float) and n in before]
        moved = max((abs(after[n] - before[n]) / max(abs(before[n]), 1e-12) for n in shared), default=0.0)
        result = again
        if moved < 1e-4:
            break
    return result


def fit_once(
    data: list[Measured],
    base: Params,
    fix: dict | None = None,
    strict: bool | str = True,
    card_factors: bool = False,
    points: PointSet | None = None,
    energy_scale=1.0,
) -> FitResult:
    """Fit time then energy parameters. strict: refuse, by name, a parameter the data cannot identify. strict=False
    (cross-validation folds) keeps the least-squares values however uncertain; strict="hold" holds each parameter
    the data cannot identify at its prior (base) value, refits, and names it in FitResult.held. Parameters that no
    point of the data moves at all are held at their defaults either way.

    card_factors: the same work drew 404-469 W on different H200 cards (docs/validation.md), so data from several
    cards can carry one energy scale per card, fitted alongside (alternating with the linear solve, normalized to a
    geometric mean of 1): the parameters then describe the typical card and the factors the spread between cards."""
    from scipy.optimize import least_squares

    fix = dict(fix or {})
    kinds = {m.point.kind for m in data}
    points = points or PointSet([m.point for m in data], base)  # its steps do not move with fitted parameters
    meas_t = np.array([m.time_s for m in data])
    # parameters with no data that could move them are held, not fitted
    relevant = {
        "pcie_Bps": "stage1" in kinds,
        "per_iteration_s": bool(kinds & {"spec", "generate"}),
        "attention_cta_Bps": points.has_latency_bound_kernels_of_unknown_occupancy,
        # told apart from the per-block rate only by blocks of very different lengths: several new tokens measured
        # over keys at least 3x apart (a split-KV kernel's programs grow less than its keys: 512 vs 1024 is too close)
        "attention_block_s": points.has_latency_bound_kernels and _masked_keys_spread(data) >= 3,
        # a multiprocessor's share of the bandwidth bounds only programs whose occupancy is known (split-KV)
        "attention_memory_efficiency": points.has_occupancy,
        "attention_iteration_s": points.has_occupancy,
        # the merge's steps matter only where a few sequences' caches are cut into many slices (long contexts at
        # small batch): fitted only where doubling it moves enough points' time, as for the attention's products
        "attention_merge_s": points.has_occupancy
        and _seen(points, base, "attention_merge_s", 2.0 * base.attention_merge_s or 1e-8),
        "per_step_s": bool(kinds - {"stage1"}),
        "per_kernel_s": bool(kinds - {"stage1"}),
        # the attention kernel's products: a long prompt's causal attention, a split-KV program's products between
        # its loads (verify over long caches and large batches); decode attention streaming its cache barely moves
        "attention_compute_fraction": _seen(
            points, base, "attention_compute_fraction", 0.5 * base.attention_compute_fraction
        ),
        # the prompt tiles' products (a profile that has them): long prompts, and verify of more new tokens than the
        # kernel fuses, over long caches
        "prompt_attention_fraction": base.prompt_attention_fraction is not None
        and _seen(points, base, "prompt_attention_fraction", 0.5 * base.prompt_attention_fraction),
        # moved only by points at the board's limit under base's energy parameters (fit redoes it from the fitted
        # ones), and told from the other time parameters only by several of them
        "limit_stretch_exponent": int(np.sum(points.hold_factors(base) < 1.0)) >= LIMIT_POINTS,
    }
    names = [n for n in TIME_PARAMS if n not in fix and relevant.get(n, True)]
    held = {  # (a parameter the profile does not have, None, is not held: it stays absent)
        n: getattr(base, n) for n in TIME_PARAMS if n not in names and n not in fix and getattr(base, n) is not None
    }
    base = _with(base, fix)
    # overlap_exponent near its default (100, the roofline max) sits on a plateau with no gradient: start at 4;
    # limit_stretch_exponent at 0, its bound, has a zero scale: start at 0.1
    start = {"overlap_exponent": lambda v: min(v, 4.0), "limit_stretch_exponent": lambda v: max(v, 0.1)}
    x0 = np.array([start.get(n, float)(getattr(base, n)) for n in names])  # off plateaus and bounds
    lo, hi = np.array([TIME_BOUNDS[n][0] for n in names]), np.array([TIME_BOUNDS[n][1] for n in names])
    scale = np.maximum(np.abs(x0), 1e-7)
    if names:
        sol = least_squares(
            _time_residuals,
            np.clip(x0, lo, hi),
            bounds=(lo, hi),
            args=(names, base, points, meas_t, energy_scale),
            x_scale=scale,
            method="trf",
        )
        col_scale = np.maximum(np.abs(sol.x), scale)
        unc, bad = _identifiable(names, _covariance(sol.jac, sol.fun, col_scale), sol.x)
    else:  # every time parameter held: nothing to solve
        sol = SimpleNamespace(
            x=np.array([]), fun=_time_residuals(np.array([]), names, base, points, meas_t, energy_scale)
        )
        unc, bad = {}, []
    # too few or too alike calls at the limit, or too little compute-bound attention: held at their priors (base's:
    # 0 and 1, what an engine without them does, and the profile's prompt-tile rate), not refused
    soft = [n for n in SOFT_PARAMS if n in bad]
    if soft and strict:
        return _holding(data, base, fix, soft, card_factors, points, strict, energy_scale)
    if bad and strict == "hold":  # one at a time: the rest may be identified once it is held
        worst = _least_identified(names, sol.jac, col_scale, unc, bad)
        return _holding(data, base, fix, [worst], card_factors, points, "hold", energy_scale)
    if bad and strict:
        raise _unidentifiable(bad)
    time_values = dict(zip(names, map(float, sol.x)))
    p = _with(base, time_values)

    # energy: linear in the energy parameters once the times are known, except in calls the board's power limit
    # holds (left out of the solve: PointSet.energy_design): which those are depends on the coefficients, so the
    # design is redone at the fitted ones until the set of held calls stops changing
    meas_e = np.array([m.energy_j for m in data])
    cards = [m.card for m in data]

    def with_energy(values: dict) -> Params:
        values = {**fix, **values}
        scale = values.get("compute_scale", 1.0)
        out = _with(p, {k: v for k, v in values.items() if k in Params.model_fields and k not in names})
        return _with(out, {"j_per_flop": {d: v * scale for d, v in p.j_per_flop.items()}})

    held_in_time = dict(held)
    energy_at, capped, factors, seen = p, None, {c: 1.0 for c in cards}, []
    for _ in range(CAP_ROUNDS):
        f_row = np.array([factors[c] for c in cards])
        cols, not_fitted, now_capped = points.energy_design(p, energy_at, f_row)
        if capped is not None and np.array_equal(now_capped, capped):
            break
        if any(np.array_equal(now_capped, m) for m in seen):  # a cycle (measurements above the limit): keep this fit
            break
        seen.append(now_capped)
        capped = now_capped
        e_names = [n for n in ENERGY_PARAMS if n not in fix and np.any(cols[n] > 0)]
        if "kv_j_per_byte" in e_names and np.sum(cols["kv_j_per_byte"] > 0.5 * cols["dram_j_per_byte"]) < KV_POINTS:
            e_names.remove("kv_j_per_byte")  # too few points stream more cache than weights to tell it from e_dram
        unmoved = [n for n in ENERGY_PARAMS if n not in fix and n not in e_names]  # no point moves them this round
        held = {**held_in_time, **{n: (1.0 if n == "compute_scale" else getattr(base, n)) for n in unmoved}}
        fixed_part = sum(fix[n] * cols[n] for n in ENERGY_PARAMS if n in fix) + not_fitted
        free = ~capped  # capped points constrain no coefficient: kept out of the solve and its noise estimate
        for _ in range(50 if card_factors else 1):
            f_row = np.array([factors[c] for c in cards])
            coef, e_unc, e_bad = _energy_solve(
                {n: v[free] for n, v in cols.items()}, e_names, (meas_e / f_row)[free], fixed_part[free], strict
            )
            if e_bad and strict == "hold":
                return _holding(data, base, fix, e_bad, card_factors, points, "hold", energy_scale)
            if not card_factors:
                break
            pred = sum(c * cols[n] for c, n in zip(coef, e_names)) + fixed_part
            # a capped point's energy says nothing of its card's scale: the others' give it (1 for a card with none)
            new = {c: 1.0 for c in cards} | card_scales(pred[free], meas_e[free], [c for c, k in zip(cards, free) if k])
            g = float(np.exp(np.mean(np.log(list(new.values())))))
            new = {c: v / g for c, v in new.items()}
            done = max(abs(new[c] / factors[c] - 1) for c in new) < 1e-6
            factors = new
            if done:
                break
        energy_values = dict(zip(e_names, map(float, coef)))
        energy_at = with_energy(energy_values)
    else:
        if strict:
            raise ShivamError(
                f"the fit's points at the board's power limit did not settle in {CAP_ROUNDS} rounds; hold an energy "
                "parameter (--fix NAME=VALUE) or leave out the points at the limit"
            )
    unidentified = sorted(set(bad) | set(e_bad))
    all_values = {**fix, **time_values, **energy_values}
    final = energy_at
    f_row = np.array([factors[c] for c in cards]) if card_factors else 1.0
    energy_pred = points.costs(final, f_row).energy_j
    return FitResult(
        final,
        all_values,
        {**{n: unc[n] for n in names}, **e_unc},
        {"time": sol.fun.tolist(), "energy": (energy_pred / meas_e - 1).tolist()},
        held,
        factors if card_factors else {},
        unidentified,
    )


def _holding(
    data,
    base: Params,
    fix: dict,
    bad: list[str],
    card_factors: bool,
    points: PointSet,
    strict: bool | str = "hold",
    energy_scale=1.0,
) -> FitResult:
    """The fit again with the unidentifiable parameters held at their priors; they are listed in held."""
    priors = {n: (1.0 if n == "compute_scale" else getattr(base, n)) for n in bad}
    result = fit_once(data, base, {**fix, **priors}, strict, card_factors, points, energy_scale)
    result.held.update(priors)
    for n in priors:
        result.values.pop(n, None)
    return result


def _unidentifiable(bad: list[str]) -> ShivamError:
    return ShivamError(
        f"the data cannot identify {', '.join(bad)} (uncertainty above 100 %); measure points that "
        f"move it or hold it with --fix {bad[0]}=VALUE"
    )


def _energy_solve(cols, e_names, meas_e, fixed_part, strict):
    """Bounded linear least squares on relative error for the energy coefficients; refuses (strict) the
    coefficients the data cannot identify, keeps them however uncertain otherwise (cross-validation folds)."""
    from scipy.optimize import lsq_linear

    if not e_names:  # every energy coefficient held
        return np.array([]), {}, []
    A = np.stack([cols[n] / meas_e for n in e_names], axis=1)
    b = 1.0 - fixed_part / meas_e
    colscale = np.maximum(np.abs(A).max(axis=0), 1e-30)
    coef = lsq_linear(A / colscale, b, bounds=(0, np.inf)).x / colscale
    cov = _covariance(A, A @ coef - b, np.maximum(np.abs(coef), 1.0 / colscale))
    e_unc, bad = _identifiable(e_names, cov, coef)
    if bad and strict is True:
        raise _unidentifiable(bad)
    return coef, e_unc, bad


def calibration_file(result: FitResult, gpu: str, engine: str, sources: list[str], note: str = "") -> Calibration:
    p = result.params
    params = {
        n: getattr(p, n)
        for n in TIME_PARAMS
        + tuple(n for n in ENERGY_PARAMS if n != "compute_scale")  # compute_scale is written into j_per_flop
        if getattr(p, n) is not None  # a parameter the engine's profile does not have
    }
    params["j_per_flop"] = dict(p.j_per_flop)
    return Calibration(
        gpu=gpu,
        engine=engine,
        parameters=params,
        uncertainty={k: v for k, v in result.uncertainty.items()},
        fitted_from=sources,
        card_factors=result.card_factors,
        note=note or f"held at defaults (not identifiable from this data): {sorted(result.held) or 'none'}",
    )


def base_params(gpu: str | None, engine: str) -> Params:
    if gpu is None:
        raise ShivamError("the results name no GPU shivam knows; pass --gpu")
    return make_params(load_gpu(gpu), engine)
