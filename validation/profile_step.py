"""Where the graph engine's decode step spends its time: kernels launched, summed kernel time, replay time.

Evidence for the gap between shivam's graph engine and a minimal graphed decoder measured on the same H200 model
(2026-11: 4.70 ms per Mistral-7B decode step; validation/README.md).
Run on a GPU: python3 validation/profile_step.py [model] [context] [new_tokens] [batch] [weights_dtype] > profile.json
(JSON on stdout alone; defaults mistral-7b 512 1 1 bf16)

Kernels are split into GEMMs (cuBLAS / nvjet: they read the weights) and everything else (norms, RoPE, cache
writes, attention, residual adds), and the GEMMs' achieved bandwidth is computed from the weight bytes shivam's
workload counts for the same step.
"""

import json
import sys

import torch
from torch.profiler import ProfilerActivity, profile

from shivam.sim.workload import step_ops
from shivam.specs import Dtypes, load_engine
from shivam.specs.model import load_model
from shivam.validate.engines import Decoder

GRAPH_KERNELS = load_engine("graph").kernels  # the graph engine's kernel counts

GEMM_MARKERS = ("nvjet", "gemm", "cublas", "cutlass")


def main(model="mistral-7b", context=512, n=1, batch=1, dtype="bf16"):
    spec = load_model(model)
    dec = Decoder(spec, batch, context + n + 8, weights_dtype=dtype, device="cuda")
    tokens = torch.randint(0, spec.vocab, (batch, n), device="cuda")
    for _ in range(3):
        dec.forward(tokens, context)
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        dec.forward(tokens, context)
        torch.cuda.synchronize()
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    busy_us = sum(e.device_time for e in kernels)
    by_name = {}
    for e in kernels:
        by_name.setdefault(e.name[:60], [0, 0.0])
        by_name[e.name[:60]][0] += 1
        by_name[e.name[:60]][1] += e.device_time
    replay = dec.step_fn(tokens, context)
    for _ in range(5):
        replay()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(100):
        replay()
    end.record()
    torch.cuda.synchronize()
    top = sorted(by_name.items(), key=lambda kv: -kv[1][1])[:30]
    gemm = [e for e in kernels if any(m in e.name.lower() for m in GEMM_MARKERS)]
    gemm_us = sum(e.device_time for e in gemm)
    dtypes = Dtypes.of(dtype, "fp8" if dtype == "fp8" else None)
    weight_bytes = sum(op.repeat * op.weight_bytes for op in step_ops(spec, batch, n, context, dtypes, GRAPH_KERNELS))
    print(
        json.dumps(
            {
                "model": model,
                "context": context,
                "new_tokens": n,
                "batch": batch,
                "weights_dtype": dtype,
                "kernels_per_step": len(kernels),
                "kernel_time_ms": busy_us / 1e3,
                "graph_replay_ms": start.elapsed_time(end) / 100,
                "gemm_kernels": len(gemm),
                "gemm_time_ms": gemm_us / 1e3,
                "weight_bytes": weight_bytes,
                "gemm_bandwidth_TBps": weight_bytes / (gemm_us * 1e-6) / 1e12 if gemm_us else None,
                "other_kernels": len(kernels) - len(gemm),
                "other_time_ms": (busy_us - gemm_us) / 1e3,
                "top_kernels": [{"name": k, "count": c, "ms": t / 1e3} for k, (c, t) in top],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    a = sys.argv[1:]
    main(a[0] if a else "mistral-7b", *(int(x) for x in a[1:4]), *a[4:5])
