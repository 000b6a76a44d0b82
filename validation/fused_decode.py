"""A probe for the reference engine's batch-1 decode: the norms and the activation fused into the GEMMs beside them.

At one row the reference engine's decode step runs 8 kernels per layer (two norms, four GEMMs, attention, the
activation) where the weights-only graph runs 4; the extra launches are most of its distance from that floor
(docs/validation.md, "The reference engine"). Here the residual add and the norm run inside the q/k/v and gate/up
GEMVs (each program recomputes its row's statistics, program 0 writes the new residual into the other of two
buffers), and SiLU-and-multiply inside the down GEMV: 5 kernels per layer. It is not part of the engine until a GPU
says it is faster:

    PYTHONPATH=$PWD python3 validation/fused_decode.py            # on the GPU: the three steps timed, and ratios
    PYTHONPATH=$PWD python3 validation/fused_decode.py --check    # its logits against the engine's (any device)

Timing: CUDA events over CUDA-graph replays (the median of 5 runs of 50), for Mistral-7B at batch 1, context 512:
the weights-only graph, the engine's decode step, the fused step, and each GEMV against cuBLAS at its shape.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from shivam.specs.model import load_model
from shivam.validate import kernels
from shivam.validate.engine_suite import weights_only_run
from shivam.validate.engines import replay_seconds as timed
from shivam.validate.ref import RefDecoder

BLOCK_N, BLOCK_K, WARPS = 32, 256, 4  # launch settings of both GEMVs (the GPU run prints cuBLAS beside them)


@triton.jit
def _gemv(
    X, Delta, Xout, G, Beta, W, Bias, Y, rows, K, N, eps,
    R: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PROLOGUE: tl.constexpr, HAS_DELTA: tl.constexpr, LAYERNORM: tl.constexpr, HAS_BIAS: tl.constexpr,
):  # fmt: skip
    """Y[r, n] = sum_k W[n, k] x[r, k] over `rows` (<= R) rows, x given by the prologue: 0, X as it is; 1, the norm
    of X (+ Delta: the residual add, written to Xout by program 0); 2, SiLU(gate) x up of X = [gate | up]."""
    pid = tl.program_id(0)
    n = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = n < N
    r = tl.arange(0, R)
    r_ok = r < rows
    width = 2 * K if PROLOGUE == 2 else K
    mean = tl.zeros([R], tl.float32)
    rstd = tl.zeros([R], tl.float32)
    if PROLOGUE == 1:  # the row's statistics first: every program reads the whole row (small, from L2)
        s1 = tl.zeros([R], tl.float32)
        s2 = tl.zeros([R], tl.float32)
        for k0 in range(0, K, BLOCK_K):
            k = k0 + tl.arange(0, BLOCK_K)
            ok = r_ok[:, None] & (k < K)[None, :]
            x = tl.load(X + r[:, None] * width + k[None, :], mask=ok, other=0.0).to(tl.float32)
            if HAS_DELTA:  # the residual as the unfused kernel stores it (in the activation dtype)
                x = x + tl.load(Delta + r[:, None] * K + k[None, :], mask=ok, other=0.0).to(tl.float32)
                x = x.to(Y.dtype.element_ty).to(tl.float32)
            s1 += tl.sum(x, 1)
            s2 += tl.sum(x * x, 1)
        if LAYERNORM:
            mean = s1 / K
            rstd = tl.rsqrt(s2 / K - mean * mean + eps)
        else:
            rstd = tl.rsqrt(s2 / K + eps)
    acc = tl.zeros([R, BLOCK_N], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k = k0 + tl.arange(0, BLOCK_K)
        k_ok = k < K
        ok = r_ok[:, None] & k_ok[None, :]
        x = tl.load(X + r[:, None] * width + k[None, :], mask=ok, other=0.0).to(tl.float32)
        if PROLOGUE == 1:
            if HAS_DELTA:
                x = x + tl.load(Delta + r[:, None] * K + k[None, :], mask=ok, other=0.0).to(tl.float32)
                x = x.to(Y.dtype.element_ty).to(tl.float32)
                if pid == 0:
                    tl.store(Xout + r[:, None] * K + k[None, :], x.to(Xout.dtype.element_ty), mask=ok)
            x = (x - mean[:, None]) * rstd[:, None] * tl.load(G + k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
            if LAYERNORM:
                x = x + tl.load(Beta + k, mask=k_ok, other=0.0).to(tl.float32)[None, :]
        elif PROLOGUE == 2:
            up = tl.load(X + r[:, None] * width + K + k[None, :], mask=ok, other=0.0).to(tl.float32)
            x = x * tl.sigmoid(x) * up
        x = x.to(Y.dtype.element_ty).to(tl.float32)  # what the unfused kernel hands the GEMM
        w = tl.load(W + n[:, None] * K + k[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0).to(tl.float32)
        acc += tl.sum(x[:, None, :] * w[None, :, :], axis=2)
    if HAS_BIAS:
        acc += tl.load(Bias + n, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    tl.store(Y + r[:, None] * N + n[None, :], acc.to(Y.dtype.element_ty), mask=r_ok[:, None] & n_ok[None, :])


def gemv(x, weight, bias, out, prologue=0, delta=None, x_out=None, norm=(None, None), layernorm=False, eps=1e-5):
    """out [rows, N] = prologue(x) @ weight.T (+ bias), for a few rows; x, delta, x_out, out contiguous."""
    rows, n_out = out.shape
    k = weight.shape[1]
    g, beta = norm
    _gemv[(triton.cdiv(n_out, BLOCK_N),)](
        x, delta if delta is not None else x, x_out if x_out is not None else x, g if g is not None else weight,
        beta if beta is not None else weight, weight, bias if bias is not None else weight, out, rows, k, n_out, eps,
        R=triton.next_power_of_2(rows), BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, PROLOGUE=prologue,
        HAS_DELTA=delta is not None, LAYERNORM=layernorm, HAS_BIAS=bias is not None, num_warps=WARPS,
    )  # fmt: skip
    return out


def fused_logits(dec: RefDecoder, tokens: torch.Tensor, lens: torch.Tensor, plan) -> torch.Tensor:
    """RefDecoder.ref_logits for decode (a few rows, fused attention, RoPE models without learned positions or
    embedding projections), with the norms in the q/k/v and gate/up GEMVs and the activation in the down GEMV."""
    s, (b, n) = dec.spec, tokens.shape
    if dec.positions is not None or dec.proj or not plan.fused or not s.gated_mlp:
        raise ValueError("the fused probe covers gated-MLP RoPE decoders at up to 16 new tokens")
    layernorm, rows = s.norm == "layernorm", b * n
    x = F.embedding(tokens, dec.embed).reshape(rows, -1).contiguous()
    other = torch.empty_like(x)
    att = torch.empty((b, n, s.heads, s.head_dim), device=dec.device, dtype=dec.dtype)
    delta = None
    for i, layer in enumerate(dec.layers):
        qkv_w, qkv_b = layer["qkv"]
        qkv = torch.empty((rows, qkv_w.shape[0]), device=dec.device, dtype=dec.dtype)
        gemv(x, qkv_w, qkv_b, qkv, 1, delta, other, layer["n1"], layernorm)
        if delta is not None:
            x, other = other, x  # the residual with the down projection added, written by the GEMV
        kernels.attention(None, dec.k_cache[i], dec.v_cache[i], lens, plan, att, None, 0, qkv.view(b, n, -1),
                          dec.cos, dec.sin)  # fmt: skip
        attn_out = dec._linear(att.view(rows, -1), layer["o_proj"])
        up_w, up_b = layer["up"]
        up = torch.empty((rows, up_w.shape[0]), device=dec.device, dtype=dec.dtype)
        gemv(x, up_w, up_b, up, 1, attn_out.contiguous(), other, layer["n2"], layernorm)
        x, other = other, x
        down_w, down_b = layer["down"]
        delta = gemv(up, down_w, down_b, torch.empty_like(x), 2)
    normed = torch.empty_like(x)
    kernels.add_norm(x, delta, *dec.final_norm, normed, layernorm)
    return F.linear(normed, dec.lm_head).view(b, n, -1)


def check(device: str = "cpu", batch: int = 1) -> float:
    """The fused step's logits against the engine's, same weights and cache (each sequence at its own context): the
    largest absolute difference over the largest absolute logit."""
    spec = load_model(str(Path(__file__).resolve().parent.parent / "tests/data/tiny-llama.json"))
    dec = RefDecoder(spec, batch, 64, device=device, seed=3)
    prompt = torch.randint(0, spec.vocab, (batch, 6), generator=torch.Generator().manual_seed(4)).to(device)
    dec.logits(prompt, 0)  # fills the cache
    token = prompt[:, -1:]
    lens = dec.lens_for(6, [6 - i for i in range(batch)])
    plan = dec.plan(1, 7)
    want = dec.ref_logits(token, lens, plan).float()
    got = fused_logits(dec, token, lens, plan).float()
    return float((want - got).abs().max() / want.abs().max())


def gpu_run() -> None:
    dec = RefDecoder(load_model("mistral-7b"), 1, 1024, device="cuda")
    dec.k_cache.normal_()
    dec.v_cache.normal_()
    token = torch.zeros((1, 1), dtype=torch.long, device="cuda")
    lens = dec.lens_for(512)
    plan = dec.plan(1, 513)
    weights_only, _ = weights_only_run(dec, 1)
    t_w = timed(weights_only)
    t_ref = timed(lambda: dec.ref_logits(token, lens, plan))
    t_fused = timed(lambda: fused_logits(dec, token, lens, plan))
    print(f"weights-only {1e3 * t_w:.3f} ms; engine decode {1e3 * t_ref:.3f} ms ({t_ref / t_w:.3f}x); fused decode "
          f"{1e3 * t_fused:.3f} ms ({t_fused / t_w:.3f}x)", flush=True)  # fmt: skip
    layer = dec.layers[0]
    for name, prologue in (("qkv", 1), ("up", 1), ("down", 2)):
        w = layer[name][0]
        src = torch.randn(1, 2 * w.shape[1] if prologue == 2 else w.shape[1], device="cuda").to(dec.dtype)
        plain = src[:, : w.shape[1]].contiguous()
        out = torch.empty(1, w.shape[0], device="cuda", dtype=dec.dtype)
        norm = layer["n1"] if prologue == 1 else (None, None)
        t_cublas = timed(lambda plain=plain, w=w: F.linear(plain, w))  # timed() captures at once: bound for clarity
        t_tri = timed(
            lambda src=src, w=w, out=out, prologue=prologue, norm=norm: gemv(src, w, None, out, prologue, norm=norm)
        )
        gb = w.numel() * w.element_size() / 1e9
        print(f"{name} {tuple(w.shape)}: cuBLAS {1e6 * t_cublas:.1f} us ({gb / t_cublas / 1e3:.2f} TB/s), fused GEMV "
              f"{1e6 * t_tri:.1f} us ({gb / t_tri / 1e3:.2f} TB/s)", flush=True)  # fmt: skip


if __name__ == "__main__":
    if "--check" in sys.argv:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        print(f"largest |fused - engine| logit difference, relative to the largest logit: {check(device, 3):.3g}")
    else:
        gpu_run()
