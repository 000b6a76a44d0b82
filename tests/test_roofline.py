"""The roofline and energy equations on a synthetic GPU whose answers are computed by hand."""

import pytest

from shivam.hardware import Params
from shivam.roofline import step_cost
from shivam.stage1 import reload_vs_reuse
from shivam.workload import Dtypes, OpCost

P = Params(bandwidth_Bps=1e12, peak_flops={"bf16": 100e12, "fp32": 10e12}, memory_efficiency=0.5,
           compute_efficiency=0.5, per_kernel_s=1e-6, per_step_s=10e-6, per_iteration_s=0.0, static_power_w=100.0,
           active_power_w=50.0, dram_j_per_byte=1e-12, dram_floor_j_per_byte=0.5e-12, j_per_flop={"bf16": 1e-13,
           "fp32": 1e-12}, pcie_Bps=10e9, pcie_j_per_byte=2e-12, capacity_bytes=1e12, source="test",
           attention_cta_Bps=1e9, multiprocessors=4, misaligned_matmul_fraction=0.1, per_light_kernel_s=0.5e-6)


def test_memory_bound_op_by_hand():
    op = OpCost("mm", "matmul", flops=1e9, weight_bytes=1e9, kv_read_bytes=0, kv_write_bytes=0, act_bytes=0,
                launches=2, repeat=3)
    c = step_cost([op], P, "bf16")
    t_op = 1e9 / (1e12 * 0.5)  # 2 ms memory vs 1e9 / 50e12 = 0.02 ms compute
    assert c.busy_s == pytest.approx(3 * t_op)
    assert c.time_s == pytest.approx(3 * t_op + 3 * 2 * 1e-6 + 10e-6)
    assert c.bound == "memory"
    e = 100 * c.time_s + 50 * 3 * t_op + 1e-12 * 3e9 + 1e-13 * 3e9
    assert c.energy_j == pytest.approx(e)


def test_compute_bound_op_by_hand():
    op = OpCost("mm", "matmul", flops=1e12, weight_bytes=1e6, kv_read_bytes=0, kv_write_bytes=0, act_bytes=0,
                launches=1)
    c = step_cost([op], P, "bf16")
    assert c.busy_s == pytest.approx(1e12 / 50e12)
    assert c.bound == "compute"


def test_latency_bound_kernel_by_hand():
    # 10 blocks on 4 multiprocessors: 3 waves, each block streaming 1 MB at 1 GB/s -> 3 ms, above the 1 ms roofline
    op = OpCost("attn", "attention", flops=0, weight_bytes=0, kv_read_bytes=5e8, kv_write_bytes=0, act_bytes=0,
                launches=1, block_bytes=1e6, blocks=10)
    assert step_cost([op], P, "bf16").busy_s == pytest.approx(3e-3)
    # the same kernel with 4 blocks runs in one wave (1 ms) and meets the roofline (5e8 B at 0.5 TB/s = 1 ms) ...
    assert step_cost([op._replace(blocks=4)], P, "bf16").busy_s == pytest.approx(1e-3)
    # ... and with more bytes in total than the blocks' floor, the roofline governs
    assert step_cost([op._replace(blocks=4, kv_read_bytes=1e9)], P, "bf16").busy_s == pytest.approx(2e-3)


def test_masked_attention_floor_follows_keys_and_head_dim():
    """Several new tokens: each (head, 128 queries) block streams its head's K and V, (context + n) x head_dim x 2
    values of 2 bytes. Gemma-2B-like head (256) at n=9, c=512: 521 x 256 x 2 x 2 = 533,504 bytes per block."""
    from shivam.modelspec import load_model
    from shivam.workload import step_ops

    m = load_model("gemma-2b")
    att = {o.name: o for o in step_ops(m, 1, 9, 512, Dtypes.of("bf16"))}["attention"]
    assert att.block_bytes == pytest.approx(521 * 256 * 2 * 2)
    assert att.blocks == m.heads * 1  # 9 queries fit one 128-query tile
    one = {o.name: o for o in step_ops(m, 1, 1, 512, Dtypes.of("bf16"))}
    assert one["attention"].block_bytes == 0 and "causal_mask" not in one  # one token: no mask, fused decode kernel
    wide = {o.name: o for o in step_ops(m, 2, 129, 512, Dtypes.of("bf16"))}["attention"]
    assert wide.blocks == 2 * m.heads * 2  # 129 queries take two tiles
    assert wide.block_bytes == pytest.approx(641 * 256 * 2 * 2)  # one pass over the keys at head_dim 256
    # head_dim 64 (Qwen2-0.5B): a block holding more than 64 queries passes over its keys twice
    q = load_model("qwen2-0.5b")
    assert q.head_dim == 64
    att = {n: {o.name: o for o in step_ops(q, 1, n, 512, Dtypes.of("bf16"))}["attention"].block_bytes for n in (2, 129)}
    assert att == {2: pytest.approx(514 * 64 * 2 * 2), 129: pytest.approx(2 * 641 * 64 * 2 * 2)}


