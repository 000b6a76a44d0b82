"""Bytes and FLOPs of one step, checked against hand counts from the architecture."""

import numpy as np
import pytest

from shivam.sim.workload import expected_distinct_experts, step_ops
from shivam.specs import Dtypes, load_engine
from shivam.specs.model import load_model

GRAPH_KERNELS = load_engine("graph").kernels  # the graph engine's kernel counts

BF16 = Dtypes("bf16", "bf16", "bf16")


def totals(ops):
    out = {}
    for field in ("flops", "weight_bytes", "kv_read_bytes", "kv_write_bytes"):
        out[field] = sum(getattr(o, field) * o.repeat for o in ops)
    return out


def test_llama_decode_reads_every_weight_once_but_only_one_embedding_row():
    m = load_model("llama-2-7b")
    t = totals(step_ops(m, 1, 1, 100, BF16, GRAPH_KERNELS))
    d, V = 4096, 32000
    assert t["weight_bytes"] == 2 * (6_738_415_616 - V * d + d)


def test_opt_tied_decode_reads_the_table_once_for_the_head_plus_one_row_and_one_position():
    m = load_model("opt-125m")
    t = totals(step_ops(m, 1, 1, 100, BF16, GRAPH_KERNELS))
    d = 768
    assert t["weight_bytes"] == 2 * (125_239_296 - 2050 * d + d + d)


def test_llama_matmul_flops_are_two_per_weight_per_token():
    m = load_model("llama-2-7b")
    ops = step_ops(m, 1, 3, 0, BF16, GRAPH_KERNELS)  # a verify step of 3 tokens at empty context
    mm = sum(o.flops * o.repeat for o in ops if o.kind == "matmul")
    d, f, L, V = 4096, 11008, 32, 32000
    assert mm == 2 * 3 * (L * (4 * d * d + 3 * d * f) + V * d)


def test_opt_two_matrix_mlp_with_biases():
    m = load_model("opt-125m")
    ops = {o.name: o for o in step_ops(m, 1, 1, 0, BF16, GRAPH_KERNELS)}
    assert ops["mlp_up"].flops == 2 * 768 * 3072 + 3072
    assert ops["mlp_down"].flops == 2 * 3072 * 768 + 768
    assert "rope" not in ops  # learned positions


def test_gqa_attention_reads_the_grouped_cache():
    m = load_model("mistral-7b")
    c, n = 511, 1
    t = totals(step_ops(m, 1, n, c, BF16, GRAPH_KERNELS))
    assert t["kv_read_bytes"] == (c + n) * 131_072
    assert t["kv_write_bytes"] == n * 131_072
    # query heads still do the arithmetic: 4 * heads * head_dim FLOPs per cached position per layer (+ softmax)
    attn = [o for o in step_ops(m, 1, n, c, BF16, GRAPH_KERNELS) if o.name == "attention"][0]
    assert attn.flops == 4 * 32 * 128 * (c + n) + 5 * 32 * (c + n)


def test_batch_shares_weights_but_not_kv():
    m = load_model("mistral-7b")
    one, eight = (
        totals(step_ops(m, 1, 1, 256, BF16, GRAPH_KERNELS)),
        totals(step_ops(m, 8, 1, 256, BF16, GRAPH_KERNELS)),
    )
    assert eight["kv_read_bytes"] == 8 * one["kv_read_bytes"]
    # weights: only the embedding rows grow with the batch
    assert eight["weight_bytes"] - one["weight_bytes"] == 7 * 4096 * 2


def test_moe_batch_one_reads_two_experts_and_many_tokens_read_all():
    m = load_model("mixtral-8x7b")
    expert = 3 * 4096 * 14336 * 2  # bytes of one expert in bf16
    ups = lambda T: [o for o in step_ops(m, 1, T, 0, BF16, GRAPH_KERNELS) if o.name in ("experts_up", "experts_down")]
    assert sum(o.weight_bytes for o in ups(1)) == pytest.approx(2 * expert)
    assert sum(o.weight_bytes for o in ups(200)) == pytest.approx(8 * expert, rel=1e-9)


def test_expected_distinct_experts_by_hand():
    # 2 tokens, each picking 2 of 8: an expert is missed by one token with probability 6/8 -> used w.p. 1 - (6/8)^2
    assert expected_distinct_experts(8, 2, 2) == pytest.approx(8 * (1 - 0.75**2))
    assert expected_distinct_experts(8, 2, 1) == pytest.approx(2)


def test_int4_weights_shrink_weight_bytes_by_the_group_format():
    m = load_model("llama-2-7b")
    w16 = totals(step_ops(m, 1, 1, 0, BF16, GRAPH_KERNELS))["weight_bytes"]
    w4 = totals(step_ops(m, 1, 1, 0, Dtypes.of("int4", "bf16"), GRAPH_KERNELS))["weight_bytes"]
    assert w4 / w16 == pytest.approx((0.5 + 4 / 128) / 2)


def test_arrays_broadcast_like_scalars():
    m = load_model("mistral-7b")
    ctx = np.array([0.0, 100.0, 1000.0])
    vec = totals(step_ops(m, 1, 1, ctx, BF16, GRAPH_KERNELS))
    for i, c in enumerate(ctx):
        assert vec["kv_read_bytes"][i] == totals(step_ops(m, 1, 1, c, BF16, GRAPH_KERNELS))["kv_read_bytes"]
