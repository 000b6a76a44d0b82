"""Coverage of the 90 % band of a `shivam calibrate --quick` calibration, on the committed H200 and H100 data.

    .venv/bin/python validation/band_coverage.py            # development set: validation/results/h200/
    .venv/bin/python validation/band_coverage.py --holdout  # the quick calibration of GPU-d0ad0d1f and its 17
                                                            # held-out points (validation/results/h200-calibrate/)
    .venv/bin/python validation/band_coverage.py --holdout --suite-results QUICK.jsonl --held-out POINTS.jsonl
    .venv/bin/python validation/band_coverage.py --calibration CAL.json --held-out POINTS.jsonl  # its stored band
    .venv/bin/python validation/band_coverage.py --quick-band [--write]  # the graph engine's quick-calibration band
    .venv/bin/python validation/band_coverage.py --leave-one-card-out    # that band, each card's from the others'
    .venv/bin/python validation/band_coverage.py --engine ref --quick-band [--write]  # the same for the ref engine
    .venv/bin/python validation/band_coverage.py --engine ref --errors   # each held-out set's errors, by its card

--holdout refits the suite's measurements as `shivam calibrate` does and estimates the band again; --calibration
takes a calibration file's parameters and band as they are, and the band the engine now gives a quick calibration.
--quick-band pools measured / predicted over the held-out probe sets of five cards, each predicted by the quick
calibration of the card that measured it (refitted here from its committed quick-suite measurements; for
GPU-a140912a, whose raw files did not come back from the device, the predictions its check printed), and prints
the 5th-95th percentiles: the band of every quick calibration (shivam.calibrate.band.quick_band); --write stores
them in the engine's profile as quick_calibration_band (--engine: graph, the default, or ref, whose quick calibrations
are refitted with the ref profile's calibration_priors as `shivam calibrate` holds them; its cards are H200s and
H100s, and the band weighs each GPU model the same: shivam.calibrate.band.band_over_gpus).

Development set: three cards measured the quick suite (quick.jsonl, quick-repeat.jsonl on GPU-9ad100d2,
quick-extensions.jsonl on GPU-4d8e221f). For each, the points of the `calibrate --quick` suite measured on that card
(llama-68m, measured only in steps.jsonl, taken from there) are fitted as `shivam calibrate` fits them, the band is
estimated from them alone, and every other graph-engine model point of validation/results/h200/ is predicted: 162
points of 13 models, shapes and dtypes the suite does not have. Energy measured on another card is brought to the
calibrated card's scale with the bundled calibration's card factors (the card-to-card spread is not what a one-card
calibration predicts); time is taken as measured. The band is that of shivam.calibrate.workflow.cross_validated_band
and, for comparison, the plain leave-one-model-out band.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import numpy as np

from shivam.calibrate.band import band_of_rows, band_over_gpus, coverage, quick_band
from shivam.calibrate.evaluate import leave_one_group_out, predictions
from shivam.calibrate.fit import base_params, fit
from shivam.calibrate.results import Measured, load_results, printed_measurements
from shivam.calibrate.workflow import cross_validated_band
from shivam.errors import ShivamError
from shivam.specs import Band, load_calibration, load_engine, load_gpu, resolve_params
from shivam.validate.calibration import calibration_points, gpu_priors

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "validation/results/h200"
CARDS = {  # the card of each quick-suite measurement, as load_results names it
    "quick.jsonl": "quick.jsonl campaign of 2026-11-28T14:00",
    "quick-repeat.jsonl": "GPU-9ad100d2-4c54-b79f-7846-112d16adc317",
    "quick-extensions.jsonl": "GPU-4d8e221f-e61a-1967-e341-c699e1a837be",
}


def calibrate_like(train, engine: str = "graph", gpu: str = "h200"):
    """The fit and band of `shivam calibrate` (shivam.validate.calibration.calibrate) on these points."""
    base = base_params(gpu, engine)
    priors = gpu_priors(engine, gpu)
    result = fit(train, base, dict(priors), strict="hold", card_factors=False)
    fix = {**priors, **result.held}
    _, band, _ = cross_validated_band(train, base, fix, False, basis=f"{gpu}/{engine} fit")
    models = [m for m in train if m.group != "stage1"]
    lomo = band_of_rows(leave_one_group_out(models, base, fix, False), "leave-one-model-out")
    return result, {"cross_validated_band": band, "leave-one-model-out": lomo}


def report(name, params, bands, test) -> dict:
    rows = predictions(test, params)
    out = {"calibration": name, "held_out_points": len(rows)}
    for label, band in bands.items():
        cov = coverage(rows, band)
        inside = {k: int(round(v * len(rows))) for k, v in cov.items()}
        out[label] = {"energy": list(band.energy), "time": list(band.time), "coverage": cov, "inside": inside}
        print(
            f"{name:44s} {label:22s} energy x {band.energy[0]:.3f}-{band.energy[1]:.3f} holds "
            f"{inside['energy']:3d}/{len(rows)} ({100 * cov['energy']:.0f} %); time x {band.time[0]:.3f}-"
            f"{band.time[1]:.3f} holds {inside['time']:3d}/{len(rows)} ({100 * cov['time']:.0f} %)"
        )
    return out


def quick_calibrations():
    """(name, card, the quick calibration's fit and bands, the points outside its suite) of each development card."""
    files = sorted(str(p) for p in DATA.glob("*.jsonl"))
    data, _ = load_results(files, "graph")
    factors = json.loads((ROOT / "hardware/calibrated/h200-graph.json").read_text())["card_factors"]
    suite = {p.label() for p in calibration_points(load_gpu("h200"), quick=True)}

    def in_suite(m):
        return m.point.label() in suite and m.point.weights_dtype == "bf16" and m.point.kv_dtype == "bf16"

    def on_card(m, card):
        return dataclasses.replace(m, energy_j=m.energy_j * factors[card] / factors[m.card], card=card)

    for name, card in CARDS.items():
        measured, _ = load_results([str(DATA / name)], "graph")
        train = [m for m in measured if m.card == card and in_suite(m)]
        missing = suite - {m.point.label() for m in train}
        train += [on_card(next(m for m in data if in_suite(m) and m.point.label() == lab), card) for lab in missing]
        test = [on_card(m, card) for m in data if m.group != "stage1" and not in_suite(m)]
        result, bands = calibrate_like(train)
        yield name, card, result, bands, test


HELD_OUT = ROOT / "validation/results/h200-calibrate"
H100 = ROOT / "validation/results/h100-calibrate"
# per engine, card: (its quick-suite measurements, the held-out probe sets it measured after its calibration), in
# HELD_OUT unless the card is in OTHER_GPUS
HELD_OUT_SETS = {
    "graph": {
        "GPU-d0ad0d1f": ("h200-d0ad0d1f-quick.jsonl", ["holdout.jsonl"]),
        "GPU-aea39601": ("h200-aea39601-quick.jsonl", ["holdout-aea39601.jsonl", "holdout-2-aea39601.jsonl"]),
        "GPU-3cad716a": ("h200-3cad716a-quick.jsonl", ["holdout-3-3cad716a.jsonl"]),
        "GPU-c0345594": ("h200-c0345594-quick.jsonl", ["holdout-5-c0345594.jsonl"]),
        "GPU-1e4d308b": ("h200-1e4d308b-quick.jsonl", ["holdout-6-1e4d308b.jsonl"]),
        "GPU-9eab89f4": ("h200-9eab89f4-quick.jsonl", ["holdout-7-9eab89f4.jsonl"]),
    },
    "ref": {
        "GPU-64aaaa89": ("h200-64aaaa89-quick-ref.jsonl", ["holdout-8-ref-64aaaa89.jsonl"]),
        "GPU-ed1f54de": ("h200-ed1f54de-quick-ref.jsonl", ["holdout-9-ref-ed1f54de.jsonl"]),
        "GPU-16c7c2a1": ("h200-16c7c2a1-quick-ref.jsonl", ["holdout-10-ref-16c7c2a1.jsonl"]),
        "GPU-bebd4d52": ("h200-bebd4d52-quick-ref.jsonl", ["holdout-13-ref-bebd4d52.jsonl"]),
        # H100 SXM cards; GPU-f6c727ca's suite lacks one point (it ran out of memory), as `calibrate --refit` fits it
        "GPU-778b0c9e": (
            "h100-778b0c9e-quick-ref.jsonl",
            ["holdout-12-ref-778b0c9e.jsonl", "holdout-10-ref-778b0c9e.jsonl", "holdout-9-ref-778b0c9e.jsonl"],
        ),
        "GPU-f6c727ca": ("h100-f6c727ca-quick-ref.jsonl", ["holdout-12-ref-f6c727ca.jsonl"]),
        "GPU-ffb5d03d": ("h100-ffb5d03d-quick-ref.jsonl", ["holdout-12-ref-log-ffb5d03d.txt"]),
        "GPU-0993e514": ("h100-0993e514-quick-ref.jsonl", ["holdout-13-ref-0993e514.jsonl"]),
    },
}
# card: (GPU, folder) of the cards whose quick suite is an H100's
OTHER_GPUS = {card: ("h100-sxm", H100) for card, (suite, _) in HELD_OUT_SETS["ref"].items() if suite[:5] == "h100-"}
# held-out sets whose results file did not come back from the device: the table `shivam validate` printed, and the
# probe file its rows are the points of
PRINTED_SETS = {"holdout-12-ref-log-ffb5d03d.txt": "calibrate-holdout-12-ref.json"}


def gpu_and_folder(card: str) -> tuple[str, Path]:
    return OTHER_GPUS.get(card, ("h200", HELD_OUT))


def by_gpu(by_card: dict[str, list]) -> dict[str, list]:
    """The cards' lists joined per GPU model (its id)."""
    out: dict[str, list] = {}
    for card, items in by_card.items():
        out.setdefault(gpu_and_folder(card)[0], []).extend(items)
    return out


# cards whose raw files did not come back: what check printed
PRINTED_CHECKS = {"graph": {"GPU-a140912a": "check-a140912a.txt"}, "ref": {}}


def printed_rows(path: Path) -> list[dict]:
    """Measured and predicted time and energy per point from a table `shivam check` printed (ms and J per call)."""
    rows = []
    for line in path.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if line.startswith("│ ") and len(cells) >= 6 and cells[3].endswith("%"):
            t_pred, t_meas, e_pred, e_meas = (float(cells[i]) for i in (1, 2, 4, 5))
            rows.append({"label": cells[0], "time_pred": t_pred, "time_meas": t_meas, "energy_pred": e_pred,
                         "energy_meas": e_meas, "card_factor": 1.0})  # fmt: skip
    return rows


def held_out_measurements(folder: Path, names: list[str], engine: str, card: str) -> list[Measured]:
    """The measured points of a card's held-out sets: its results files, or the tables validate printed."""
    files = [str(folder / n) for n in names if n not in PRINTED_SETS]
    test = load_results(files, engine)[0] if files else []
    for name in (n for n in names if n in PRINTED_SETS):
        test += printed_measurements(folder / name, ROOT / "validation/probes" / PRINTED_SETS[name], card, engine)
    return test


def own_quick_calibrations(engine: str):
    """(card, its folder, its held-out sets, the parameters of its quick calibration refitted from its suite) of each
    card that measured held-out sets."""
    for card, (suite, sets) in HELD_OUT_SETS[engine].items():
        gpu, folder = gpu_and_folder(card)
        train, _ = load_results([str(folder / suite)], engine)
        yield card, folder, sets, calibrate_like(train, engine, gpu)[0].params


def held_out_rows_by_card(engine: str = "graph") -> dict[str, list[dict]]:
    """Every held-out probe point of each card, predicted by that card's own quick calibration."""
    by_card = {
        card: predictions(held_out_measurements(folder, sets, engine, card), params)
        for card, folder, sets, params in own_quick_calibrations(engine)
    }
    for card, name in PRINTED_CHECKS[engine].items():
        by_card[card] = printed_rows(HELD_OUT / name)
    return by_card


def held_out_errors(engine: str = "graph") -> dict:
    """Each card's held-out sets, each predicted by that card's own quick calibration with no card factor (what
    `shivam calibrate --quick` and then `shivam check` give on that card): median and largest errors per set."""
    out = {}
    for card, folder, sets, params in own_quick_calibrations(engine):
        for name in sets:
            rows = predictions(held_out_measurements(folder, [name], engine, card), params)
            e, t = (np.abs([r[f"{k}_err"] for r in rows]) for k in ("energy", "time"))
            out[f"{card} {name}"] = stats = {
                "points": len(rows),
                "energy": [float(np.median(e)), float(e.max())],
                "time": [float(np.median(t)), float(t.max())],
            }
            (e_med, e_max), (t_med, t_max) = (100 * np.array(stats[k]) for k in ("energy", "time"))
            print(
                f"{card} {name:34s} {len(rows):3d} points: energy {e_med:.1f} % median / {e_max:.1f} % max, "
                f"time {t_med:.1f} % / {t_max:.1f} %"
            )
    return out


def band_of_cards(by_card: dict[str, list[dict]], basis: str) -> Band:
    """The band of these cards' held-out rows, each GPU model weighing the same (shivam.calibrate.band.band_over_gpus;
    with one GPU model, plain percentiles of the pooled rows)."""
    rows = by_gpu(by_card)
    return band_of_rows(next(iter(rows.values())), basis) if len(rows) == 1 else band_over_gpus(rows, basis)


def leave_one_card_out(engine: str = "graph") -> dict:
    """The quick-calibration band's coverage of each card's held-out points when the band is estimated from the
    other cards' points only (as it was for a card measured after it), and pooled over all cards."""
    by_card = held_out_rows_by_card(engine)
    out, inside, total = {}, {"energy": 0, "time": 0}, 0
    for card, rows in by_card.items():
        rest = {other: rs for other, rs in by_card.items() if other != card}
        others = sum(len(rs) for rs in rest.values())
        band = band_of_cards(rest, f"the held-out points of the cards other than {card}")
        cov = coverage(rows, band)
        counts = {k: int(round(v * len(rows))) for k, v in cov.items()}
        for k in inside:
            inside[k] += counts[k]
        total += len(rows)
        out[card] = {"points": len(rows), "energy": list(band.energy), "time": list(band.time), "inside": counts}
        print(
            f"{card}: band of {others} other points, energy x {band.energy[0]:.3f}-{band.energy[1]:.3f} holds "
            f"{counts['energy']}/{len(rows)}, time x {band.time[0]:.3f}-{band.time[1]:.3f} holds "
            f"{counts['time']}/{len(rows)}"
        )
    print(
        f"pooled over {len(by_card)} cards: energy {inside['energy']}/{total} "
        f"({100 * inside['energy'] / total:.0f} %), time {inside['time']}/{total} "
        f"({100 * inside['time'] / total:.0f} %)"
    )
    out["pooled"] = {"points": total, "inside": inside}
    return out


def quick_calibration_band(engine: str = "graph") -> Band:
    """measured / predicted over the held-out probe sets of the engine's cards, pooled: 5th-95th percentiles."""
    by_card = held_out_rows_by_card(engine)
    rows = sum(len(r) for r in by_card.values())
    per_gpu = by_gpu({card: [card] for card in by_card})
    cards = " and ".join(f"{len(c)} {load_gpu(gpu).name} cards" for gpu, c in per_gpu.items())
    weighing = ", each GPU model weighing the same," if len(per_gpu) > 1 else ","
    return band_of_cards(
        by_card,
        f"5th-95th percentiles of measured / predicted over {rows} held-out points of {cards}{weighing} each "
        f"predicted by the quick calibration of the card that measured it, the points written before the card "
        f"measured them (validation/band_coverage.py{f' --engine {engine}' * (engine != 'graph')} --quick-band)",
    )


def development() -> list[dict]:
    out = [
        report(f"{name} ({card[:12]})", result.params, bands, test)
        for name, card, result, bands, test in quick_calibrations()
    ]
    for label in ("cross_validated_band", "leave-one-model-out"):
        mean = {k: float(np.mean([o[label]["coverage"][k] for o in out])) for k in ("energy", "time")}
        print(f"mean coverage, {label}: energy {100 * mean['energy']:.1f} %, time {100 * mean['time']:.1f} %")
    return out


def holdout(suite_results: str, held_out: list[str]) -> dict:
    train, _ = load_results([suite_results], "graph")
    test, _ = load_results(held_out, "graph")
    result, bands = calibrate_like(train)
    return report(f"{Path(suite_results).name} -> {len(test)} held-out points", result.params, bands, test)


def stored(calibration: str, held_out: list[str]) -> dict:
    cal = load_calibration(calibration)
    test, _ = load_results(held_out, cal.engine)
    params = resolve_params(load_gpu(cal.gpu), cal.engine, calibration)
    bands = {
        "stored band": cal.band,
        "the engine's quick band": quick_band(cal.band, load_engine(cal.engine).quick_calibration_band),
    }
    return report(f"{Path(calibration).name} -> {len(test)} held-out points", params, bands, test)


def main() -> None:
    folder = ROOT / "validation/results/h200-calibrate"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", action="store_true", help="a quick calibration's held-out points instead")
    parser.add_argument("--suite-results", default=str(folder / "h200-d0ad0d1f-quick.jsonl"), help="with --holdout")
    parser.add_argument("--held-out", nargs="+", default=[str(folder / "holdout.jsonl")], help="held-out results")
    parser.add_argument("--calibration", help="the band stored in this calibration file, on --held-out")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--quick-band", action="store_true", help="the engine's quick-calibration band")
    parser.add_argument("--write", action="store_true", help="with --quick-band: store it in the engine's profile")
    parser.add_argument("--engine", default="graph", choices=sorted(HELD_OUT_SETS), help="with --quick-band and "
                        "--leave-one-card-out: whose quick calibrations")  # fmt: skip
    parser.add_argument(
        "--leave-one-card-out", action="store_true", help="each card's coverage by the band of the other cards' points"
    )
    parser.add_argument(
        "--errors", action="store_true", help="each card's held-out sets predicted by its own quick calibration"
    )
    args = parser.parse_args()
    if args.write and not args.quick_band:
        parser.error("--write stores the quick-calibration band: give it with --quick-band")
    if args.engine != "graph" and not (args.quick_band or args.leave_one_card_out or args.errors):
        parser.error("--engine chooses the quick calibrations of --quick-band, --leave-one-card-out or --errors")
    if args.quick_band:
        band = quick_calibration_band(args.engine)
        print(
            f"quick-calibration band ({band.points} points): energy x {band.energy[0]:.3f}-{band.energy[1]:.3f}, "
            f"time x {band.time[0]:.3f}-{band.time[1]:.3f}"
        )
        figures = band.model_dump()
        if args.write:
            path = ROOT / f"hardware/engines/{args.engine}.json"
            profile = json.loads(path.read_text())
            profile.pop("calibration_band_floor", None)
            profile["quick_calibration_band"] = figures
            path.write_text(json.dumps(profile, indent=2) + "\n")
    elif args.leave_one_card_out:
        figures = leave_one_card_out(args.engine)
    elif args.errors:
        figures = held_out_errors(args.engine)
    elif args.calibration:
        figures = stored(args.calibration, args.held_out)
    elif args.holdout:
        figures = holdout(args.suite_results, args.held_out)
    else:
        figures = development()
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=1) + "\n")


if __name__ == "__main__":
    try:
        main()
    except (ShivamError, OSError) as exc:  # a missing or unreadable file, a results file of another engine
        print(f"band_coverage: {exc}", file=sys.stderr)
        sys.exit(2)