def test_overhead_bound_step():
    op = OpCost("tiny", "elementwise", flops=10, weight_bytes=100, kv_read_bytes=0, kv_write_bytes=0, act_bytes=0,
                launches=50)
    assert step_cost([op], P, "bf16").bound == "overhead"


def test_stage1_saving_follows_the_copy_share():
    # reload: r (copy + gemm); reuse: copy + r gemm -> saving = (r - 1) copy / (r (copy + gemm))
    res = reload_vs_reuse(P, 1024, 1024, Dtypes.of("bf16"), [1, 10, 100])
    copy, gemm = res["copy_energy_j"], res["gemm_energy_j"]
    assert copy > 0 and gemm > 0
    for r, s in zip(res["reuse"], res["energy_saving"]):
        assert s == pytest.approx((r - 1) * copy / (r * (copy + gemm)))
    # the copy moves 1024^2 bf16 weights over PCIe at 10 GB/s, then writes them to DRAM at 0.5 TB/s; one launch
    w = 2 * 1024 ** 2
    assert res["copy_time_s"] == pytest.approx(w / 10e9 + w / 0.5e12 + 1e-6)


def test_energy_is_linear_in_the_fitted_coefficients():
    from shivam.roofline import energy_features
    from shivam.workload import step_ops
    from shivam.modelspec import load_model

    c = step_cost(step_ops(load_model("mistral-7b"), 4, 9, 300, Dtypes.of("bf16")), P, "bf16")
    f = energy_features(c)
    coef = {"static_power_w": P.static_power_w, "active_power_w": P.active_power_w,
            "dram_j_per_byte": P.dram_j_per_byte, "compute_scale": 1.0, "pcie_j_per_byte": P.pcie_j_per_byte}
    assert sum(coef[k] * f[k] for k in coef) == pytest.approx(c.energy_j)


def test_a_misaligned_matmul_runs_at_the_fallback_rate():
    # 1e12 FLOP on 100 TFLOP/s x 0.5 efficiency = 20 ms; misaligned (fraction 0.1 in P): 200 ms
    op = OpCost("head", "matmul_misaligned", flops=1e12, weight_bytes=1e6, kv_read_bytes=0, kv_write_bytes=0,
                act_bytes=0, launches=1)
    assert step_cost([op], P, "bf16").busy_s == pytest.approx(0.2)


def test_only_an_unaligned_vocabulary_makes_the_head_misaligned():
    from shivam.modelspec import load_model
    from shivam.workload import step_ops

    def head(model, weights="bf16", act=None):
        return {o.name: o for o in step_ops(load_model(model), 1, 1, 16, Dtypes.of(weights, act))}["lm_head"].kind

    # 50257 x 2 bytes of logits is not a multiple of 16; OPT's 50272 and Mistral's 32000 are
    assert [head(m) for m in ("gpt2", "opt-125m", "mistral-7b")] == ["matmul_misaligned", "matmul", "matmul"]
    # what counts is the output row, not the weights' storage: int4 weights (0.53 B each) change nothing
    assert head("mistral-7b", "int4") == "matmul" and head("gpt2", "fp8", "fp8") == "matmul_misaligned"


def test_light_kernels_cost_their_own_rate():
    # 2 regular launches at 1 us and 3 light ones at 0.5 us, plus the 10 us step overhead
    op = OpCost("mm", "matmul", flops=0, weight_bytes=0, kv_read_bytes=0, kv_write_bytes=0, act_bytes=0,
                launches=2, light_launches=3)
    c = step_cost([op], P, "bf16")
    assert c.overhead_s == pytest.approx(2e-6 + 1.5e-6 + 10e-6) and c.launches == 5


def test_fp8_activations_add_a_cast_and_pad_odd_rows():
    from shivam.modelspec import load_model
    from shivam.workload import step_ops

    m = load_model("mistral-7b")
    fp8 = Dtypes.of("fp8", "fp8")
    one = {o.name: o for o in step_ops(m, 1, 1, 512, fp8)}["mlp_up"]
    sixteen = {o.name: o for o in step_ops(m, 16, 1, 512, fp8)}["mlp_up"]
    bf16 = {o.name: o for o in step_ops(m, 1, 1, 512, Dtypes.of("bf16"))}["mlp_up"]
    # the engine: cast (1) + zeros and concatenation for 1 row (2, none for 16 rows); bf16 runs the GEMM alone
    assert (one.launches, one.light_launches) == (1, 3)
    assert (sixteen.launches, sixteen.light_launches) == (1, 1)
    assert (bf16.launches, bf16.light_launches) == (1, 0)
