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
H200 measured, per engine (stored in the engine profile as datasheet_band).

A suite of a few models cross-validates over few points, and its points are easier than the ones a user asks
about: on one card a quick calibration's 14 cross-validation points gave x 0.98-1.02 in energy while points outside
the suite erred by up to 13 %. So a quick calibration's band is at least its engine's calibration_band_floor: the
percentiles of measured / predicted over the points outside the suite of quick calibrations on the development data
(validation/band_coverage.py --floor), the union of the two intervals.
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


def coverage(rows: list[dict], band: Band, with_card_factors: bool = True) -> dict[str, float]:
    """The fraction of rows whose measurement lies inside [prediction x low, prediction x high]."""
    out = {}
    for key, (lo, hi) in (("energy", band.energy), ("time", band.time)):
        r = _ratios(rows, key, with_card_factors)
        out[key] = float(np.mean((r >= lo) & (r <= hi))) if r.size else float("nan")
    return out


def widened(band: Band | None, floor: Band | None) -> Band | None:
    """The union of a band and a floor band (each side the wider), its basis naming both; a missing band stays
    missing (a calibration written without one)."""
    if floor is None or band is None:
        return band

    def union(a, b):
        return min(a[0], b[0]), max(a[1], b[1])

    return Band(
        energy=union(band.energy, floor.energy),
        time=union(band.time, floor.time),
        points=band.points,
        basis=f"{band.basis}; at least the engine's calibration band floor ({floor.basis})",
    )
