"""Launch settings of the reference engine's attention kernel, timed on a GPU (CUDA events over graph replays).

Prints, per setting, the time of 32 layers' attention calls (one CUDA graph) for Mistral-7B's heads (32 query, 8
KV, 128 wide) in the engine's fused form (q, k, v from the GEMM's output): decode at batch 1 (context 512) and 32
(context 1024), verify of 5 new tokens at batch 32 (context 1024); KV read rates in TB/s.
    PYTHONPATH=$PWD python3 validation/tune_attention.py
    PYTHONPATH=$PWD python3 validation/tune_attention.py --wide   # Gemma-2B's heads (8 query, 1 KV, 256 wide)
    PYTHONPATH=$PWD python3 validation/tune_attention.py --wide-prefill   # the same heads' prefill (unfused) path
    PYTHONPATH=$PWD python3 validation/tune_attention.py --prefill [MODEL]   # a prompt's attention at the profile's
                                                  # settings, its useful TFLOP/s and the bundled calibration's time

--wide times the verify and decode tiles of 256-wide heads (18 layers, batch 1 and 4, context 1024, and 9 new
tokens at 512) over warps, key blocks, query-row blocks and pipeline stages, and prints each compiled variant's
registers and spills: with 4 warps a 64-row tile of 256-wide heads holds its accumulator and query in registers it
does not have.
"""

import itertools
import sys

import torch

from shivam.validate import kernels
from shivam.validate.engines import replay_seconds as timed

LAYERS, HEADS, KV, D = 32, 32, 8, 128
CASES = [("decode b=1 c=512", 1, 1, 512), ("decode b=32 c=1024", 32, 1, 1024), ("verify b=32 c=1024", 32, 5, 1024)]


WIDE = (18, 8, 1, 256)  # Gemma-2B: layers, query heads, KV heads, head_dim
WIDE_CASES = [("n=9 b=1 c=512", 1, 9, 512)] + [
    (f"n={n} b={b} c=1024", b, n, 1024) for n in (1, 3, 5, 9, 16) for b in (1, 4)
]


def compiled() -> set:
    """(registers, spilled registers, shared bytes, warps, stages) of every attention variant compiled so far."""
    out = set()
    for cache in getattr(kernels._attention, "device_caches", {}).values():
        table = cache[0] if isinstance(cache, tuple) else cache
        for k in table.values():
            out.add((k.n_regs, k.n_spills, k.metadata.shared, k.metadata.num_warps, k.metadata.num_stages))
    return out


