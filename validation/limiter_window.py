"""The power limiter's window, tested on points it was not chosen from: each point of a probe file predicted with
the H200 file's window (power_limit_window_ms) and with the iteration held as a whole (no window), and, given the
measured results, which of the two the card's power follows.

    .venv/bin/python validation/limiter_window.py validation/probes/limiter-window.json            # predictions
    .venv/bin/python validation/limiter_window.py validation/probes/limiter-window.json RESULTS.jsonl

A card's energy scale is not known in advance: it is taken from the probe's points that neither model holds at the
limit (the standard decoding at batch 16 and the speculative iterations under it), as measured over predicted, and
applied to every point before the limit holds it (shivam.calibrate.points.point_cost's energy_scale). The power a
point draws, E / t, is then the comparison: for a held iteration the window model predicts less than the limit,
the whole-iteration hold the limit itself.
"""

from __future__ import annotations

import argparse
import json
from functools import cache
from pathlib import Path

import numpy as np

from shivam.calibrate.points import Point, point_cost
from shivam.calibrate.results import load_results
from shivam.specs import load_gpu
from shivam.specs.params import resolve_params


@cache
def models() -> dict:
    """The bundled ref calibration with the H200 file's window, and the same held per iteration as a whole."""
    window = resolve_params(load_gpu("h200"), "ref")
    return {"window": window, "whole": window.model_copy(update={"power_window_s": None})}


def predicted(point: Point, scale: float = 1.0) -> dict:
    out = {}
    for name, params in models().items():
        cost = point_cost(point, params, energy_scale=scale)[0]
        out[name] = {"energy_j": float(cost.energy_j), "time_s": float(cost.time_s)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("probe", help="the probe's points (JSON list)")
    parser.add_argument("results", nargs="?", help="the measured results (JSONL), to compare")
    args = parser.parse_args()
    points = [Point.model_validate(p) for p in json.loads(Path(args.probe).read_text())]
    if not args.results:
        print("| point | window: J | ms | W | whole: J | ms | W |\n|---|---|---|---|---|---|---|")
        for p in points:
            w, a = (predicted(p)[n] for n in ("window", "whole"))
            print(
                f"| {p.label()} | {w['energy_j']:.3f} | {1e3 * w['time_s']:.2f} | {w['energy_j'] / w['time_s']:.0f} | "
                f"{a['energy_j']:.3f} | {1e3 * a['time_s']:.2f} | {a['energy_j'] / a['time_s']:.0f} |"
            )
        return
    measured, _ = load_results([args.results], engine="ref")
    rows = [(m, predicted(m.point)) for m in measured]
    limit = models()["window"].power_limit_w
    free = [
        m.energy_j / pr["window"]["energy_j"]
        for m, pr in rows
        if pr["whole"]["energy_j"] < 0.999 * limit * pr["whole"]["time_s"]
    ]
    scale = float(np.median(free)) if free else 1.0
    print(f"card energy scale from {len(free)} points under the limit: x {scale:.4f}\n")
    print("| point | measured W | window W | whole W | measured J | window J (error) | whole J (error) |")
    print("|---|---|---|---|---|---|---|")
    errs = {"window": [], "whole": []}
    for m, _ in rows:
        pr = predicted(m.point, scale)
        cells = []
        for name in ("window", "whole"):
            e = pr[name]["energy_j"] / m.energy_j - 1
            errs[name].append(e)
            cells.append(f"{pr[name]['energy_j']:.3f} ({100 * e:+.1f} %)")
        print(
            f"| {m.point.label()} | {m.energy_j / m.time_s:.0f} | "
            f"{pr['window']['energy_j'] / pr['window']['time_s']:.0f} | "
            f"{pr['whole']['energy_j'] / pr['whole']['time_s']:.0f} | {m.energy_j:.3f} | {cells[0]} | {cells[1]} |"
        )
    for name, e in errs.items():
        a = 100 * np.abs(e)
        print(f"{name}: energy error median {np.median(a):.1f} %, max {np.max(a):.1f} % over {len(a)} points")


if __name__ == "__main__":
    main()
