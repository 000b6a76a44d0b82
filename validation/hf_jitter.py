"""Is the hf engine's window-to-window spread the meter's or the host's? Times transformers generate() windows with
no energy meter and no polling thread at all, optionally with the garbage collector off.

Run on a GPU: python3 validation/hf_jitter.py [model] [gen] [gc-off]   (prints one JSON line)
"""

import gc
import json
import os
import sys
import time

import torch

from shivam.validate.engines import generate_call, hf_model


def main(model="opt-125m", gen=8, gc_off=False):
    call = generate_call(hf_model(model, "bf16", "cuda"), 128, gen, 1)
    for _ in range(5):
        call()
    if gc_off:
        gc.collect()
        gc.disable()
    per_call = []
    for _ in range(8):  # 2 s windows, as the meter's
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < 2.0:
            call()
            n += 1
        per_call.append((time.perf_counter() - start) / n)
    torch.cuda.synchronize()
    med = sorted(per_call)[len(per_call) // 2]
    print(json.dumps({"model": model, "gen": gen, "gc_off": gc_off, "cpus": sorted(os.sched_getaffinity(0))[:8],
                      "ms_per_call": [round(t * 1e3, 2) for t in per_call],
                      "spread": (max(per_call) - min(per_call)) / med}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "opt-125m", int(sys.argv[2]) if len(sys.argv) > 2 else 8,
         len(sys.argv) > 3 and sys.argv[3] == "gc-off")
