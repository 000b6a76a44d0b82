"""Markdown tables for docs/validation.md from `shivam check --format json` output, so the document's numbers are
the check's, not retyped.

    shivam check validation/results/h200/*.jsonl --format json > /tmp/check.json   # with the bundled recipe
    python3 validation/tables.py /tmp/check.json lomo      # leave-one-model-out, per held-out model
    python3 validation/tables.py /tmp/check.json points    # predicted vs measured, every point
    python3 validation/tables.py /tmp/check.json ratios    # standard/speculative ratios by pair, context and batch
    python3 validation/tables.py /tmp/check.json ratios GPU-26ff   # the same, of one card
"""

import json
import sys
from statistics import median


def pct(x: float) -> str:
    return f"{100 * x:+.1f} %"


def lomo(check: dict) -> None:
    rows = check["cross_validation"]["points"]
    print("| held-out model | points | energy median | energy max | time median | time max | worst point |")
    print("|---|---|---|---|---|---|---|")
    for fold in sorted({r["fold"] for r in rows}):
        pts = [r for r in rows if r["fold"] == fold]
        e, t = [abs(r["energy_err"]) for r in pts], [abs(r["time_err"]) for r in pts]
        worst = max(pts, key=lambda r: max(abs(r["energy_err"]), abs(r["time_err"])))
        print(
            f"| {fold} | {len(pts)} | {100 * median(e):.1f} % | {100 * max(e):.1f} % | {100 * median(t):.1f} % | "
            f"{100 * max(t):.1f} % | {worst['label']} ({pct(worst['energy_err'])} energy, "
            f"{pct(worst['time_err'])} time) |"
        )


def points(check: dict) -> None:
    print("| point | card | ms measured | ms predicted | error | J measured | J predicted | error |")
    print("|---|---|---|---|---|---|---|---|")
    for r in check["points"]:
        print(
            f"| {r['label']} | {r['card'][:12]} | {1e3 * r['time_meas']:.3f} | {1e3 * r['time_pred']:.3f} | "
            f"{pct(r['time_err'])} | {r['energy_meas']:.4f} | {r['energy_pred']:.4f} | {pct(r['energy_err'])} |"
        )


def ratios(check: dict, card: str = "") -> None:
    """Per (pair, context), measured standard/speculative energy and time ratios by batch and k, the held-out
    prediction in brackets (fitted on all where check ran no cross-validation); '-' where not measured. `card`: only
    the ratios measured on the card whose UUID starts so (a pair measured on several cards)."""
    rows = (check["cross_validation"].get("speculation") or check["speculation"])["ratios"]
    rows = [r for r in rows if r["card"].startswith(card)]
    groups = {(r["pair"], r["context"], r["alpha"]) for r in rows}  # a ragged batch's context is "ragged"
    for pair, context, alpha in sorted(groups, key=lambda g: (g[0], isinstance(g[1], str), str(g[1]).zfill(6), g[2])):
        sel = {(r["batch"], r["k"]): r for r in rows if (r["pair"], r["context"], r["alpha"]) == (pair, context, alpha)}
        ks = sorted({k for _, k in sel})
        where = "contexts spread 256-4096 (ragged)" if context == "ragged" else f"context {context}"
        print(f"{pair}, {where}, alpha {alpha}:\n")
        head = [f"energy, k={k}" if i == 0 else f"k={k}" for i, k in enumerate(ks)]
        head += [f"time, k={k}" if i == 0 else f"k={k}" for i, k in enumerate(ks)]
        print("| batch | " + " | ".join(head) + " |")
        print("|---|" + "---|" * len(head))
        for batch in sorted({b for b, _ in sel}):
            cells = []
            for what in ("energy", "time"):
                for k in ks:
                    r = sel.get((batch, k))
                    cells.append(f"{r[what + '_ratio_meas']:.2f} ({r[what + '_ratio_pred']:.2f})" if r else "-")
            print(f"| {batch} | " + " | ".join(cells) + " |")
        print()


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        check = json.load(f)
    {"lomo": lomo, "points": points, "ratios": ratios}[sys.argv[2]](check, *sys.argv[3:])
