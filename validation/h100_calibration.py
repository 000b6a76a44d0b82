"""The bundled H100 SXM calibration of the reference engine, and how far it carries to a card it was not fitted on.

    .venv/bin/python validation/h100_calibration.py           # the figures
    .venv/bin/python validation/h100_calibration.py --write   # store its held-out band in the bundled calibration

hardware/calibrated/h100-sxm-ref.json is the recipe h100-sxm-ref fitted over five H100 cards' quick suites with one
energy scale per card. What a user of another H100 gets is that calibration with no card measured. Four of the cards
also measured held-out probe sets after their quick suite (GPU-778b0c9e: sets 12, 10 and 9; GPU-f6c727ca and
GPU-ffb5d03d: set 12, the latter's as `shivam validate` printed it, its results file lost; GPU-0993e514: set 13),
shapes, batches and models no suite has. Each of them is predicted by the recipe's fit of the other cards' suites,
with no card factor: a card the calibration never saw, at points it never saw. The 5th-95th percentiles of
measured / predicted over those points, each card weighing the same, are the band --write stores; the fit's own
leave-one-model-out band is printed beside it for comparison.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from shivam.calibrate import error_stats, fit_results
from shivam.calibrate.band import band_over_gpus, coverage
from shivam.calibrate.evaluate import predictions
from shivam.specs.calibration import load_recipe

ROOT = Path(__file__).resolve().parent.parent
FOLDER = "validation/results/h100-calibrate"
CALIBRATION = ROOT / "hardware/calibrated/h100-sxm-ref.json"
# the H100 cards that measured held-out sets after their quick suite, and those sets (band_coverage.py, beside this
# file, keeps every card's)
sys.path.insert(0, str(Path(__file__).resolve().parent))
from band_coverage import HELD_OUT_SETS, OTHER_GPUS, held_out_measurements  # noqa: E402

HELD_OUT = {card: HELD_OUT_SETS["ref"][card][1] for card in OTHER_GPUS}


def rows_of_unseen_cards() -> dict[str, list[dict]]:
    """Per card, its held-out points predicted by the recipe fitted without that card (no card factor)."""
    recipe = load_recipe("h100-sxm-ref")
    out = {}
    for card, sets in HELD_OUT.items():
        train = [str(ROOT / f) for f in recipe.results if card.removeprefix("GPU-") not in f]
        fitted = fit_results(train, recipe=recipe, strict="hold", band=False)
        out[card] = predictions(held_out_measurements(ROOT / FOLDER, sets, "ref", card), fitted.result.params)
        held = ", ".join(sorted(fitted.result.held)) or "none"
        print(f"{card}: fitted on {len(train)} cards' suites ({fitted.points} points; held besides the recipe: {held})")
    return out


def sets_of(card: str) -> list[str]:
    return [s.split("-")[1] for s in HELD_OUT[card]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the held-out band in the bundled calibration")
    args = parser.parse_args()
    by_card = rows_of_unseen_cards()
    for card, rows in by_card.items():
        e, t = error_stats([r["energy_err"] for r in rows]), error_stats([r["time_err"] for r in rows])
        print(
            f"{card}, {len(rows)} held-out points, a card the fit never saw: energy {100 * e['median']:.1f} % median / "
            f"{100 * e['max']:.1f} % max, time {100 * t['median']:.1f} % / {100 * t['max']:.1f} %"
        )
    points = sum(len(r) for r in by_card.values())
    band = band_over_gpus(
        by_card,
        f"5th-95th percentiles of measured / predicted over {points} held-out points of {len(by_card)} H100 cards "
        f"(probe sets {'; '.join(', '.join(sets_of(c)) for c in by_card)}), each card predicted by this recipe's fit "
        f"of the other cards' quick suites with no card factor, each card weighing the same "
        f"(validation/h100_calibration.py)",
    )
    print(
        f"held-out band: energy x {band.energy[0]:.3f}-{band.energy[1]:.3f}, time x {band.time[0]:.3f}-"
        f"{band.time[1]:.3f}"
    )
    everything = [r for rows in by_card.values() for r in rows]
    recipe = load_recipe("h100-sxm-ref")
    own = fit_results([str(ROOT / f) for f in recipe.results], recipe=recipe, band=True).calibration.band
    for name, b in (("the fit's own cross-validation band", own), ("the held-out band", band)):
        c = coverage(everything, b)
        print(
            f"{name} (energy x {b.energy[0]:.3f}-{b.energy[1]:.3f}, time x {b.time[0]:.3f}-{b.time[1]:.3f}) holds "
            f"{100 * c['energy']:.0f} % / {100 * c['time']:.0f} % of the {points} points"
        )
    if args.write:
        cal = json.loads(CALIBRATION.read_text())
        cal["band"] = band.model_dump()
        CALIBRATION.write_text(json.dumps(cal, indent=1) + "\n")


if __name__ == "__main__":
    main()
