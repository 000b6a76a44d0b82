"""Triton kernels of the reference engine (shivam.validate.ref), each with the plain PyTorch function it must equal.

attention      split-KV attention over a static KV cache for n new tokens per sequence (decode n = 1, verify up to
               16, prefill any n): one program per (sequence, KV head, block of query rows, slice of keys), its
               query rows being every (new token, query head) pair of the KV head's group, so the cache is read once
               for all query heads of a group and all new tokens (GQA packing); causal within the new tokens,
               lower-right aligned (new token t sees the cached keys and new tokens 0..t), or an arbitrary tree
               mask over the new tokens; each sequence its own cached length (ragged batches). Up to 16 new tokens
               (decode, verify) it takes q, k and v straight from the q/k/v GEMM, applies RoPE and writes the new
               keys and values into the cache itself. The last program of each row block to finish merges the
               slices (log-sum-exp; an atomic counts them): one kernel per layer.
add_norm       residual add fused with the RMS or layer norm that follows it (one read, two writes).
rope_to_cache  (prefill) rotary embedding of q and k fused with writing k and v into the cache.
gated_act      SiLU(gate) x up of a gated MLP, or ReLU of a plain one.

The wrappers take torch tensors and launch the kernels; with TRITON_INTERPRET=1 they run on the CPU (the tests do).
"""

from __future__ import annotations

import functools
import math
import os
import sys

import torch

from shivam.errors import ShivamError
from shivam.sim.workload import split_kv_layout, split_kv_tiles
from shivam.specs.engine import load_engine

if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
    # Triton fixes its mode when it is first imported (torch may import it): the interpreter must be asked for first
    if "triton" in sys.modules:
        raise ShivamError(
            "the reference engine's kernels need a CUDA GPU; to run them on the CPU, start Python with "
            "TRITON_INTERPRET=1 in the environment"
        )
    os.environ["TRITON_INTERPRET"] = "1"

import triton  # noqa: E402
import triton.language as tl  # noqa: E402

# Launch settings: the ref engine profile's (hardware/engines/ref.json, kernels.masked_attention.split_kv), which the
# simulator's workload reads too, chosen from validation/tune_attention.py on the H200 (Mistral-7B's heads;
# results/h200-ref/): 32-key blocks for decode (3.35 TB/s at batch 32 with two slices), 64 for verify (2.63 TB/s),
# about two programs per SM, slices of at least 256 keys (the merge of many slices is slow at batch 1); 4 warps and
# 3 pipeline stages here. The same tuning shows one slice with 64-key blocks faster at batch 32 (3.64 TB/s decode,
# 3.23 verify): the committed measurements and the profile describe the settings the profile holds.
SPLIT_KV = load_engine("ref").kernels.masked_attention.split_kv

# Programmatic dependent launch (Hopper and later): each kernel launched with it may start while the kernel before it
# in the stream finishes, and waits on that kernel's writes (griddepcontrol.wait) before it reads or writes anything,
# so its launch latency overlaps the previous kernel's tail. Off by default; SHIVAM_REF_PDL=1, or a script setting
# PDL (validation/decode_breakdown.py --pdl times the decode step both ways in one run).
PDL = os.environ.get("SHIVAM_REF_PDL") == "1"


@functools.cache
def _hopper_or_later(device: int) -> bool:
    return torch.cuda.get_device_capability(device)[0] >= 9


def pdl_launch() -> dict:
    """The launch options of a kernel under PDL: GDC (the kernel's waits) and launch_pdl, where PDL is on and the
    GPU is of compute capability 9.0 or above; none otherwise, and never in Triton's interpreter (which cannot run
    the waits' inline assembly)."""
    on = (
        PDL
        and os.environ.get("TRITON_INTERPRET") != "1"
        and torch.cuda.is_available()
        and _hopper_or_later(torch.cuda.current_device())
    )
    return {"GDC": True, "launch_pdl": True} if on else {"GDC": False}


def _pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(max(1, n))))


@triton.jit
def _after_predecessor(GDC: tl.constexpr):
    """Under PDL (GDC), wait for the kernel before this one to finish and its writes to be visible, before anything
    is read or written, then let the next kernel launch; nothing otherwise."""
    if GDC:
        tl.extra.cuda.gdc_wait()
        tl.extra.cuda.gdc_launch_dependents()


