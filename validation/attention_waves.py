"""How the reference engine's split-KV attention kernel runs in waves, timed on a GPU (CUDA events over graph replays).

For each head shape, new-token count and context, the attention of all layers (one CUDA graph of the engine's
fused calls, the launch plan the engine uses) over a range of batches: programs, slices, microseconds per layer and
the KV cache's read rate. The kernel's registers and shared memory per program (Triton's compiled kernel) give how
many programs one multiprocessor holds at once; a batch whose programs fill a whole number of those waves reads the
cache faster than one whose last wave is part-filled.
    PYTHONPATH=$PWD python3 validation/attention_waves.py
    PYTHONPATH=$PWD python3 validation/attention_waves.py --occupancy   # every launch variant's programs per SM
    PYTHONPATH=$PWD python3 validation/attention_waves.py --sweep       # few programs: the merge and the tiles

--sweep times the kernel where its programs are few and each runs nearly alone: one sequence over 256-16,384 keys
(2-33 slices, so the merge of the slices' partials grows while each program's keys do not), and verify widths of
1-16 new tokens over 512 and 1,024 keys for each head width (the 256-wide heads' 64-row tiles spill registers).

--occupancy compiles each variant the engine launches (head_dim, query-row block, key block, whether q and the new
keys come fused from the GEMM, the merge's unrolled slice count, RoPE or not) and prints one JSON line per variant:
its registers, shared memory, and the programs one multiprocessor holds at once.
"""

import json
import sys

import torch
import triton

from shivam.sim.workload import split_kv_capacity
from shivam.validate import kernels
from shivam.validate.engines import replay_seconds

# (name, layers, heads, kv heads, head_dim): Llama-3.1-8B / Mistral-7B, Gemma-2B (one KV head, 256 wide), OPT-1.3B
SHAPES = [("llama-3.1-8b", 32, 32, 8, 128), ("gemma-2b", 18, 8, 1, 256), ("opt-1.3b", 24, 32, 32, 64)]
CASES = [  # (shape, new tokens, context, batches)
    ("llama-3.1-8b", 1, 4096, [8, 16, 24, 32, 40, 48, 56, 64, 72, 80, 88, 96, 112, 128]),
    ("llama-3.1-8b", 1, 1024, [8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128]),
    ("llama-3.1-8b", 5, 1024, [8, 16, 32, 48, 64]),
    ("gemma-2b", 9, 512, [1, 2, 4]),
    ("gemma-2b", 1, 512, [1, 16, 32, 64]),
    ("opt-1.3b", 1, 1024, [8, 16, 24, 32, 48, 64, 96]),
]

SWEEP = [
    *[("llama-3.1-8b", 1, c, [1, 4]) for c in (256, 512, 1024, 2048, 3072, 4096, 6144, 8192, 12288, 16384)],
    *[("llama-3.1-8b", n, c, [1, 4]) for c in (512, 1024) for n in (2, 3, 5, 9, 16)],
    *[("gemma-2b", n, c, [1, 4]) for c in (512, 1024) for n in (1, 2, 3, 5, 7, 9, 16)],
    *[("opt-1.3b", n, c, [1, 8]) for c in (512, 1024) for n in (1, 2, 5, 9, 16)],
    *[("gemma-2b", 1, c, [1]) for c in (2048, 4096, 8192)],
]