def wide() -> int:
    layers, heads, kvh, d = WIDE
    torch.manual_seed(0)
    cap = 2048
    kc = torch.randn(layers, 4, kvh, cap, d, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    ang = torch.arange(cap, device="cuda")[:, None] * torch.rand(d // 2, device="cuda")[None]
    cos, sin = torch.cat([ang, ang], -1).cos().bfloat16(), torch.cat([ang, ang], -1).sin().bfloat16()
    seen = set()
    print("block_n warps stages block_m_max | " + " ".join(f"{c[0]:>16}" for c in WIDE_CASES) + "  (us per layer)")
    for bn, warps, stages, bm in itertools.product((32, 64), (4, 8), (2, 3), (16, 32, 64)):
        row = []
        for _, b, n, c in WIDE_CASES:
            qkv = torch.randn(b, n, (heads + 2 * kvh) * d, device="cuda", dtype=torch.bfloat16)
            lens = torch.full((b,), c, device="cuda", dtype=torch.int32)
            out = torch.empty(b, n, heads, d, device="cuda", dtype=torch.bfloat16)
            plan = kernels.AttentionPlan(b, n, heads, kvh, d, 1024 if c < 1024 else 2048, "cuda", bn, None, None,
                                         warps, stages, bm)  # fmt: skip

            def fn(b=b, plan=plan, out=out, qkv=qkv, lens=lens):
                for i in range(layers):
                    kernels.attention(None, kc[i, :b], vc[i, :b], lens, plan, out, None, 0, qkv, cos, sin)

            try:
                row.append(f"{1e6 * timed(fn) / layers:16.2f}")
            except Exception as exc:  # noqa: BLE001 - a setting the GPU cannot run (shared memory)
                row.append(f"{type(exc).__name__[:16]:>16}")
        print(f"{bn:7d} {warps:5d} {stages:6d} {bm:11d} | " + " ".join(row), flush=True)
        try:
            new, seen = compiled() - seen, compiled()
            print("    compiled (registers, spills, shared B, warps, stages): " + str(sorted(new)), flush=True)
        except (AttributeError, TypeError, KeyError) as exc:  # another Triton's cache layout: the times still count
            print(f"    kernel resources not readable: {exc!r}", flush=True)
    return 0


WIDE_PREFILL = [(n, 512) for n in (33, 129, 256, 512, 2048)]  # (new tokens, cached keys) at batch 1, keys cached first
PREFILL_SETTINGS = [(64, 4, 3, 64), (32, 4, 3, 16), (64, 4, 3, 16), (64, 8, 3, 64), (64, 8, 3, 32), (32, 8, 3, 64)]


def wide_prefill() -> int:
    """The unfused path (prefill, more than fused_max_new new tokens) of 256-wide heads."""
    layers, heads, kvh, d = WIDE
    torch.manual_seed(0)
    cap = 4096
    kc = torch.randn(layers, 1, kvh, cap, d, device="cuda", dtype=torch.bfloat16)
    vc = torch.randn_like(kc)
    lens = torch.full((1,), 512, device="cuda", dtype=torch.int32)
    seen = set()
    print("block_n warps stages block_m_max | " + " ".join(f"n={n} c={c}".rjust(14) for n, c in WIDE_PREFILL))
    for bn, warps, stages, bm in PREFILL_SETTINGS:
        row = []
        for n, _ in WIDE_PREFILL:
            q = torch.randn(1, n, heads, d, device="cuda", dtype=torch.bfloat16)
            out = torch.empty(1, n, heads, d, device="cuda", dtype=torch.bfloat16)
            plan = kernels.AttentionPlan(1, n, heads, kvh, d, cap, "cuda", bn, None, None, warps, stages, bm)

            def fn(plan=plan, out=out, q=q):
                for i in range(layers):
                    kernels.attention(q, kc[i], vc[i], lens, plan, out)

            try:
                row.append(f"{1e6 * timed(fn) / layers:14.2f}")
            except Exception as exc:  # noqa: BLE001 - a setting the GPU cannot run (shared memory)
                row.append(f"{type(exc).__name__[:14]:>14}")
        print(f"{bn:7d} {warps:5d} {stages:6d} {bm:11d} | " + " ".join(row), flush=True)
        try:
            new, seen = compiled() - seen, compiled()
            print("    compiled (registers, spills, shared B, warps, stages): " + str(sorted(new)), flush=True)
        except (AttributeError, TypeError, KeyError) as exc:
            print(f"    kernel resources not readable: {exc!r}", flush=True)
    return 0


PREFILL = [(1, n) for n in (129, 512, 2048, 8192)] + [(8, n) for n in (512, 2048)]  # (batch, prompt tokens)


def predicted_attention_s(model, batch: int, n: int, context: int, gpu: str = "h200") -> float:
    """The GPU's bundled ref calibration's time for one layer's attention kernel of this step, launch cost apart."""
    from shivam.sim.roofline import op_time
    from shivam.sim.workload import step_ops
    from shivam.specs import Dtypes, load_engine, load_gpu, resolve_params

    params = resolve_params(load_gpu(gpu), "ref")
    ops = step_ops(model, batch, n, context, Dtypes.of("bf16"), load_engine("ref").kernels)
    return float(op_time(next(op for op in ops if op.name == "attention"), params, "bf16")[0])


def prefill(name: str = "mistral-7b") -> int:
    """The unfused path of 128-wide heads at the profile's launch settings: a prompt's causal attention over an empty
    cache, per layer, with the rate of its useful products (each new token against the keys up to its own) and what
    the bundled ref calibration predicts for the same kernel."""
    from shivam.sim.workload import split_kv_capacity
    from shivam.specs.gpu import gpu_id_for
    from shivam.specs.model import load_model

    m = load_model(name)
    gpu = gpu_id_for(torch.cuda.get_device_name())
    if gpu is None:
        sys.exit(f"no bundled GPU file for {torch.cuda.get_device_name()}: the predicted column needs one")
    heads, kvh, d, layers = m.heads, m.kv_heads, m.head_dim, 4  # per-layer times: four layers per replay
    torch.manual_seed(0)
    print(f"{name} on {gpu}: {heads} query heads, {kvh} KV heads, {d} wide; us per layer, useful TFLOP/s, "
          f"and the time {gpu}'s bundled ref calibration predicts")  # fmt: skip
    for b, n in PREFILL:
        cap = int(split_kv_capacity(n, kernels.SPLIT_KV))  # the engine's plan for n keys (ref.bucket_for)
        kc = torch.randn(layers, b, kvh, max(cap, n), d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        lens = torch.zeros((b,), device="cuda", dtype=torch.int32)
        q = torch.randn(b, n, heads, d, device="cuda", dtype=torch.bfloat16)
        out = torch.empty_like(q)
        plan = kernels.AttentionPlan(b, n, heads, kvh, d, cap, "cuda")

        def fn(plan=plan, out=out, q=q, kc=kc, vc=vc, lens=lens):
            for i in range(layers):
                kernels.attention(q, kc[i], vc[i], lens, plan, out)

        t = timed(fn, reps=10) / layers
        useful = 4 * b * n * heads * d * (n + 1) / 2
        predicted = predicted_attention_s(m, b, n, 0, gpu)
        print(
            f"b={b} n={n:5d}: {1e6 * t:10.1f} us  {useful / t / 1e12:6.1f} TFLOP/s  predicted {1e6 * predicted:9.1f} us"
            f"  (block_m {plan.block_m}, block_n {plan.block_n}, {plan.m_blocks} row blocks, {plan.slices} slices)",
            flush=True,
        )
    return 0


def main():
    if "--prefill" in sys.argv:
        rest = sys.argv[sys.argv.index("--prefill") + 1 :]
        return prefill(*rest[:1])
    if "--wide-prefill" in sys.argv:
        return wide_prefill()
    if "--wide" in sys.argv:
        return wide()
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
