"""The reference engine's datasheet-only band from every GPU model it was measured on, each weighing the same.

    .venv/bin/python validation/datasheet_band.py            # per-GPU bands, each GPU's points against the others'
    .venv/bin/python validation/datasheet_band.py --write    # store the pooled band in hardware/engines/ref.json
    .venv/bin/python validation/datasheet_band.py --transfer # the H200's calibration on the H100's datasheet figures

A GPU known only by its datasheet gets the engine's datasheet band: how far datasheet-only predictions fell from
measurements. Taken from one GPU model, it assumes every other GPU's datasheet figures err as that one's do; with a
second GPU model measured, that assumption is tested (each GPU's points against the band of the other) and the band
is taken over both, each GPU model weighing the same (shivam.calibrate.band.band_over_gpus). The points: the H200's
93 steps of `results/h200-ref/steps_stage3.jsonl` and the H100 SXM's 114 quick-suite points of
`results/h100-calibrate/` (five cards), each predicted from its own GPU file and the ref profile's
starting values alone (`shivam check FILE --gpu GPU --engine ref --no-calibration`).

--transfer predicts the H100's points with the H200's ref calibration (its fitted efficiencies, per-kernel and
per-program costs, power and energy per byte and per FLOP) on the H100's own datasheet figures (bandwidth, peak
rates, multiprocessors, memory, power limit): how far a calibration of one Hopper GPU carries to another.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from shivam.calibrate import check_results
from shivam.calibrate.band import band_of_rows, band_over_gpus, coverage
from shivam.calibrate.evaluate import predictions
from shivam.calibrate.results import load_results
from shivam.specs import load_calibration, load_gpu
from shivam.specs.params import make_params

ROOT = Path(__file__).resolve().parent.parent
SOURCES = {
    "h200": ["validation/results/h200-ref/steps_stage3.jsonl"],
    "h100-sxm": [
        "validation/results/h100-calibrate/h100-ad369a38-quick-ref.jsonl",
        "validation/results/h100-calibrate/h100-f6c727ca-quick-ref.jsonl",
        "validation/results/h100-calibrate/h100-778b0c9e-quick-ref.jsonl",
        "validation/results/h100-calibrate/h100-ffb5d03d-quick-ref.jsonl",
        "validation/results/h100-calibrate/h100-0993e514-quick-ref.jsonl",
    ],
}


def figures() -> dict:
    rows = {
        gpu: check_results([str(ROOT / f) for f in files], "ref", gpu=gpu, calibration=False)["points"]
        for gpu, files in SOURCES.items()
    }
    rows = {gpu: [r for r in rs if r["group"] != "stage1"] for gpu, rs in rows.items()}
    bands = {gpu: band_of_rows(rs, gpu) for gpu, rs in rows.items()}
    cross = {gpu: coverage(rows[gpu], band_over_gpus({g: rows[g] for g in rows if g != gpu}, "")) for gpu in rows}
    counts = ", ".join(f"{len(rs)} {gpu}" for gpu, rs in rows.items())
    pooled = band_over_gpus(
        rows,
        f"5th-95th percentiles of measured / predicted over the reference-engine points of {len(rows)} GPU models "
        f"({counts}; validation/datasheet_band.py), each predicted from its own GPU file and this profile's starting "
        f"values alone, each GPU model weighing the same; each GPU's points against the band of the other: "
        + "; ".join(
            f"{gpu} {100 * c['energy']:.0f} % in energy, {100 * c['time']:.0f} % in time" for gpu, c in cross.items()
        )
        + ". Applied to every GPU known only by its datasheet.",
    )
    return {"bands": bands, "cross": cross, "pooled": pooled}


def transfer() -> dict:
    """Measured / predicted for the H100's points, predicted by the H200's ref calibration on the H100's GPU file."""
    measured, _ = load_results([str(ROOT / f) for f in SOURCES["h100-sxm"]])
    h200 = load_calibration(ROOT / "hardware/calibrated/h200-ref.json")
    params = make_params(load_gpu("h100-sxm"), "ref", h200.model_copy(update={"gpu": "h100-sxm"}), "h200-ref.json")
    rows = predictions(measured, params)
    return {key: np.array([r[f"{key}_meas"] / r[f"{key}_pred"] for r in rows]) for key in ("energy", "time")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="store the pooled band in hardware/engines/ref.json")
    parser.add_argument("--transfer", action="store_true", help="the H200's calibration on the H100's GPU file")
    args = parser.parse_args()
    if args.transfer:
        for key, r in transfer().items():
            err = np.abs(1 / r - 1)
            print(
                f"{key}: measured / predicted x {r.min():.3f}-{r.max():.3f} (median x {np.median(r):.3f}); "
                f"error {100 * np.median(err):.1f} % median, {100 * err.max():.1f} % max"
            )
        return
    out = figures()
    for gpu, band in out["bands"].items():
        c = out["cross"][gpu]
        print(
            f"{gpu}: {band.points} points, energy x {band.energy[0]:.3f}-{band.energy[1]:.3f}, time x "
            f"{band.time[0]:.3f}-{band.time[1]:.3f}; its points in the other GPUs' band: "
            f"{100 * c['energy']:.0f} % energy, {100 * c['time']:.0f} % time"
        )
    p = out["pooled"]
    print(f"pooled: energy x {p.energy[0]:.3f}-{p.energy[1]:.3f}, time x {p.time[0]:.3f}-{p.time[1]:.3f}")
    if args.write:
        path = ROOT / "hardware/engines/ref.json"
        profile = json.loads(path.read_text())
        profile["datasheet_band"] = p.model_dump()
        path.write_text(json.dumps(profile, indent=2) + "\n")
        print(f"written to {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
