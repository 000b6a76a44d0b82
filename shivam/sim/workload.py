"""What one forward step moves and computes, operator by operator.

This module is the workload definition that both `shivam predict` (through shivam.sim.roofline) and `shivam validate`
(which builds and times the same steps on a GPU) use. A step is a forward pass of `new_tokens` tokens for each of
`batch` sequences over a KV cache already holding `context` tokens:

    decode step   new_tokens = 1        (standard autoregressive decoding, and each draft step)
    verify step   new_tokens = k + 1    (the target model scores k drafted tokens plus the bonus position)

Counts are per step, for the whole batch. `batch`, `new_tokens` and `context` may be numpy arrays: every expression
here broadcasts, so a whole (k, context) grid is costed in one pass. Equations and assumptions: docs/model.md.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from shivam.specs import Dtypes, Kernels, nbytes
from shivam.specs.model import Linear, ModelSpec


def masked_attention_head_dim(kernels: Kernels, head_dim: int, new_tokens):
    """Effective head_dim per key of the engine's masked attention kernel at `new_tokens` queries: the first profiled
    bucket at least as wide as head_dim, by the parity of the query count (the kernel configuration follows it);
    beyond the widest bucket it scales with head_dim."""

    def lookup(table):
        for bucket, eff in table:
            if head_dim <= bucket:
                return eff
        bucket, eff = table[-1]
        return eff * head_dim / bucket

    masked = kernels.masked_attention
    even = np.asarray(new_tokens) % 2 == 0
    return np.where(even, lookup(masked.head_dim_even_queries), lookup(masked.head_dim_odd_queries))


def _pow2_at_least(x):
    return 2.0 ** np.ceil(np.log2(np.maximum(x, 1)))


def split_kv_capacity(keys, sk):
    """Cache capacity a split-KV kernel is planned for (engine profile's split_kv): the next power of two of the keys,
    at least bucket_min, at most max(keys, bucket_cap_min)."""
    return np.minimum(np.maximum(_pow2_at_least(keys), sk.bucket_min), np.maximum(keys, sk.bucket_cap_min))


def split_kv_tiles(sk, head_dim: int, rows):
    """(query rows per program at most, keys per inner iteration or None for the n-dependent default, warps per
    program) of the tiles a split-KV kernel launches for `rows` query rows (new tokens x KV group): heads at least
    wide_head_dim wide take the profile's wide tiles, from wide_prefill_rows rows the narrow heads' tiles in
    wide_prefill_warps warps; other heads the narrow tiles in 4 warps. Works elementwise over arrays of rows."""
    rows = np.asarray(rows)
    if sk.wide_head_dim is None or _pow2_at_least(head_dim) < sk.wide_head_dim:
        return np.full(rows.shape, sk.block_m_max), None, np.full(rows.shape, 4)
    large = rows >= (sk.wide_prefill_rows if sk.wide_prefill_rows else np.inf)
    block_m_max = np.where(large, sk.block_m_max, sk.wide_block_m_max or sk.block_m_max)
    block_n = np.where(large, sk.block_n_verify, sk.wide_block_n or sk.block_n_verify)
    warps = np.where(large, sk.wide_prefill_warps or 4, 4)
    return block_m_max, block_n, warps


def split_kv_layout(heads: int, kv_heads: int, batch, new_tokens, capacity, sk, block_n=None, target_programs=None,
                    min_slice_keys=None, block_m_max=None, head_dim: int = 128):  # fmt: skip
    """How a split-KV kernel divides a layer's attention (the one rule the kernel's launch plan and the workload
    share): query rows = new tokens x the KV group, in blocks of block_m (split_kv_tiles); slices = min(capacity /
    max(block_n, min_slice_keys), target_programs / (batch x KV heads x row blocks)). Returns (keys per inner
    iteration, block_m, row blocks, slices); the settings default to the profile's."""
    n = np.asarray(new_tokens)
    rows = n * (heads // kv_heads)
    tile_m_max, tile_n, _ = split_kv_tiles(sk, head_dim, rows)
    block_m = np.clip(_pow2_at_least(rows), sk.block_m_min, tile_m_max if block_m_max is None else block_m_max)
    row_blocks = np.ceil(rows / block_m)
    if block_n is None:
        block_n = np.where(n == 1, sk.block_n_decode, sk.block_n_verify) if tile_n is None else tile_n
    target = sk.target_programs if target_programs is None else target_programs
    min_keys = sk.min_slice_keys if min_slice_keys is None else min_slice_keys
    per_slice = batch * kv_heads * row_blocks
    slices = np.maximum(1, np.minimum(np.ceil(capacity / np.maximum(block_n, min_keys)), np.ceil(target / per_slice)))
    return block_n, block_m, row_blocks, slices


def split_kv_programs(m: ModelSpec, batch, new_tokens, context, kv_bytes: float, sk):
    """(bytes one program of a split-KV attention kernel streams, programs per layer, FLOPs one program computes,
    programs per multiprocessor, inner iterations per program, merge steps, programs with no keys to stream, the share
    of a program's bytes that come from DRAM where the cache stays in L2, the row blocks of a prompt's tiles (0: not
    a prompt)), as the
    kernel slices its work (split_kv_capacity, split_kv_layout): each program streams its share of the cached keys
    (up to fused_max_new new tokens come straight from the GEMM; above, the new keys up to the row block's last token,
    on average) and, when there are several slices, writes its partial result (its rows, head_dim padded to a power
    of two, fp32), which the program that finishes last reads back with the other slices' to merge them: one partial
    written and one read per program (the merge's own time is merge_steps). Over each key it streams, a program
    multiplies its whole row block (padded rows included: the tensor-core tile is block_m rows) by the key and by its
    value: 4 x block_m x head_dim FLOPs."""
    n = np.asarray(new_tokens)
    keys = context + n
    block_n, block_m, row_blocks, slices = split_kv_layout(
        m.heads, m.kv_heads, batch, n, split_kv_capacity(keys, sk), sk, head_dim=m.head_dim
    )
    rows = n * (m.heads // m.kv_heads)
    # above fused_max_new the new keys are in the cache, and a block of query rows streams no key past its last
    # token (causal): over R row blocks of tau tokens each, the mean of min(i tau, n) for i = 1..R (the kernel
    # rounds i tau up: within a token per block where tau is fractional; a tree mask, which streams all new keys
    # in every block, is not counted)
    tau = block_m / (m.heads // m.kv_heads)
    causal_new = (tau * (row_blocks - 1) * row_blocks / 2 + n) / row_blocks
    streamed = np.where(n <= sk.fused_max_new, context, context + causal_new)
    slice_keys = np.ceil(np.ceil(streamed / block_n) / slices) * block_n
    width = max(16.0, float(_pow2_at_least(m.head_dim)))  # the partials are padded to a power-of-two head_dim
    merge = np.where(slices > 1, 2 * np.minimum(block_m, rows) * width * sk.partial_bytes, 0.0)
    programs = batch * m.kv_heads * row_blocks * slices
    occupancy = split_kv_occupancy(sk, m.head_dim, block_m, block_n, slices)
    # a program alone waits on its loads once per block of keys, and once more for the slices' partials it merges
    iterations = slice_keys / block_n + (slices > 1)
    flops = 4 * block_m * slice_keys * m.head_dim
    # the merging program's loop is unrolled over the slice count padded to a power of two, and each of its slices'
    # steps reduces over all of them: slices x padded slices steps, after every slice is done
    merge_steps = np.where(slices > 1, slices * _pow2_at_least(slices), 0.0)
    # slices of slice_keys each may cover the cached keys before the last slice: the kernel's last slices then stream
    # none (272 programs of Gemma-2B at batch 16 over 4,096 keys: 17 slices of 256 keys, the 17th empty). The grid
    # launches them last (the slice is its slowest axis), so a last wave of them pays only each program's fixed time
    # and the one block of new keys the last slice attends to. Counted where every row block streams the same keys
    # (up to fused_max_new new tokens; above, each row block's keys end at its own last token)
    busy = np.where(slice_keys > 0, np.ceil(streamed / np.maximum(slice_keys, 1)), slices)
    empty = np.where(
        n <= sk.fused_max_new, batch * m.kv_heads * row_blocks * np.maximum(slices - np.maximum(busy, 1), 0), 0.0
    )
    block_bytes = slice_keys * 2 * m.head_dim * kv_bytes + merge
    # prompt tiles: a KV head's row blocks stream the same keys; DRAM delivers them once (its keys and values, all
    # of them), L2 the rest
    prompt = n > sk.fused_max_new
    unique = (context + n) * 2 * m.head_dim * kv_bytes / (row_blocks * slices) + merge
    streams = block_bytes > 0
    share = np.where(prompt & streams, np.minimum(unique / np.where(streams, block_bytes, 1.0), 1.0), 1.0)
    prompt_rows = np.where(prompt, row_blocks, 0)
    return block_bytes, programs, flops, occupancy, iterations, merge_steps, empty, share, prompt_rows


def split_kv_occupancy(sk, head_dim: int, block_m, block_n, slices):
    """Programs per multiprocessor of the compiled variant a launch takes (the profile's programs_per_sm, keyed by
    head_dim padded to a power of two from 64, block_m and block_n; a launch of several slices compiles the merge in
    and may hold fewer); 0 where the profile does not know the variant."""
    d = max(64, int(_pow2_at_least(head_dim)))
    block_m, block_n, slices = np.broadcast_arrays(np.asarray(block_m), np.asarray(block_n), np.asarray(slices))
    out = np.zeros(block_m.shape)
    for key, (single, merged) in sk.programs_per_sm.items():
        kd, km, kn = (int(x) for x in key.split("/"))
        if kd == d:
            out = np.where((block_m == km) & (block_n == kn), np.where(slices > 1, merged, single), out)
    return out if out.ndim else float(out)


class OpCost(NamedTuple):
    """One operator of a step. `repeat` is how many times it occurs (the layer count for per-layer operators)."""

    name: str
    # "matmul" (tensor cores, compute dtype), "matmul_misaligned" / "gemv_misaligned" (a matmul whose output rows are
    # not 16-byte aligned: cuBLAS's fallback kernels, for several rows / one),
    # "attention", "elementwise" (fp32 vector units), "copy"
    kind: str
    flops: object
    weight_bytes: object
    kv_read_bytes: object
    kv_write_bytes: object
    act_bytes: object  # activations and logits read + written
    launches: object  # kernels launched (may depend on the step's shape)
    repeat: int = 1
    pcie_bytes: object = 0.0
    # a latency-bound kernel: bytes each of `blocks` thread blocks (a split-KV kernel's programs) streams on its own
    # and FLOPs it computes between its loads (roofline.op_time)
    block_bytes: object = 0.0
    blocks: object = 0.0
    block_flops: object = 0.0
    # a ragged batch: the longest sequence's blocks stream and compute this many times the mean's (block_bytes and
    # block_flops are the mean's), and each wave of blocks lasts as long as its longest block
    block_span: object = 1.0
    # programs of that kernel one multiprocessor runs at once (a split-KV kernel's compiled occupancy); 0: not known,
    # one per multiprocessor and the roofline bounding them (roofline.op_time)
    blocks_per_sm: object = 0.0
    # where it is known: the inner iterations of one block, each waiting on its loads (roofline.op_time)
    block_iterations: object = 0.0
    # and the steps of its merge, which the last program runs after the others (roofline.op_time)
    merge_steps: object = 0.0
    # and of its `blocks`, those with no keys to stream (a split-KV kernel's empty last slices), launched last
    empty_blocks: object = 0.0
    # kernels that only cast, fill or concatenate a few rows, at per_light_kernel_s each (a third of a typical kernel)
    light_launches: object = 0.0
    # bytes its thread blocks read from L2 beyond its DRAM bytes: blocks that stream the same keys (the query heads
    # of one KV head) bring them from DRAM once and read them again from L2 (roofline: l2_j_per_byte)
    l2_bytes: object = 0.0
    # a split-KV kernel's prompt tiles (more new tokens than the kernel fuses): of a program's block_bytes, the
    # share that comes from DRAM where the layer's cache stays in L2 (the row blocks of one KV head stream the same
    # keys: the first brings them into L2), and the row blocks that stream the same keys (0: no prompt tiles; their
    # products run at the prompt tiles' own rate; roofline.op_time)
    block_dram_share: object = 1.0
    prompt_tiles: object = 0.0

    @property
    def dram_bytes(self):
        return self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes + self.act_bytes


def _matmul(
    name: str,
    linears: list[Linear],
    tokens,
    dt: Dtypes,
    kernels: Kernels,
    repeat: int,
    weight_copies=1.0,
    tokens_per_weight=None,
) -> OpCost:
    """Linear layers sharing an input (q/k/v, gate/up), fused into one GEMM, applied to `tokens` rows. Weight bytes
    are read once per step (a GEMM streams its weights once whatever the token count); `weight_copies` scales them
    for MoE (distinct experts touched)."""
    macs_per_token = sum(l.d_in * l.d_out for l in linears)
    rows = tokens if tokens_per_weight is None else tokens_per_weight
    flops = 2 * rows * macs_per_token + rows * sum(l.d_out for l in linears if l.bias)
    w_bytes = weight_copies * sum(l.params for l in linears) * nbytes(dt.weights)
    a = nbytes(dt.activations)
    act = rows * a * (sum(l.d_in for l in linears[:1]) + sum(l.d_out for l in linears))
    return OpCost(
        name,
        "matmul",
        flops,
        w_bytes,
        0.0,
        0.0,
        act,
        kernels.launches.matmul,
        repeat,
        light_launches=_matmul_light_launches(rows, dt, kernels),
    )


def _matmul_light_launches(rows, dt: Dtypes, kernels: Kernels):
    """A fused GEMM is one launch. With fp8 activations the engine first casts the input to fp8, and pads row counts
    the fp8 GEMM cannot take (the engine profile's fp8_* kernel counts)."""
    if dt.activations != "fp8":
        return 0
    return kernels.fp8_cast_launches + np.where(
        np.asarray(rows) % kernels.fp8_row_multiple == 0, 0, kernels.fp8_pad_launches
    )


def _gated(op: OpCost, on) -> OpCost:
    """The operator where `on` holds (elementwise over a broadcast grid of step shapes), nothing elsewhere: for an
    operator whose kernel depends on the shape."""
    g = np.where(on, 1.0, 0.0)
    return op._replace(
        flops=g * op.flops,
        weight_bytes=g * op.weight_bytes,
        kv_read_bytes=g * op.kv_read_bytes,
        kv_write_bytes=g * op.kv_write_bytes,
        act_bytes=g * op.act_bytes,
        launches=g * op.launches,
        pcie_bytes=g * op.pcie_bytes,
        block_bytes=g * op.block_bytes,
        blocks=g * op.blocks,
        block_flops=g * op.block_flops,
        blocks_per_sm=g * op.blocks_per_sm,
        block_iterations=g * op.block_iterations,
        merge_steps=g * op.merge_steps,
        empty_blocks=g * op.empty_blocks,
        light_launches=g * op.light_launches,
        l2_bytes=g * op.l2_bytes,
        block_dram_share=op.block_dram_share,
        prompt_tiles=g * op.prompt_tiles,
    )


def _elementwise(
    name: str,
    tokens,
    width: int,
    dt: Dtypes,
    repeat: int,
    flops_per_element: float,
    reads: int,
    weight_elems: int = 0,
    launches: int = 1,
) -> OpCost:
    a = nbytes(dt.activations)
    return OpCost(
        name,
        "elementwise",
        flops_per_element * tokens * width,
        weight_elems * nbytes(dt.weights),
        0.0,
        0.0,
        (reads + 1) * tokens * width * a,
        launches,
        repeat,
    )


def expected_distinct_experts(experts: int, per_token: int, tokens):
    """Experts touched when `tokens` tokens each route to `per_token` of `experts` (uniform, independent routing):
    E * (1 - (1 - per_token/E)^tokens). One token touches exactly `per_token`."""
    return experts * (1.0 - (1.0 - per_token / experts) ** tokens)


def step_ops(
    m: ModelSpec, batch, new_tokens, context, dt: Dtypes, kernels: Kernels, gpus: int = 1, longest=None
) -> list[OpCost]:
    """The operators of one forward step; `kernels` (the engine profile's) says what each launches. With `gpus` > 1,
    those of one of that many tensor-parallel GPUs: its shard of the model (ModelSpec.shard), and sampling over the
    whole vocabulary, whose logits every GPU holds after the all-gather (tensor_parallel_transfers). A ragged batch
    is costed at its mean `context` (every count is affine in it) and the cached length of its `longest` sequence,
    which sets how long each wave of a latency-bound attention kernel lasts (OpCost.block_span)."""
    vocab = m.vocab
    m = m.shard(gpus)
    T = batch * new_tokens  # tokens in this step
    L = m.layers
    a, kvb = nbytes(dt.activations), nbytes(dt.kv)
    q_dim, kv_dim = m.heads * m.head_dim, m.kv_heads * m.head_dim
    norm_w = m.hidden * (2 if m.norm == "layernorm" else 1)
    norm_flops = 8 if m.norm == "layernorm" else 5  # mean, variance, scale, shift per element (fewer for RMS)
    attn = m.attention_linears()
    kl = kernels.launches
    ops: list[OpCost] = []

    # Embedding: only the T looked-up rows are read (the full table is read by the LM head if tied).
    ops.append(
        OpCost(
            "embed",
            "elementwise",
            0.0,
            T * m.embed_dim * nbytes(dt.weights) + T * m.hidden * nbytes(dt.weights) * (m.learned_positions > 0),
            0.0,
            0.0,
            T * m.hidden * a,
            kl.embed + kl.position_embed * (m.learned_positions > 0),
        )
    )
    proj = m.embedding_linears()
    if proj:
        ops.append(_matmul("project_in", proj[:1], T, dt, kernels, 1))

    # --- per layer ---
    ops.append(_elementwise("attn_norm", T, m.hidden, dt, L, norm_flops, 2, norm_w, kl.norm))  # + residual add
    ops.append(_matmul("qkv_proj", attn[:3], T, dt, kernels, L))
    if m.learned_positions == 0:
        ops.append(_elementwise("rope", T, q_dim + kv_dim, dt, L, 3, 1, launches=kl.rope))
    ops.append(OpCost("kv_write", "elementwise", 0.0, 0.0, 0.0, T * 2 * kv_dim * kvb, 0.0, kl.kv_write, L))
    attended = context + new_tokens  # each new token attends to the cache and the new tokens (causal within them)
    mk = kernels.masked_attention
    # Several new tokens need a causal mask. A latency-bound masked kernel (kernels.masked_attention) runs one
    # thread block per (sequence, head, q_tile queries), each streaming all of its head's keys and values alone: it
    # is bound by one block's latency, not by the chip, so its floor is each block's keys x effective head_dim at a
    # per-block rate (roofline.op_time). A split-KV kernel runs every step so: its programs' slices (split_kv_programs).
    masked = (np.asarray(new_tokens) > 1) & (mk.kind == "latency_bound_per_block")

    def per_block(c):
        """(bytes one block streams, blocks, FLOPs one block computes) over c cached keys."""
        if mk.kind == "split_kv":
            return split_kv_programs(m, batch, new_tokens, c, kvb, mk.split_kv)
        head_dim = masked_attention_head_dim(kernels, m.head_dim, new_tokens)
        blocks = np.where(masked, batch * m.heads * np.ceil(np.asarray(new_tokens) / mk.q_tile), 0.0)
        # cuDNN's masked kernel: its blocks' time is fitted as streaming alone (attention_cta_Bps), no FLOPs term,
        # its occupancy not known
        return np.where(masked, (c + new_tokens) * 2 * kvb * head_dim, 0.0), blocks, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0

    block_bytes, blocks, block_flops, occupancy, iterations, merge_steps, empty, dram_share, prompt = per_block(context)
    span = 1.0
    if longest is not None:  # each sequence's blocks stream its own keys (split-KV slices are balanced per sequence)
        span = np.where(block_bytes > 0, per_block(longest)[0] / np.where(block_bytes > 0, block_bytes, 1.0), 1.0)
        empty = 0.0  # each sequence slices its own keys: the last-launched programs need not all be empty
    # Each of the masked kernel's blocks reads its KV head's keys and values in full (at the real head_dim, whatever
    # its configuration costs in time), q_tile queries at a time; the cache's DRAM bytes (the op's kv_read_bytes) are
    # read once, so the query heads sharing a KV head, and a head's further query tiles, read them again from L2
    cache_bytes = batch * attended * 2 * kv_dim * kvb
    l2_bytes = np.where(masked, blocks * attended * 2 * m.head_dim * kvb - cache_bytes, 0.0)  # blocks: per_block's
    extra = 0
    if mk.kind == "split_kv":
        extra = np.where(np.asarray(new_tokens) > mk.split_kv.fused_max_new, mk.split_kv.unfused_launches, 0)
    ops.append(
        OpCost(
            "attention",
            "attention",
            4 * T * m.heads * m.head_dim * attended + 5 * T * m.heads * attended,  # QK^T, PV, softmax
            0.0,
            cache_bytes,
            0.0,
            T * a * 2 * q_dim,
            kernels.attention_launches + extra,
            L,
            light_launches=np.where(masked, mk.light_launches, 0),
            block_bytes=block_bytes,
            blocks=blocks,
            block_flops=block_flops,
            block_span=span,
            blocks_per_sm=occupancy,
            block_iterations=iterations,
            merge_steps=merge_steps,
            empty_blocks=empty,
            l2_bytes=l2_bytes,
            block_dram_share=dram_share,
            prompt_tiles=np.asarray(prompt, dtype=float),
        )
    )
    if np.any(masked):
        ops.append(
            OpCost(
                "causal_mask",
                "elementwise",
                0.0,
                0.0,
                0.0,
                0.0,
                np.where(masked, new_tokens * attended, 0),
                np.where(masked, mk.mask_launches, 0),
                1,
            )
        )
    ops.append(_matmul("o_proj", attn[3:], T, dt, kernels, L))
    ops.append(_elementwise("mlp_norm", T, m.hidden, dt, L, norm_flops, 2, norm_w, kl.norm))  # + residual add
    mlp = m.expert_linears()
    if m.experts > 1:
        distinct = expected_distinct_experts(m.experts, m.experts_per_token, T)
        ops.append(_matmul("router", [m.router()], T, dt, kernels, L))
        ops.append(_elementwise("router_topk", T, m.experts, dt, L, 4, 1, launches=kl.router_topk))
        ops.append(
            _matmul(
                "experts_up",
                mlp[:-1],
                T,
                dt,
                kernels,
                L,
                weight_copies=distinct,
                tokens_per_weight=T * m.experts_per_token,
            )
        )
        ops.append(_elementwise("act", T * m.experts_per_token, m.intermediate, dt, L, 6, 2, launches=kl.gated_act))
        ops.append(
            _matmul(
                "experts_down",
                mlp[-1:],
                T,
                dt,
                kernels,
                L,
                weight_copies=distinct,
                tokens_per_weight=T * m.experts_per_token,
            )
        )
        ops.append(
            _elementwise("expert_combine", T * m.experts_per_token, m.hidden, dt, L, 2, 1, launches=kl.expert_combine)
        )
    else:
        ops.append(_matmul("mlp_up", mlp[:-1], T, dt, kernels, L))
        ops.append(
            _elementwise(
                "act",
                T,
                m.intermediate,
                dt,
                L,
                6 if m.gated_mlp else 1,
                2 if m.gated_mlp else 1,
                launches=kl.gated_act if m.gated_mlp else kl.act,
            )
        )
        ops.append(_matmul("mlp_down", mlp[-1:], T, dt, kernels, L))
        # residual add folded into the next norm

    # --- head ---
    if m.final_norm:
        ops.append(_elementwise("final_norm", T, m.hidden, dt, 1, norm_flops, 2, norm_w, kl.norm))
    if proj:
        ops.append(_matmul("project_out", proj[1:], T, dt, kernels, 1))
    head = _matmul("lm_head", [Linear("lm_head", m.embed_dim, m.vocab, False)], T, dt, kernels, 1)
    # A vocabulary whose row of logits is not a multiple of 16 bytes (GPT-2's 50257, in 16-bit or wider outputs; fp8
    # GEMMs write bf16) leaves the output's rows unaligned: cuBLAS cannot use Hopper's TMA kernels and falls back to
    # an older, slower tensor-core kernel; one row goes to a GEMV kernel, slower than the aligned one too
    # (roofline.op_time).
    head = head._replace(act_bytes=T * m.embed_dim * a + T * m.vocab * kernels.logit_bytes)
    if (m.vocab * max(nbytes(dt.activations), 2)) % 16 != 0:
        several_rows = np.asarray(T) > 1
        ops += [
            _gated(head, ~several_rows)._replace(kind="gemv_misaligned"),
            _gated(head, several_rows)._replace(name="lm_head_fallback", kind="matmul_misaligned"),
        ]
    else:
        ops.append(head)
    ops.append(OpCost("sample", "elementwise", T * vocab, 0.0, 0.0, 0.0, T * vocab * kernels.logit_bytes, kl.sample))
    return ops


class Transfer(NamedTuple):
    """A collective of a tensor-parallel step: every GPU ends with `nbytes` (the sum of all GPUs' partial results
    for an all-reduce; every GPU's slice for an all-gather), `repeat` times per step. shivam.sim.roofline costs it."""

    name: str
    collective: str  # "all_reduce" or "all_gather"
    nbytes: object
    repeat: int = 1


def tensor_parallel_transfers(m: ModelSpec, batch, new_tokens, dt: Dtypes, kernels: Kernels, gpus: int):
    """The collectives of one step split over `gpus` GPUs (none on one): the vocabulary-parallel embedding's
    all-reduce, two all-reduces per layer of the T x hidden activations (after the row-parallel attention output
    projection and MLP down projection), and the all-gather of the vocabulary-parallel LM head's logits."""
    if gpus == 1:
        return []
    T = batch * new_tokens
    a = nbytes(dt.activations)
    return [
        Transfer("embed_all_reduce", "all_reduce", T * m.embed_dim * a),
        Transfer("attention_all_reduce", "all_reduce", T * m.hidden * a, m.layers),
        Transfer("mlp_all_reduce", "all_reduce", T * m.hidden * a, m.layers),
        Transfer("logits_all_gather", "all_gather", T * m.shard(gpus).vocab * gpus * kernels.logit_bytes),
    ]


def host_to_device_gemm_ops(n: int, tokens: int, dt: Dtypes, kernels: Kernels, reload: bool) -> list[OpCost]:
    """Stage I of the paper: an n x n weight matrix applied to `tokens` rows, with (reload=True) or without a
    host-to-device copy of the weights before the GEMM."""
    w = Linear("weight", n, n, False)
    ops = [_matmul("gemm", [w], tokens, dt, kernels, 1)]
    if reload:
        w_bytes = w.params * nbytes(dt.weights)
        ops.insert(0, OpCost("h2d_copy", "copy", 0.0, 0.0, 0.0, 0.0, w_bytes, 1, 1, pcie_bytes=w_bytes))
    return ops


def weight_bytes(m: ModelSpec, dt: Dtypes, gpus: int = 1) -> float:
    """Bytes the model's weights occupy in one GPU's memory, split over `gpus` tensor-parallel GPUs."""
    return m.shard(gpus).param_count() * nbytes(dt.weights)


def kv_cache_bytes(m: ModelSpec, dt: Dtypes, batch: int, tokens: int, gpus: int = 1) -> float:
    """Bytes of one GPU's KV cache: its KV heads (ModelSpec.shard) for `tokens` positions of `batch` sequences."""
    return batch * tokens * m.shard(gpus).kv_bytes_per_token(nbytes(dt.kv))


def activation_bytes(m: ModelSpec, dt: Dtypes, tokens: int, kernels: Kernels, gpus: int = 1) -> float:
    """Bytes of the largest buffers one GPU holds during a step of `tokens` tokens: the residual stream and the
    normalized input (2 x hidden), the widest fused projection output (q/k/v or gate/up, of its shard), and the
    logits of the whole vocabulary (plus its own slice before the all-gather when split)."""
    s = m.shard(gpus)
    widest = max((s.heads + 2 * s.kv_heads) * s.head_dim, s.experts_per_token * 2 * s.intermediate)
    logits = m.vocab + (s.vocab if gpus > 1 else 0)
    return tokens * ((2 * m.hidden + widest) * nbytes(dt.activations) + logits * kernels.logit_bytes)


def eager_dispatches(m: ModelSpec, table: dict | None) -> float | None:
    """Operators an eager engine dispatches for one forward step of this model: per_layer x layers + the rest, from
    the engine profile's table. None for a family the table does not count."""
    fam = (table or {}).get(m.family)
    return None if fam is None else float(fam.per_layer * m.layers + fam.outside_layers)


# names of the operators after the last layer: what a prefill computes once per sequence when the engine takes the
# logits of the last prompt position only (Prefill.logits = "last")
HEAD_OPS = ("final_norm", "project_out", "lm_head", "lm_head_fallback", "sample")


def causal_attention(op: OpCost, new_tokens, context) -> OpCost:
    """The attention operator of a step with its FLOPs counted causally: query i of the n new tokens attends to the
    c cached keys and the i new ones up to itself, c + (n + 1)/2 keys on average, where step_ops counts c + n for
    each (exact for one token; a verify step's k(k+1)/2 extra dot products are noise, a prefill's are half of its
    attention). Its bytes are left as step_ops counts them: the keys and values are read once."""
    n = np.asarray(new_tokens, dtype=float)
    return op._replace(flops=op.flops * (context + (n + 1) / 2) / (context + n))


def prefill_chunks(prompt: int, chunk: int | None) -> list[tuple[int, np.ndarray]]:
    """(tokens per sequence, contexts) of the steps a prefill of `prompt` tokens runs: one step of the whole prompt
    at context 0, or steps of `chunk` tokens at contexts 0, chunk, 2 chunk, ... and the remainder after them."""
    if chunk is None or chunk >= prompt:
        return [(prompt, np.zeros(1))]
    full, rest = divmod(prompt, chunk)
    steps = [(chunk, chunk * np.arange(full, dtype=float))]
    if rest:
        steps.append((rest, np.array([float(full * chunk)])))
    return steps


def prefill_ops(m: ModelSpec, batch, prompt: int, dt: Dtypes, kernels: Kernels, gpus: int = 1):
    """The steps of a prefill of `prompt` tokens for each of `batch` sequences, as (tokens per sequence, operators)
    pairs whose operators hold one element per step of that size (prefill_chunks): the workload of step_ops with
    causal attention FLOPs, and, where the engine computes the logits of the last prompt position only
    (kernels.prefill.logits), the operators after the last layer once per sequence instead of once per token."""
    last = kernels.prefill.logits == "last"
    out = []
    for n, contexts in prefill_chunks(prompt, kernels.prefill.chunk_tokens):
        ops = [
            causal_attention(op, n, contexts) if op.name == "attention" else op
            for op in step_ops(m, batch, n, contexts, dt, kernels, gpus)
            if not (last and op.name in HEAD_OPS)
        ]
        out.append((n, ops))
    if last:
        head = [op for op in step_ops(m, batch, 1, float(prompt), dt, kernels, gpus) if op.name in HEAD_OPS]
        out.append((1, head))
    return out


def acceptance_ops(vocab: int, batch, k, kernels: Kernels) -> list[OpCost]:
    """Rejection sampling of one verify step (sampling='rejection'): at each of the k + 1 verified positions of each
    sequence the target's probabilities over the vocabulary, at each of the k drafted ones the draft's, read once and
    turned into the accept test and the residual distribution (kernels.acceptance); its kernels launch once per step.
    Greedy verification compares argmaxes, which the sample operator already costs: no operator of its own."""
    k = np.asarray(k, dtype=float)
    elements = np.where(k > 0, batch * (2 * k + 1) * vocab, 0.0)  # target at k + 1 positions, draft at k
    acc = kernels.acceptance
    return [
        OpCost(
            "rejection_sampling",
            "elementwise",
            acc.flops_per_element * elements,
            0.0,
            0.0,
            0.0,
            elements * kernels.logit_bytes,
            np.where(k > 0, acc.launches, 0),
        )
    ]
