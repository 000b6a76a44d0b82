"""How far a prediction can be trusted: 90 % bands from how far measurements fell from predictions.

A band is the 5th and 95th percentiles of measured / predicted over points the prediction did not see. For a
calibration they are its cross-validation points (shivam.calibrate.evaluate.cross_validate): each model left out
whole, except a model without which the other models cannot identify a parameter that the whole data identifies (in
a small suite, the one large model that carries the verify widths, batches and contexts), whose points are left out
one at a time, so that every fold is a fit of the calibration's own model. On the committed H200 data, quick-suite
calibrations of three cards banded this way contain 86 % (energy) and 90 % (time) of the other 162 measured points
(docs/validation.md, "90 % bands"). Predicting for a card other than those measured, the card's energy scale is
unknown, so the band takes the held-out predictions without their card factors (model error plus card-to-card
spread). For a GPU known only by its datasheet, the band is how far the datasheet-only prediction fell from what the
measured GPU models drew and took, per engine (stored in the engine profile as datasheet_band; band_over_gpus where
more than one GPU model was measured, each weighing the same).

A suite of a few models cross-validates over few points, and those points are not the ones a user asks about: on
one card a quick calibration's 14 cross-validation points gave x 0.98-1.02 in energy while points outside the suite
erred by up to 13 %; on others its 15 folds put the time band's low end at x 0.83, its worst fold, while held-out
points erred by at most 4.4 %. So a quick calibration's band is its engine's quick_calibration_band instead: the
percentiles of measured / predicted over held-out probe sets that quick calibrations of other cards predicted,
each set written before its card measured it (validation/band_coverage.py --quick-band); an engine without one
keeps the calibration's own cross-validation band.
"""

from __future__ import annotations

import numpy as np

from shivam.specs import Band

LOW, HIGH = 0.05, 0.95


def _ratios(rows: list[dict], key: str, with_card_factors: bool) -> np.ndarray:
    unscale = key == "energy" and not with_card_factors
    return np.array([r[f"{key}_meas"] / (r[f"{key}_pred"] / (r["card_factor"] if unscale else 1.0)) for r in rows])


def band_of_rows(rows: list[dict], basis: str, with_card_factors: bool = True) -> Band:
    """The 90 % band of prediction rows (shivam.calibrate.evaluate.predictions): percentiles of measured / predicted
    in energy and time; without card factors each row's energy is predicted as for a typical card."""

    def q(x):
        return float(np.quantile(x, LOW)), float(np.quantile(x, HIGH))

    return Band(
        energy=q(_ratios(rows, "energy", with_card_factors)),
        time=q(_ratios(rows, "time", True)),
        points=len(rows),
        basis=basis,
    )


def band_over_gpus(rows_by_gpu: dict[str, list[dict]], basis: str) -> Band:
    """The 90 % band of prediction rows measured on several GPU models, each GPU model weighing the same whatever
    its number of points (a band for a GPU not measured, or for a calibration of any card: one model's many points
    must not stand for every GPU). Weighted percentiles: each row carries 1 / (GPUs x its GPU's rows), placed at the
    middle of its share of the cumulative weight."""
    ratios = {key: [] for key in ("energy", "time")}
    weights = []
    for rows in rows_by_gpu.values():
        for key in ratios:
            ratios[key].append(_ratios(rows, key, True))
        weights.append(np.full(len(rows), 1.0 / (len(rows) * len(rows_by_gpu))))
    w = np.concatenate(weights)

    def q(x):
        order = np.argsort(x)
        middle = np.cumsum(w[order]) - w[order] / 2
        return float(np.interp(LOW, middle, x[order])), float(np.interp(HIGH, middle, x[order]))

    return Band(
        energy=q(np.concatenate(ratios["energy"])), time=q(np.concatenate(ratios["time"])), points=len(w), basis=basis
    )


def coverage(rows: list[dict], band: Band, with_card_factors: bool = True) -> dict[str, float]:
    """The fraction of rows whose measurement lies inside [prediction x low, prediction x high]."""
    out = {}
    for key, (lo, hi) in (("energy", band.energy), ("time", band.time)):
        r = _ratios(rows, key, with_card_factors)
        out[key] = float(np.mean((r >= lo) & (r <= hi))) if r.size else float("nan")
    return out


def quick_band(band: Band | None, engine_band: Band | None) -> Band | None:
    """The band of a quick calibration: its engine's quick_calibration_band where the engine has one (whether or
    not its own cross-validation gave one: that band is the method's track record), else its own (`band`)."""
    if engine_band is None:
        return band
    return engine_band.model_copy(update={"basis": f"the engine's quick-calibration band: {engine_band.basis}"})
