"""Speculation at batch, predicted against measured: the ratio of standard decoding's energy (and time) per output
token to speculative decoding's at each (pair, context, batch, k, alpha), whether the prediction falls on the
measured side of 1, and the batch at which the ratio crosses 1, measured and predicted.

A ratio above 1 means speculation saves. Both sides of a ratio take the measured tokens per iteration (the
prediction rows of shivam.calibrate.evaluate.predictions), so the draws of acceptance on the host are not counted
as error. A ratio's measured spread is the sum of its two points' relative spreads over their windows.

The crossover batch of a series (one pair, context, k and alpha over batch) is where its ratio first falls from at
least 1 to below 1, interpolated linearly in log batch between the two batches around it; "below" the series'
smallest batch if the ratio is already under 1 there, none if it never falls under 1.
"""

from __future__ import annotations

import math

from shivam.calibrate.evaluate import error_stats

CROSSOVER_TOLERANCE = 1.3  # the serving issue's acceptance: interpolated crossover batches within 1.3x
SPREADS = 2.0  # a measured ratio counts as away from 1 where it differs from 1 by more than twice its spread


def _setting(row: dict) -> tuple:
    """What a spec point and its standard-decoding baseline share: everything but k and alpha."""
    contexts = tuple(row.get("contexts") or ())  # a ragged batch's contexts (a list in the rows): hashable
    return (row["group"], row.get("draft"), row.get("context"), contexts, row.get("batch"), row["card"])


def speculation_ratios(rows: list[dict]) -> list[dict]:
    """One row per speculative point (k >= 1) with a k = 0 point of the same pair, context, batch and card."""
    spec = [r for r in rows if r["kind"] == "spec" and "energy_tok_meas" in r]
    baseline = {_setting(r): r for r in spec if r["k"] == 0}
    out = []
    for r in spec:
        base = baseline.get(_setting(r))
        if r["k"] == 0 or base is None:
            continue
        row = {
            "label": r["label"],
            "pair": f"{r['group']}+{r.get('draft')}",
            "context": "ragged" if r.get("contexts") else r.get("context"),
            "batch": r.get("batch"),
            "k": r["k"],
            "alpha": r["alpha"],
            "fold": r.get("fold"),
            "card": r["card"],
        }
        for key, what in (("energy", "energy_tok"), ("time", "time_tok")):
            meas = base[f"{what}_meas"] / r[f"{what}_meas"]
            pred = base[f"{what}_pred"] / r[f"{what}_pred"]
            spreads = (base.get(f"{key}_spread", 0.0), r.get(f"{key}_spread", 0.0))
            spread = None if None in spreads else sum(spreads)  # None: a point's spread could not be measured
            away = spread is not None and abs(meas - 1) > SPREADS * spread * meas
            row.update(
                {
                    f"{key}_ratio_meas": meas,
                    f"{key}_ratio_pred": pred,
                    f"{key}_ratio_err": pred / meas - 1,
                    f"{key}_ratio_spread": spread,
                    f"{key}_right_side": (pred > 1) == (meas > 1) if away else None,
                }
            )
        out.append(row)
    return out


def crossover_of(batches: list[int], ratios: list[float]) -> float | str | None:
    """The batch where the ratio first falls from >= 1 to < 1 (interpolated in log batch), "below" the smallest
    batch, or None (never under 1)."""
    if ratios[0] < 1:
        return "below"
    for (b0, r0), (b1, r1) in zip(zip(batches, ratios), zip(batches[1:], ratios[1:])):
        if r0 >= 1 > r1:
            frac = (r0 - 1) / (r0 - r1)
            return math.exp(math.log(b0) + frac * (math.log(b1) - math.log(b0)))
    return None


def _agrees(meas, pred, batches: list[int]) -> bool:
    """Within the tolerance where both cross. Where one is "below" the smallest batch, the other must cross within
    the tolerance of that batch; where one never crosses, the other must cross within the tolerance of the largest
    batch measured (a crossing just past the measured range is not a miss)."""
    if meas == pred:  # both below, or both never
        return True
    if isinstance(meas, float) and isinstance(pred, float):
        return max(meas, pred) / min(meas, pred) <= CROSSOVER_TOLERANCE
    other = pred if meas in ("below", None) else meas
    if "below" in (meas, pred):
        return isinstance(other, float) and other <= CROSSOVER_TOLERANCE * batches[0]
    return other * CROSSOVER_TOLERANCE >= batches[-1]


def _geometric_means(by_batch: dict[int, list[dict]], batches: list[int], name: str) -> list[float]:
    return [math.exp(sum(math.log(r[name]) for r in by_batch[b]) / len(by_batch[b])) for b in batches]


def crossover_check(ratios: list[dict]) -> list[dict]:
    """For each (pair, context, k, alpha) measured at two or more batches: the energy and the latency crossover batch,
    measured and predicted, and whether they agree within CROSSOVER_TOLERANCE. A ratio is of two points of one card,
    so a card's energy scale cancels in it; a batch measured on several cards takes the geometric mean of its ratios
    (two cards' draws of the same ratio side by side would otherwise make a crossing of their own)."""
    series: dict[tuple, dict[int, list[dict]]] = {}
    for r in ratios:
        series.setdefault((r["pair"], str(r["context"]), r["k"], r["alpha"]), {}).setdefault(r["batch"], []).append(r)
    out = []
    for (pair, context, k, alpha), by_batch in sorted(series.items()):
        batches = sorted(by_batch)
        if len(batches) < 2:
            continue

        row = {"pair": pair, "context": context, "k": k, "alpha": alpha, "batches": batches}
        for key, name in (("energy", "energy"), ("time", "latency")):
            meas = crossover_of(batches, _geometric_means(by_batch, batches, f"{key}_ratio_meas"))
            pred = crossover_of(batches, _geometric_means(by_batch, batches, f"{key}_ratio_pred"))
            row[name] = {"measured": meas, "predicted": pred, "ok": _agrees(meas, pred, batches)}
        out.append(row)
    return out


def serving_summary(ratios: list[dict]) -> dict:
    """Errors of the predicted ratios, over all and per batch, and how many away-from-1 ratios the prediction puts
    on the measured side."""
    out: dict = {"points": len(ratios)}
    for key in ("energy", "time"):
        errs = [r[f"{key}_ratio_err"] for r in ratios]
        sides = [r[f"{key}_right_side"] for r in ratios if r[f"{key}_right_side"] is not None]
        by_batch = {}
        for b in sorted({r["batch"] for r in ratios}):
            by_batch[str(b)] = error_stats([r[f"{key}_ratio_err"] for r in ratios if r["batch"] == b])
        out[key] = {
            "errors": error_stats(errs) if errs else {},
            "by_batch": by_batch,
            "right_side": sum(sides),
            "away_from_1": len(sides),
        }
    return out


def serving_check(rows: list[dict]) -> dict | None:
    """The ratios, crossovers and their summary of a set of prediction rows; None where no speculative point has a
    standard-decoding point beside it."""
    ratios = speculation_ratios(rows)
    if not ratios:
        return None
    return {"ratios": ratios, "crossovers": crossover_check(ratios), "summary": serving_summary(ratios)}
