"""Launch settings of the reference engine's attention kernel, timed on a GPU (CUDA events over graph replays).

Prints, per setting, the time of 32 layers' attention calls (one CUDA graph) for Mistral-7B's heads (32 query, 8
KV, 128 wide) in the engine's fused form (q, k, v from the GEMM's output): decode at batch 1 (context 512) and 32
(context 1024), verify of 5 new tokens at batch 32 (context 1024); KV read rates in TB/s.
    PYTHONPATH=$PWD python3 validation/tune_attention.py
"""

import itertools
import sys

import torch

from shivam.validate import kernels
from shivam.validate.engines import replay_seconds as timed

LAYERS, HEADS, KV, D = 32, 32, 8, 128
CASES = [("decode b=1 c=512", 1, 1, 512), ("decode b=32 c=1024", 32, 1, 1024), ("verify b=32 c=1024", 32, 5, 1024)]


def main():
    torch.manual_seed(0)
    data = {}
    for name, b, n, c in CASES:
        cap = 2048
        kc = torch.randn(LAYERS, b, KV, cap, D, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        qkv = torch.randn(b, n, (HEADS + 2 * KV) * D, device="cuda", dtype=torch.bfloat16)
        ang = torch.arange(cap, device="cuda")[:, None] * torch.rand(D // 2, device="cuda")[None]
        cos, sin = torch.cat([ang, ang], -1).cos().bfloat16(), torch.cat([ang, ang], -1).sin().bfloat16()
        lens = torch.full((b,), c, device="cuda", dtype=torch.int32)
        out = torch.empty(b, n, HEADS, D, device="cuda", dtype=torch.bfloat16)
        data[name] = (b, n, c, kc, vc, qkv, cos, sin, lens, out)
    settings = [  # (block_n, warps, stages, target programs, min keys per slice); --all: the whole grid
        (32, 4, 3, 264, 256), (64, 4, 3, 264, 256), (32, 4, 3, 264, 4096), (64, 4, 3, 264, 4096),
        (32, 4, 3, 132, 256), (64, 4, 2, 264, 512),
    ]  # fmt: skip
    if "--all" in sys.argv:
        settings = list(itertools.product((32, 64, 128), (4, 8), (2, 3, 4), (264, 528, 1056), (64, 256)))
    print("block_n warps stages programs min_keys | " + " | ".join(f"{c[0]} us, TB/s" for c in CASES), flush=True)
    best = {}
    for bn, warps, stages, programs, min_keys in settings:
        row = []
        for name, (b, n, c, kc, vc, qkv, cos, sin, lens, out) in data.items():
            plan = kernels.AttentionPlan(b, n, HEADS, KV, D, 2048, "cuda", bn, programs, min_keys, warps, stages)

            def fn(kc=kc, vc=vc, lens=lens, plan=plan, out=out, qkv=qkv, cos=cos, sin=sin):
                for i in range(LAYERS):
                    kernels.attention(None, kc[i], vc[i], lens, plan, out, None, 0, qkv, cos, sin)

            try:
                t = timed(fn)
            except Exception as exc:  # noqa: BLE001 - a setting the GPU cannot run (shared memory)
                row.append(f"failed {type(exc).__name__}")
                continue
            kv = LAYERS * b * (c + n) * 2 * KV * D * 2
            row.append(f"{1e6 * t:8.1f} {kv / t / 1e12:5.2f} ({plan.slices})")
            if name not in best or t < best[name][0]:
                best[name] = (t, (bn, warps, stages, programs, min_keys))
        print(f"{bn:7d} {warps:5d} {stages:6d} {programs:8d} {min_keys:8d} | " + " | ".join(row), flush=True)
    for name, (t, s) in best.items():
        print(f"best {name}: {1e6 * t:.1f} us with {s}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