@triton.jit
def _rotated(src, row_off, head_off, d, d_ok, rows_ok, Cos, Sin, pos, D: tl.constexpr, ROPE: tl.constexpr):
    """Rows of head vectors [rows, D_PAD] at src + row_off + head_off + d, rotated at positions `pos` (rotate-half
    RoPE: the partner of element d is d +- D/2) when ROPE."""
    x = tl.load(
        src + row_off[:, None] + head_off[:, None] + d[None, :], mask=rows_ok[:, None] & d_ok[None, :], other=0.0
    )
    if ROPE:
        half = D // 2
        partner = tl.where(d < half, d + half, d - half)
        sign = tl.where(d < half, -1.0, 1.0)
        y = tl.load(
            src + row_off[:, None] + head_off[:, None] + partner[None, :],
            mask=rows_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        cos = tl.load(Cos + pos[:, None] * D + d[None, :], mask=rows_ok[:, None] & d_ok[None, :], other=0.0)
        sin = tl.load(Sin + pos[:, None] * D + d[None, :], mask=rows_ok[:, None] & d_ok[None, :], other=0.0)
        x = (x.to(tl.float32) * cos.to(tl.float32) + sign[None, :] * y.to(tl.float32) * sin.to(tl.float32)).to(x.dtype)
    return x


@triton.jit
def _attention(
    Q, QKV, Cos, Sin, K, V, Lens, Tree, Out, Opart, Mpart, Lpart, Count,
    sq_b, sq_t, sq_h, s_row, sk_b, sk_h, sk_t, so_b, so_t, so_h,
    n_new, group, kv_heads, n_heads, n_slices, pos_offset, sm_scale,
    D: tl.constexpr, D_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, NEW_PAD: tl.constexpr,
    TREE: tl.constexpr, FUSED: tl.constexpr, ROPE: tl.constexpr, S_PAD: tl.constexpr, GDC: tl.constexpr,
):  # fmt: skip
    """One program per (sequence, KV head, block of query rows, slice of the cached keys). FUSED (decode and verify):
    q and the new keys come from the q/k/v GEMM's output, rotated here; the last slice's program attends to the new
    keys and (for the first row block) writes them and their values into the cache. Otherwise (prefill) q and the
    new keys are already in Q and the cache. With several slices, the last program of a row block to finish merges
    the slices' partial results (log-sum-exp), counted on an atomic: no second kernel."""
    _after_predecessor(GDC)  # the kernel before it writes q, the new keys and (prefill) the cache
    pid_bh, pid_m, pid_s = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    b, h = (pid_bh // kv_heads).to(tl.int64), pid_bh % kv_heads  # 64-bit: a batch of large caches passes 2^31
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # row = new token x group + head within the group
    t, g = rows // group, rows % group
    row_ok = t < n_new
    head = h * group + g
    d = tl.arange(0, D_PAD)
    d_ok = d < D
    cached = tl.load(Lens + b) + pos_offset  # keys in the cache before this step
    qpos = cached + t
    if FUSED:
        q = _rotated(QKV, (b * n_new + t) * s_row, head * D, d, d_ok, row_ok, Cos, Sin, qpos, D, ROPE)
        streamed = cached  # the loop reads the cached keys; the new ones come from the GEMM's output
    else:
        q = tl.load(
            Q + b * sq_b + t[:, None] * sq_t + head[:, None] * sq_h + d[None, :],
            mask=row_ok[:, None] & d_ok[None, :],
            other=0.0,
        )
        last_t = tl.minimum((pid_m * BLOCK_M + BLOCK_M - 1) // group, n_new - 1)
        if TREE:
            streamed = cached + n_new  # a tree may let a token see later positions
        else:
            streamed = cached + last_t + 1  # no query of this block sees beyond its last new token
    slice_len = tl.cdiv(tl.cdiv(streamed, BLOCK_N), n_slices) * BLOCK_N  # balanced over this sequence's keys
    start = pid_s * slice_len
    stop = tl.minimum(start + slice_len, streamed)
    m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)
    l_i = tl.zeros([BLOCK_M], tl.float32)
    acc = tl.zeros([BLOCK_M, D_PAD], tl.float32)
    if TREE:
        bits = tl.load(Tree + t, mask=row_ok, other=0)  # bit j of new token t: t sees new token j
    k_base = K + b * sk_b + h * sk_h
    v_base = V + b * sk_b + h * sk_h
    for s in range(start, stop, BLOCK_N):
        kpos = s + tl.arange(0, BLOCK_N)
        k_ok = kpos < stop
        k = tl.load(k_base + kpos[None, :] * sk_t + d[:, None], mask=k_ok[None, :] & d_ok[:, None], other=0.0)
        qk = tl.dot(q, k.to(q.dtype)) * sm_scale
        if FUSED:
            visible = k_ok[None, :] & row_ok[:, None]
        elif TREE:
            j = kpos - cached
            new_ok = ((bits[:, None] >> tl.maximum(j, 0)[None, :]) & 1) == 1
            visible = k_ok[None, :] & ((j[None, :] < 0) | new_ok)
        else:
            visible = k_ok[None, :] & (kpos[None, :] <= qpos[:, None])
        qk = tl.where(visible, qk, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(qk, 1))
        m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)  # a row that has seen no key yet
        p = tl.exp(qk - m_safe[:, None])
        scale = tl.exp(m_i - m_safe)
        l_i = l_i * scale + tl.sum(p, 1)
        v = tl.load(v_base + kpos[:, None] * sk_t + d[None, :], mask=k_ok[:, None] & d_ok[None, :], other=0.0)
        acc = acc * scale[:, None] + tl.dot(p.to(q.dtype), v.to(q.dtype))
        m_i = m_new
    if FUSED:
        if pid_s == n_slices - 1:  # the new keys, rotated from the GEMM's output; causal or tree among them
            j = tl.arange(0, NEW_PAD)
            j_ok = j < n_new
            j_row = (b * n_new + j) * s_row
            kv_off = tl.zeros([NEW_PAD], tl.int32) + (n_heads + h) * D
            k_new = _rotated(QKV, j_row, kv_off, d, d_ok, j_ok, Cos, Sin, cached + j, D, ROPE)
            v_new = tl.load(
                QKV + j_row[:, None] + (n_heads + kv_heads + h) * D + d[None, :],
                mask=j_ok[:, None] & d_ok[None, :],
                other=0.0,
            )
            if pid_m == 0:
                dst = (cached + j)[:, None] * sk_t + d[None, :]
                tl.store(k_base + dst, k_new.to(K.dtype.element_ty), mask=j_ok[:, None] & d_ok[None, :])
                tl.store(v_base + dst, v_new.to(V.dtype.element_ty), mask=j_ok[:, None] & d_ok[None, :])
            qk = tl.dot(q, tl.trans(k_new)) * sm_scale
            if TREE:
                visible = j_ok[None, :] & (((bits[:, None] >> j[None, :]) & 1) == 1)
            else:
                visible = j_ok[None, :] & (j[None, :] <= t[:, None])
            qk = tl.where(visible & row_ok[:, None], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            m_safe = tl.where(m_new == float("-inf"), 0.0, m_new)
            p = tl.exp(qk - m_safe[:, None])
            scale = tl.exp(m_i - m_safe)
            l_i = l_i * scale + tl.sum(p, 1)
            acc = acc * scale[:, None] + tl.dot(p.to(q.dtype), v_new.to(q.dtype))
            m_i = m_new
    out_ptr = Out + b * so_b + t[:, None] * so_t + head[:, None] * so_h + d[None, :]
    out_ok = row_ok[:, None] & d_ok[None, :]
    if n_slices == 1:
        tl.store(out_ptr, (acc / tl.where(l_i == 0.0, 1.0, l_i)[:, None]).to(Out.dtype.element_ty), mask=out_ok)
    else:
        part = ((b * n_heads + head) * n_new + t) * n_slices  # partials of [b, head, t, slice]
        tl.store(Mpart + part + pid_s, m_i, mask=row_ok)
        tl.store(Lpart + part + pid_s, l_i, mask=row_ok)
        tl.store(Opart + (part + pid_s)[:, None] * D_PAD + d[None, :], acc, mask=row_ok[:, None])
        counter = Count + pid_bh * tl.num_programs(1) + pid_m
        tl.debug_barrier()  # every thread's partial stores precede the block's arrival (atomics alone do not order)
        if tl.atomic_add(counter, 1, sem="acq_rel") == n_slices - 1:  # the last slice of this row block: merge
            sl = tl.arange(0, S_PAD)
            tile = (part[None, :] + sl[:, None], row_ok[None, :] & (sl[:, None] < n_slices))  # [slices, rows]
            m_s = tl.load(Mpart + tile[0], mask=tile[1], other=float("-inf"), cache_modifier=".cg")
            l_s = tl.load(Lpart + tile[0], mask=tile[1], other=0.0, cache_modifier=".cg")
            m_all = tl.max(m_s, 0)
            w = tl.where(m_s == float("-inf"), 0.0, tl.exp(m_s - tl.where(m_all == float("-inf"), 0.0, m_all)[None, :]))
            den = tl.sum(w * l_s, 0)
            num = tl.zeros([BLOCK_M, D_PAD], tl.float32)
            for i in tl.static_range(S_PAD):  # unrolled: the slices' loads are issued together
                if i < n_slices:
                    w_i = tl.sum(tl.where(sl[:, None] == i, w, 0.0), 0)
                    o = tl.load(Opart + (part + i)[:, None] * D_PAD + d[None, :], mask=row_ok[:, None], other=0.0,
                                cache_modifier=".cg")  # fmt: skip
                    num += w_i[:, None] * o
            tl.store(out_ptr, (num / tl.where(den == 0.0, 1.0, den)[:, None]).to(Out.dtype.element_ty), mask=out_ok)
            tl.atomic_xchg(counter, 0)  # ready for the next replay


class AttentionPlan:
    """The launch shape of attention for one (batch, new tokens, cache capacity): fixed when a CUDA graph is
    captured, valid for every cached length up to the capacity (the kernels read the lengths from the device and
    balance their slices over each sequence's own keys)."""

    def __init__(
        self,
        batch: int,
        n_new: int,
        heads: int,
        kv_heads: int,
        head_dim: int,
        capacity: int,
        device,
        block_n: int | None = None,
        target_programs: int | None = None,
        min_slice_keys: int | None = None,
        num_warps: int | None = None,
        num_stages: int = 3,
        block_m_max: int | None = None,
    ):
        self.batch, self.n_new, self.heads, self.kv_heads, self.head_dim = batch, n_new, heads, kv_heads, head_dim
        self.group = heads // kv_heads
        self.fused = n_new <= SPLIT_KV.fused_max_new  # rotate and cache the new keys inside attention
        block_n, block_m, m_blocks, slices = split_kv_layout(
            heads,
            kv_heads,
            batch,
            n_new,
            capacity,
            SPLIT_KV,
            block_n,
            target_programs,
            min_slice_keys,
            block_m_max,
            head_dim,
        )
        self.block_n, self.block_m, self.m_blocks, self.slices = int(block_n), int(block_m), int(m_blocks), int(slices)
        if num_warps is None:  # the profile's, for these rows
            num_warps = int(split_kv_tiles(SPLIT_KV, head_dim, n_new * self.group)[2])
        self.num_warps, self.num_stages = num_warps, num_stages
        self.d_pad = max(16, _pow2(head_dim))
        per_slice = batch * kv_heads * self.m_blocks
        shape = (batch * heads * n_new * self.slices,)
        self.m_part = torch.empty(shape, device=device, dtype=torch.float32)
        self.l_part = torch.empty(shape, device=device, dtype=torch.float32)
        self.o_part = torch.empty((*shape, self.d_pad), device=device, dtype=torch.float32)
        self.count = torch.zeros(per_slice, device=device, dtype=torch.int32)

    def kernels(self) -> int:
        return 1


def attention(
    q: torch.Tensor | None,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    lens: torch.Tensor,
    plan: AttentionPlan,
    out: torch.Tensor,
    tree: torch.Tensor | None = None,
    pos_offset: int = 0,
    qkv: torch.Tensor | None = None,
    cos: torch.Tensor | None = None,
    sin: torch.Tensor | None = None,
) -> torch.Tensor:
    """Attention of n new tokens per sequence over the cache [b, kv_heads, capacity, d]; lens [b] int32 cached
    tokens per sequence (plus pos_offset); tree None (causal) or [n] int64 bitmasks; out [b, n, heads, d].
    Either q [b, n, heads, d] with the new keys and values already in the cache, or (plan.fused) qkv
    [b, n, (heads + 2 kv_heads) d] straight from the GEMM, rotated with cos/sin [capacity, d] when given."""
    b, n, heads, d = out.shape
    fused = qkv is not None
    grid = (b * plan.kv_heads, plan.m_blocks, plan.slices)
    src = qkv if fused else q
    _attention[grid](
        src, src, cos if cos is not None else src, sin if sin is not None else src, k_cache, v_cache, lens,
        tree if tree is not None else lens, out, plan.o_part, plan.m_part, plan.l_part, plan.count,
        0 if fused else q.stride(0), 0 if fused else q.stride(1), 0 if fused else q.stride(2),
        qkv.stride(1) if fused else 0,
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), out.stride(0), out.stride(1), out.stride(2),
        n, plan.group, plan.kv_heads, heads, plan.slices, pos_offset, 1.0 / math.sqrt(d),
        D=d, D_PAD=plan.d_pad, BLOCK_M=plan.block_m, BLOCK_N=plan.block_n, NEW_PAD=max(16, _pow2(n)),
        TREE=tree is not None, FUSED=fused, ROPE=cos is not None, S_PAD=_pow2(plan.slices),
        num_warps=plan.num_warps, num_stages=plan.num_stages, **pdl_launch(),
    )  # fmt: skip
    return out


def attention_reference(q, k_cache, v_cache, lens, tree=None, pos_offset=0):
    """The same attention in plain PyTorch, sequence by sequence, with an explicit boolean mask."""
    b, n, heads, d = q.shape
    group = heads // k_cache.shape[1]
    out = torch.empty_like(q)
    for i in range(b):
        cached = int(lens[i]) + pos_offset
        keys = k_cache[i, :, : cached + n].float().repeat_interleave(group, 0)  # [heads, keys, d]
        values = v_cache[i, :, : cached + n].float().repeat_interleave(group, 0)
        if tree is None:
            new = torch.ones(n, n, dtype=torch.bool).tril()
        else:
            new = torch.tensor([[(int(tree[t]) >> j) & 1 == 1 for j in range(n)] for t in range(n)])
        mask = torch.cat([torch.ones(n, cached, dtype=torch.bool), new], dim=1).to(q.device)
        scores = torch.einsum("thd,hkd->htk", q[i].float(), keys) / math.sqrt(d)
        scores = scores.masked_fill(~mask[None], float("-inf"))
        out[i] = torch.einsum("htk,hkd->thd", scores.softmax(-1), values).to(q.dtype)
    return out


def causal_tree(n: int) -> torch.Tensor:
    """The bitmasks of plain causal attention over n new tokens (a chain is a tree with one branch)."""
    return torch.tensor([(1 << (t + 1)) - 1 for t in range(n)], dtype=torch.int64)


@triton.jit
def _add_norm(
    X, Delta, W, Bias, Y, width, eps,
    BLOCK: tl.constexpr, HAS_DELTA: tl.constexpr, LAYERNORM: tl.constexpr, GDC: tl.constexpr,
):  # fmt: skip
    _after_predecessor(GDC)
    row = tl.program_id(0).to(tl.int64)
    i = tl.arange(0, BLOCK)
    ok = i < width
    x = tl.load(X + row * width + i, mask=ok, other=0.0).to(tl.float32)
    if HAS_DELTA:
        x = x + tl.load(Delta + row * width + i, mask=ok, other=0.0).to(tl.float32)
        x = x.to(X.dtype.element_ty)
        tl.store(X + row * width + i, x, mask=ok)  # the residual stream, in place
        x = x.to(tl.float32)  # normalize what was stored
    if LAYERNORM:
        mean = tl.sum(x, 0) / width
        xc = tl.where(ok, x - mean, 0.0)
        y = xc * tl.rsqrt(tl.sum(xc * xc, 0) / width + eps)
    else:
        y = x * tl.rsqrt(tl.sum(x * x, 0) / width + eps)
    y = y * tl.load(W + i, mask=ok, other=0.0).to(tl.float32)
    if LAYERNORM:
        y = y + tl.load(Bias + i, mask=ok, other=0.0).to(tl.float32)
    tl.store(Y + row * width + i, y.to(Y.dtype.element_ty), mask=ok)


def add_norm(x, delta, weight, bias, out, layernorm: bool, eps: float = 1e-5):
    """x += delta (in place, when delta is given); out = norm(x). x, delta, out contiguous [..., width]."""
    width = x.shape[-1]
    rows = x.numel() // width
    _add_norm[(rows,)](
        x, delta if delta is not None else x, weight, bias if bias is not None else weight, out, width, eps,
        BLOCK=_pow2(width), HAS_DELTA=delta is not None, LAYERNORM=layernorm, **pdl_launch(),
    )  # fmt: skip
    return out


@triton.jit
def _rope_to_cache(
    QKV, Cos, Sin, Lens, Qout, Kc, Vc,
    n_new, heads, kv_heads, s_row, sq_b, sq_t, sq_h, sk_b, sk_h, sk_t, pos_offset,
    D: tl.constexpr, HALF_PAD: tl.constexpr, ROPE: tl.constexpr, GDC: tl.constexpr,
):  # fmt: skip
    _after_predecessor(GDC)
    row, hh = tl.program_id(0).to(tl.int64), tl.program_id(1)  # row = sequence x n_new + token; hh: q, then kv heads
    b, t = row // n_new, row % n_new
    pos = tl.load(Lens + b) + pos_offset + t
    i = tl.arange(0, HALF_PAD)
    ok = i < D // 2
    src = QKV + row * s_row + hh * D
    x1 = tl.load(src + i, mask=ok, other=0.0).to(tl.float32)
    x2 = tl.load(src + D // 2 + i, mask=ok, other=0.0).to(tl.float32)
    if ROPE:
        if hh < heads + kv_heads:  # v (the last kv_heads) is not rotated
            cos = tl.load(Cos + pos * D + i, mask=ok, other=0.0).to(tl.float32)
            sin = tl.load(Sin + pos * D + i, mask=ok, other=0.0).to(tl.float32)
            x1, x2 = x1 * cos - x2 * sin, x2 * cos + x1 * sin
    if hh < heads:
        dst = Qout + b * sq_b + t * sq_t + hh * sq_h
    elif hh < heads + kv_heads:
        dst = Kc + b * sk_b + (hh - heads) * sk_h + pos * sk_t
    else:
        dst = Vc + b * sk_b + (hh - heads - kv_heads) * sk_h + pos * sk_t
    tl.store(dst + i, x1.to(dst.dtype.element_ty), mask=ok)
    tl.store(dst + D // 2 + i, x2.to(dst.dtype.element_ty), mask=ok)


def rope_to_cache(qkv, cos, sin, lens, q_out, k_cache, v_cache, heads, kv_heads, rope: bool, pos_offset: int = 0):
    """qkv [b, n, (heads + 2 kv_heads) d] -> q_out [b, n, heads, d] (rotated), k (rotated) and v into the caches
    [b, kv_heads, capacity, d] at positions lens + pos_offset + t. cos, sin [capacity, d] (halves repeated)."""
    b, n, _ = qkv.shape
    d = q_out.shape[-1]
    _rope_to_cache[(b * n, heads + 2 * kv_heads)](
        qkv, cos if rope else qkv, sin if rope else qkv, lens, q_out, k_cache, v_cache,
        n, heads, kv_heads, qkv.stride(1), q_out.stride(0), q_out.stride(1), q_out.stride(2),
        k_cache.stride(0), k_cache.stride(1), k_cache.stride(2), pos_offset,
        D=d, HALF_PAD=_pow2(d // 2), ROPE=rope, **pdl_launch(),
    )  # fmt: skip


@triton.jit
def _act(X, Y, width, BLOCK: tl.constexpr, GATED: tl.constexpr, GDC: tl.constexpr):
    _after_predecessor(GDC)
    row, blk = tl.program_id(0).to(tl.int64), tl.program_id(1)
    i = blk * BLOCK + tl.arange(0, BLOCK)
    ok = i < width
    if GATED:  # X holds [gate | up]
        gate = tl.load(X + row * 2 * width + i, mask=ok, other=0.0).to(tl.float32)
        up = tl.load(X + row * 2 * width + width + i, mask=ok, other=0.0).to(tl.float32)
        y = gate * tl.sigmoid(gate) * up
    else:
        y = tl.maximum(tl.load(X + row * width + i, mask=ok, other=0.0).to(tl.float32), 0.0)
    tl.store(Y + row * width + i, y.to(Y.dtype.element_ty), mask=ok)


def gated_act(x, out, gated: bool):
    """out = SiLU(gate) x up for x = [gate | up] (gated), or ReLU(x)."""
    width = out.shape[-1]
    rows = out.numel() // width
    block = min(1024, _pow2(width))
    _act[(rows, math.ceil(width / block))](x, out, width, BLOCK=block, GATED=gated, **pdl_launch())
    return out