def resident(compiled, props) -> dict:
    """Programs per multiprocessor the compiled kernel's registers, shared memory and warps allow."""
    regs, shared, warps = compiled.n_regs, compiled.metadata.shared, compiled.metadata.num_warps
    per_warp = -(-regs * 32 // 256) * 256  # registers are allocated per warp in units of 256
    by_regs = props["max_num_regs"] // (per_warp * warps) if regs else 99
    by_shared = props["max_shared_mem"] // (shared + 1024) if shared else 99  # 1 KiB reserved per block
    by_warps = 64 // warps
    return {
        "regs": regs, "spills": compiled.n_spills, "shared": shared, "warps": warps,
        "programs_per_sm": min(by_regs, by_shared, by_warps, 32), "by_regs": by_regs, "by_shared": by_shared,
    }  # fmt: skip


def occupancy(compiled, props) -> str:
    r = resident(compiled, props)
    return (
        f"regs {r['regs']}, spills {r['spills']}, shared {r['shared']} B, warps {r['warps']}: programs per "
        f"multiprocessor {r['programs_per_sm']} (registers {r['by_regs']}, shared memory {r['by_shared']}, warps "
        f"{64 // r['warps']})"
    )


# the variants the engine compiles: (query-row block, key block, fused) for decode (1 new token), fused verify (up
# to 16 new tokens, 1-4 row blocks) and prefill or wide verify (the new keys in the cache first)
LAYOUTS = [(16, 32, True), (16, 64, True), (32, 64, True), (64, 64, True), (16, 64, False), (64, 64, False)]


def occupancy_table(props) -> int:
    cap = 1024
    for d in (64, 96, 128, 256):
        d_pad = kernels._pow2(max(16, d))
        for block_m, block_n, fused in LAYOUTS:
            for s_pad in (1, 2, 8, 32):
                for rope in (True, False):
                    qkv = torch.randn(1, 1, 3 * d, device="cuda", dtype=torch.bfloat16)
                    kc, vc = (torch.zeros(1, 1, cap, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
                    cos = torch.ones(cap, d, device="cuda", dtype=torch.bfloat16)
                    lens = torch.full((1,), 100, device="cuda", dtype=torch.int32)
                    out = torch.empty(1, 1, 1, d, device="cuda", dtype=torch.bfloat16)
                    parts = [torch.zeros(s_pad * 64, device="cuda") for _ in range(2)]
                    opart = torch.zeros(s_pad * 64, d_pad, device="cuda")
                    count = torch.zeros(64, device="cuda", dtype=torch.int32)
                    q = qkv[..., :d].reshape(1, 1, 1, d).contiguous()
                    src = qkv if fused else q
                    compiled = kernels._attention[(1, 1, s_pad)](
                        src, src, cos if rope else src, cos if rope else src, kc, vc, lens, lens, out, opart,
                        parts[0], parts[1], count, 0 if fused else q.stride(0), 0 if fused else q.stride(1),
                        0 if fused else q.stride(2), qkv.stride(1) if fused else 0, kc.stride(0), kc.stride(1),
                        kc.stride(2), out.stride(0), out.stride(1), out.stride(2), 1, 1, 1, 1, s_pad, 0, 0.1,
                        D=d, D_PAD=d_pad, BLOCK_M=block_m, BLOCK_N=block_n, NEW_PAD=16, TREE=False, FUSED=fused,
                        ROPE=rope, S_PAD=s_pad, GDC=False, num_warps=4, num_stages=3,
                    )  # fmt: skip
                    torch.cuda.synchronize()
                    row = {"head_dim": d, "block_m": block_m, "block_n": block_n, "fused": fused, "s_pad": s_pad}
                    print(json.dumps({**row, "rope": rope, **resident(compiled, props)}), flush=True)
    return 0


def compiled_kernels():
    """Every compiled variant of the attention kernel (Triton keeps them per device)."""
    out = []
    for cache in getattr(kernels._attention, "device_caches", {}).values():
        table = cache[0] if isinstance(cache, tuple) else cache
        out += list(table.values())
    return out


def main():
    torch.manual_seed(0)
    dev = torch.cuda.current_device()
    props = triton.runtime.driver.active.utils.get_device_properties(dev)
    print(f"{torch.cuda.get_device_name(dev)}: {props}", flush=True)
    if "--occupancy" in sys.argv:
        return occupancy_table(props)
    shapes = {s[0]: s[1:] for s in SHAPES}
    seen = set()
    for name, n, c, batches in SWEEP if "--sweep" in sys.argv else CASES:
        layers, heads, kvh, d = shapes[name]
        cap = int(split_kv_capacity(c + n, kernels.SPLIT_KV))
        bmax = max(batches)
        kc = torch.randn(layers, bmax, kvh, cap, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        ang = torch.arange(cap, device="cuda")[:, None] * torch.rand(d // 2, device="cuda")[None]
        cos, sin = torch.cat([ang, ang], -1).cos().bfloat16(), torch.cat([ang, ang], -1).sin().bfloat16()
        print(f"\n{name} n={n} c={c} (capacity {cap}, {layers} layers)", flush=True)
        print(" batch programs slices block_n block_m  us/layer  KV TB/s", flush=True)
        for b in batches:
            plan = kernels.AttentionPlan(b, n, heads, kvh, d, cap, "cuda")
            qkv = torch.randn(b, n, (heads + 2 * kvh) * d, device="cuda", dtype=torch.bfloat16)
            lens = torch.full((b,), c, device="cuda", dtype=torch.int32)
            out = torch.empty(b, n, heads, d, device="cuda", dtype=torch.bfloat16)

            def fn(b=b, plan=plan, out=out, qkv=qkv, lens=lens, kc=kc, vc=vc, cos=cos, sin=sin, layers=layers):
                for i in range(layers):
                    kernels.attention(None, kc[i, :b], vc[i, :b], lens, plan, out, None, 0, qkv, cos, sin)

            t = replay_seconds(fn) / layers
            kv = b * (c + n) * 2 * kvh * d * 2
            programs = b * kvh * plan.m_blocks * plan.slices
            print(
                f"{b:6d} {programs:8d} {plan.slices:6d} {plan.block_n:7d} {plan.block_m:7d} {1e6 * t:9.2f} "
                f"{kv / t / 1e12:8.2f}",
                flush=True,
            )
            try:
                for k in compiled_kernels():
                    key = (k.n_regs, k.metadata.shared, k.metadata.num_warps)
                    if key not in seen:
                        seen.add(key)
                        print(f"  kernel: {occupancy(k, props)}", flush=True)
            except (AttributeError, TypeError, KeyError) as exc:  # another Triton's cache layout: the times still count
                print(f"  kernel resources not readable: {exc!r}", flush=True)
        del kc, vc
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
