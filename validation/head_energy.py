"""Energy of an LM-head matmul alone, with an aligned and an unaligned vocabulary: the fallback kernel measured as an
operator, apart from any model's forward step.

GPT-2's 50257-token head (rows of logits not 16-byte aligned) runs cuBLAS's sm75 fallback kernel from 2 rows on; the
same head padded to 50304 runs Hopper's kernels. Each (rows, vocab) is one `shivam validate`-style measurement: calls
of `repeat` matmuls ending synchronized, in NVML energy-counter windows of >= 20 periods (shivam.validate.meter).

Run on a GPU: python3 validation/head_energy.py [rows,...] > head-energy.jsonl   (one JSON line per shape)
"""

import json
import sys

import torch
import torch.nn.functional as F

from shivam.validate import nvml
from shivam.validate.engines import sync
from shivam.validate.meter import measure

HIDDEN = 768  # GPT-2's
REPEAT = 20  # matmuls per call: one call lasts well above the host's launch time


def main(rows_list):
    device = torch.device("cuda")
    counter = nvml.counter(0, lambda: sync(device))
    env = nvml.environment(0, " ".join(["python3"] + sys.argv))
    print(json.dumps({"record": "environment", **env}), flush=True)
    for rows in rows_list:
        for vocab in (50257, 50304):
            w = torch.randn(vocab, HIDDEN, device=device, dtype=torch.bfloat16) * 0.02
            x = torch.randn(rows, HIDDEN, device=device, dtype=torch.bfloat16)

            def call(x=x, w=w):
                for _ in range(REPEAT):
                    F.linear(x, w).float()  # as the graph engine's head: bf16 logits, then fp32
                sync(device)
                return 0.0

            s = measure(counter, call).summary()
            s.pop("power_trace", None)
            s.pop("power_traces", None)
            print(
                json.dumps(
                    {
                        "record": "head",
                        "rows": rows,
                        "vocab": vocab,
                        "hidden": HIDDEN,
                        "repeat": REPEAT,
                        "energy_per_matmul_j": s["energy_per_call_j"] / REPEAT,
                        "time_per_matmul_s": s["time_per_call_s"] / REPEAT,
                        **s,
                    }
                ),
                flush=True,
            )
            del w, x


if __name__ == "__main__":
    main([int(r) for r in (sys.argv[1] if len(sys.argv) > 1 else "1,9,33,129").split(",")])
