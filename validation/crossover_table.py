"""The predicted crossover table of docs/validation.md ("When does speculative decoding save energy?"): for each case,
alpha and k, the smallest batch at which speculation costs more energy per token than standard decoding / the
smallest at which it is slower, from `shivam.crossover` (batch scanned 1-256; prompt 128 + 128 generated unless the
case says otherwise; the bundled calibrations on the H200, datasheet estimates elsewhere).

Run: .venv/bin/python validation/crossover_table.py
"""

import shivam

PAIR = dict(model="llama-3.1-8b", draft="llama-3.2-1b")
CASES = [  # (label, keyword arguments of shivam.crossover)
    ("Llama-3.1-8B + Llama-3.2-1B, H200, ref engine", dict(**PAIR, gpu="h200", engine="ref")),
    ("Llama-3.1-8B + Llama-3.2-1B, H200, graph engine", dict(**PAIR, gpu="h200", engine="graph")),
    ("Llama-3.1-8B + Llama-3.2-1B, H100 SXM, ref (datasheet)", dict(**PAIR, gpu="h100-sxm", engine="ref")),
    ("Llama-3.1-8B + Llama-3.2-1B, A100-80GB, ref (datasheet)", dict(**PAIR, gpu="a100-80gb", engine="ref")),
    ("Llama-3.1-8B + Llama-3.2-1B, L40S, ref (datasheet)", dict(**PAIR, gpu="l40s", engine="ref")),
    ("Mistral-7B + Llama-68M, H200, ref", dict(model="mistral-7b", draft="llama-68m", gpu="h200", engine="ref")),
    ("OPT-1.3B + OPT-125M, H200, ref", dict(model="opt-1.3b", draft="opt-125m", gpu="h200", engine="ref")),
    ("Llama-3.1-8B + Llama-3.2-1B, H200, ref, context 4096 + 128", dict(**PAIR, gpu="h200", engine="ref", prompt=4096)),
    (
        "Llama-3.1-8B + Llama-3.2-1B, H200, ref, acceptance Beta-spread (c = 4)",
        dict(**PAIR, gpu="h200", engine="ref", alpha_concentration=4.0),
    ),
]
ALPHAS, KS = (0.6, 0.8, 0.9), (2, 4, 8)


def cell(found: int | None, last: int) -> str:
    return f"> {last}" if found is None else str(found)


if __name__ == "__main__":
    print("| case | alpha | " + " | ".join(f"k={k}" for k in KS) + " |")
    print("|---|---|" + "---|" * len(KS))
    for label, kw in CASES:
        res = shivam.crossover(k=KS, alpha=ALPHAS, batch=range(1, 257), **kw)
        last = max(res["curves"][f"{ALPHAS[0]:g}"][str(KS[0])]["batch"])  # where the scan stopped (memory)
        for i, a in enumerate(ALPHAS):
            by_k = res["crossover"][f"{a:g}"]
            cells = [f"{cell(by_k[str(k)]['energy'], last)} / {cell(by_k[str(k)]['latency'], last)}" for k in KS]
            print(f"| {label if i == 0 else ''} | {a:g} | " + " | ".join(cells) + " |")
