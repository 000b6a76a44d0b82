"""Checking a calibration: predicted against measured for every point, error statistics, cross-validation (leave one
model out, or one point of a model no other model can stand in for), and whether the predicted best speculation
window is the measured one."""

from __future__ import annotations

import numpy as np

from shivam.calibrate.fit import card_scales, fit
from shivam.calibrate.points import point_cost
from shivam.calibrate.results import Measured
from shivam.sim.speculative import best_window
from shivam.specs import Params


def predictions(data: list[Measured], params: Params, card_factors: dict | None = None) -> list[dict]:
    """Predicted vs measured per point; energy scaled by the point's card factor where one is given."""
    rows = []
    for m in data:
        f = (card_factors or {}).get(m.card, 1.0)
        cost, tokens, bound = point_cost(m.point, params, f)  # the card's energy, capped at the board's limit
        row = {
            "label": m.point.label(),
            "group": m.group,
            "kind": m.point.kind,
            "k": m.point.k,
            "draft": m.point.draft,
            "batch": m.point.batch,
            "context": m.point.context,
            "contexts": list(m.point.contexts) if m.point.contexts else None,
            "alpha": None if m.point.alpha is None else str(m.point.alpha),  # as the label shows it
            "card": m.card,
            "card_factor": f,
            "time_pred": float(cost.time_s),
            "time_meas": m.time_s,
            "energy_pred": float(cost.energy_j),
            "energy_meas": m.energy_j,
            "bound": bound,
            "energy_spread": m.energy_spread,
            "time_spread": m.time_spread,
        }
        if m.tokens:
            # per token: the prediction with the measured tokens per call, so acceptance draws do not count as error
            row.update(
                energy_tok_pred=row["energy_pred"] / m.tokens,
                energy_tok_meas=m.energy_j / m.tokens,
                time_tok_pred=row["time_pred"] / m.tokens,
                time_tok_meas=m.time_s / m.tokens,
                tokens=m.tokens,
                expected_tokens=tokens,
            )
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


def leave_one_group_out(
    data: list[Measured], base: Params, fix: dict | None = None, card_factors: bool = False, progress=None
) -> list[dict]:
    """Fit without each model's points, predict that model's points. With card factors, a held-out point takes its
    card's factor as fitted from the other models measured on that card (1 where the card measured no other)."""
    rows = []
    for g, train, test in _model_folds(data, progress):
        result = fit(train, base, fix, strict=False, card_factors=card_factors)
        rows += [
            {**r, "fold": g, "held": sorted(result.held)} for r in predictions(test, result.params, result.card_factors)
        ]
    return rows


def _model_folds(data: list[Measured], progress=None):
    """(model, the other models' points, this model's points) for every model whose absence leaves two or more."""
    groups = sorted({m.group for m in data})
    for i, g in enumerate(groups):
        if progress is not None:
            progress(g, i, len(groups))
        train = [m for m in data if m.group != g]
        if len({m.group for m in train}) >= 2:
            yield g, train, [m for m in data if m.group == g]


def cross_validate(
    data: list[Measured], base: Params, fix: dict | None = None, card_factors: bool = False, progress=None
) -> list[dict]:
    """Out-of-fold predictions of every point, for a band: each model is left out whole (leave-one-model-out), unless
    the other models cannot identify a parameter that the whole data identifies; then that model's points are left
    out one at a time instead (row "left_out": "model" or "point"). In a small suite the one model that moves some
    parameter (the largest model, the only one with verify widths, batches and contexts) is such a model: a fold
    without it is a fit of a different, poorly identified model, which says nothing of how this fit predicts."""
    unidentified_anyway = set(fit(data, base, fix, strict=False, card_factors=card_factors).unidentified)
    rows = []
    for g, train, test in _model_folds(data, progress):
        result = fit(train, base, fix, strict=False, card_factors=card_factors)
        if len(test) == 1 or not set(result.unidentified) - unidentified_anyway:
            folds = [(result, test, "model")]
        else:
            folds = []
            for m in test:
                rest = [x for x in data if x is not m]
                folds.append((fit(rest, base, fix, strict=False, card_factors=card_factors), [m], "point"))
        for res, held_out, how in folds:
            rows += [
                {
                    **r,
                    "fold": g,
                    "left_out": how,
                    "held": sorted(res.held),
                    "identified": not set(res.unidentified) - unidentified_anyway,
                }
                for r in predictions(held_out, res.params, res.card_factors)
            ]
    return rows


BEST_K_REGRET = 0.01  # the issues' bound: the measured energy at the predicted k within 1 % of the measured minimum


def _on_one_scale(r: dict, which: str) -> float:
    """A row's energy per token at its acceptance rate (which: "meas" or "pred"), brought to the typical card by its
    card's factor (1 where none was fitted). Per token expected at alpha, not per token drawn: the validator draws
    acceptance on the host, so a call's work (k drafts, a verify of k + 1) and energy do not depend on the draws, while
    the count of tokens drawn varies by about 1 % at batch 1 (docs/validation.md), the size of the bound itself."""
    if "expected_tokens" in r:
        per_token = r[f"energy_{which}"] / r["expected_tokens"]
    else:
        per_token = r[f"energy_tok_{which}"]
    return per_token / r.get("card_factor", 1.0)


def best_k_check(rows: list[dict]) -> list[dict]:
    """For each (pair, batch, context, alpha) of the speculative points: the k of least measured energy per token,
    against the best k by predicted energy per token (speculative.best_window: near-ties to the smaller window; k=0,
    standard decoding, competes at every alpha). Points of
    several cards are compared on one scale, each divided by its card's factor; the measurements of one k (several
    cards or repeats) are averaged, so that a k measured more often is not favoured by its lowest draw."""
    spec = [r for r in rows if r["kind"] == "spec"]
    settings = {}
    for r in spec:
        key = (r["group"], r.get("draft") or "", r.get("batch", 1), r.get("context", 0), str(r.get("contexts")))
        settings.setdefault(key, []).append(r)
    out = []
    for (model, draft, batch, context, _), rs in sorted(settings.items()):
        baseline = [r for r in rs if r["k"] == 0]
        for alpha in sorted({r["alpha"] for r in rs if r["k"] > 0}):
            by_k = {}
            for r in baseline + [r for r in rs if r["k"] > 0 and r["alpha"] == alpha]:
                by_k.setdefault(r["k"], []).append(r)
            meas = {k: float(np.mean([_on_one_scale(r, "meas") for r in v])) for k, v in by_k.items()}
            pred = {k: float(np.mean([_on_one_scale(r, "pred") for r in v])) for k, v in by_k.items()}
            k_meas, k_pred = min(meas, key=meas.get), best_window(list(pred), list(pred.values()))
            gap = meas[k_pred] / meas[k_meas] - 1
            out.append(
                {
                    "model": model,
                    "draft": draft,
                    "batch": batch,
                    "context": "ragged" if rs[0].get("contexts") else context,
                    "alpha": alpha,
                    "ks": sorted(by_k),
                    "best_k_measured": k_meas,
                    "best_k_predicted": k_pred,
                    "energy_gap": gap,
                    "ok": k_meas == k_pred or gap <= BEST_K_REGRET,
                }
            )
    return out
