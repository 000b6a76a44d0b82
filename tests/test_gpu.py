"""Tests that need a CUDA GPU with NVML (marked gpu; skipped on CPU; run on the device machine)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT, validation_script

pytestmark = pytest.mark.gpu


def test_graph_replay_equals_eager_forward():
    import torch

    from shivam.specs.model import load_model
    from shivam.validate.engines import Decoder

    dec = Decoder(load_model(str(ROOT / "tests/data/tiny-llama.json")), 2, 256, device="cuda", seed=3)
    tokens = torch.randint(0, 256, (2, 5), device="cuda")
    eager = dec.forward(tokens, 40)
    replay = dec.step_fn(tokens, 40)
    assert torch.equal(replay(), eager)
    tokens.copy_(torch.randint(0, 256, (2, 5), device="cuda"))  # the graph reads its input buffer afresh
    assert torch.equal(replay(), dec.forward(tokens, 40))


def test_nvml_window_reads_real_energy():
    import torch

    from shivam.validate import nvml
    from shivam.validate.meter import measure

    counter = nvml.counter(0, torch.cuda.synchronize)
    a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)

    def call():
        for _ in range(10):
            a @ a
        torch.cuda.synchronize()
        return 0.0

    m = measure(counter, call, repeats=2, min_periods=10).summary()
    assert all(s >= 10 for s in m["counter_steps"])
    assert 50 < m["power_w"] < 1000  # a busy board draws between idle and its power limit


def test_validate_cli_on_gpu(tmp_path):
    pts = tmp_path / "p.json"
    pts.write_text(json.dumps([{"suite": "t", "kind": "step", "model": str(ROOT / "tests/data/tiny-llama.json")}]))
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "shivam",
            "validate",
            "--points-file",
            str(pts),
            "--out",
            str(tmp_path),
            "--repeats",
            "2",
            "--min-periods",
            "5",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert res.returncode == 0, res.stderr
    recs = [json.loads(l) for l in (tmp_path / "points.jsonl").read_text().splitlines()]
    env = [r for r in recs if r["record"] == "environment"][0]
    assert env["driver"] and "H" in env["gpu"] or env["gpu"]
    idle = [r for r in recs if r["record"] == "idle"][0]
    assert idle["with_context_w"] > 0 and idle["no_context_w"] > 0
    point = [r for r in recs if r["record"] == "point"][0]
    assert point["status"] == "ok" and point["measured"]["energy_per_call_j"] > 0


def test_memory_domain_power_read_on_hopper():
    """Hopper reports memory-domain power (on an H200, ~46 W idle and ~137 W during a device copy)."""
    import torch

    from shivam.validate import nvml

    nv, h = nvml.handle(0)
    name = nv.nvmlDeviceGetName(h)
    name = name.decode() if isinstance(name, bytes) else name
    if not any(g in name for g in ("H100", "H200", "GH200")):
        pytest.skip(f"{name} is not a Hopper GPU")
    read = nvml.memory_power_reader(nv, h)
    assert read is not None, "no memory-domain power field answered on a Hopper GPU"
    idle = read()
    src = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    dst = torch.empty_like(src)
    busy = []
    for _ in range(40):  # ~1 s of device copies; the field may be an average, so read it throughout
        for _ in range(5):
            dst.copy_(src)
        torch.cuda.synchronize()
        busy.append(read())
    assert 5 < idle < 300
    assert max(busy) > idle, f"memory power did not rise during copies: idle {idle} W, busy {max(busy)} W"


def test_ref_engine_replay_equals_eager_and_matches_sdpa():
    import torch

    from shivam.specs.model import load_model
    from shivam.validate.engines import Decoder
    from shivam.validate.ref import RefDecoder

    spec = load_model(str(ROOT / "tests/data/tiny-llama.json"))
    ref = RefDecoder(spec, 2, 256, device="cuda", seed=3)
    graph = Decoder(spec, 2, 256, device="cuda", seed=3)
    prompt = torch.randint(0, 256, (2, 40), device="cuda")
    first = ref.logits(prompt, 0)  # a prefill (bf16: near-ties may flip an argmax, so the logits are compared)
    assert (first - graph.logits(prompt, 0)).abs().max() < 0.02 * first.abs().max()
    tokens = torch.randint(0, 256, (2, 5), device="cuda")
    eager = ref.logits(tokens, 40)
    assert (eager - graph.logits(tokens, 40)).abs().max() < 0.02 * eager.abs().max()  # bf16, two kernels
    replay = ref.step_fn(tokens, 40)
    assert torch.equal(replay(), eager.argmax(-1))
    tokens.copy_(torch.randint(0, 256, (2, 5), device="cuda"))
    assert torch.equal(replay(), ref.logits(tokens, 40).argmax(-1))


def test_ref_engine_under_pdl_gives_the_same_logits_in_eager_and_graph_replay(monkeypatch):
    """Programmatic dependent launch changes when the Triton kernels start, never what they compute: every kernel
    waits on the one before it before touching memory, so a prefill (where one Triton kernel, RoPE and the cache
    write, precedes another, attention) and a verify step, eager and replayed from CUDA graphs, give the results
    they give without it, bit for bit."""
    import torch

    from shivam.specs.model import load_model
    from shivam.validate import kernels
    from shivam.validate.ref import RefDecoder

    if torch.cuda.get_device_capability()[0] < 9:
        pytest.skip("programmatic dependent launch needs compute capability 9.0")
    spec = load_model(str(ROOT / "tests/data/tiny-llama.json"))
    results = {}
    for pdl in (False, True):
        monkeypatch.setattr(kernels, "PDL", pdl)
        assert kernels.pdl_launch()["GDC"] is pdl
        ref = RefDecoder(spec, 2, 256, device="cuda", seed=3)
        prompt = torch.randint(0, 256, (2, 40), device="cuda", generator=torch.Generator("cuda").manual_seed(1))
        tokens = torch.randint(0, 256, (2, 5), device="cuda", generator=torch.Generator("cuda").manual_seed(2))
        results[pdl] = (
            ref.logits(prompt, 0),
            ref.step_fn(prompt, 0)(),
            ref.logits(tokens, 40),
            ref.step_fn(tokens, 40)(),
        )
    for without, under in zip(results[False], results[True]):
        assert torch.equal(without, under)


def test_ref_attention_kernel_on_gpu_equals_reference():
    import torch

    from shivam.validate import kernels

    for b, n, heads, kv_heads, d, lens in [(32, 5, 32, 8, 128, 1024), (1, 1, 32, 8, 128, 512), (4, 9, 8, 1, 256, 300),
                                           (2, 16, 32, 32, 96, 77), (1, 300, 16, 16, 64, 0),
                                           (1, 600, 8, 1, 256, 100)]:  # fmt: skip
        cap = lens + n
        kc = torch.randn(b, kv_heads, cap, d, device="cuda", dtype=torch.bfloat16)
        vc = torch.randn_like(kc)
        q = torch.randn(b, n, heads, d, device="cuda", dtype=torch.bfloat16)
        lens_t = torch.full((b,), lens, device="cuda", dtype=torch.int32)
        plan = kernels.AttentionPlan(b, n, heads, kv_heads, d, cap, "cuda")
        out = kernels.attention(q, kc, vc, lens_t, plan, torch.empty_like(q))
        ref = kernels.attention_reference(q, kc, vc, lens_t)
        assert (out.float() - ref.float()).abs().max() < 0.03, (b, n, heads, kv_heads, d, lens)


def test_ref_fused_attention_with_many_slices_on_gpu():
    # the path every decode and verify step takes on the GPU: RoPE and the cache write inside attention, several
    # slices merged by the last program through an atomic counter (races show only on a GPU); replayed twice
    import torch

    from shivam.validate import kernels
    from shivam.validate.engines import rope_tables

    heads, kv_heads, d = 32, 8, 128
    for b, n, c in [(32, 5, 1024), (1, 1, 8192), (4, 16, 3000)]:
        cap = c + n
        g = torch.Generator(device="cuda").manual_seed(1)
        qkv = torch.randn(b, n, (heads + 2 * kv_heads) * d, device="cuda", generator=g).bfloat16()
        cos, sin = rope_tables(d, cap, "cuda", torch.bfloat16)
        kc = torch.randn(b, kv_heads, cap, d, device="cuda", generator=g).bfloat16()
        vc = torch.randn_like(kc)
        lens = torch.full((b,), c, device="cuda", dtype=torch.int32)
        plan = kernels.AttentionPlan(b, n, heads, kv_heads, d, cap, "cuda")
        assert plan.slices > 1 and plan.fused
        q_ref, k_ref, v_ref = torch.empty(b, n, heads, d, device="cuda", dtype=torch.bfloat16), kc.clone(), vc.clone()
        kernels.rope_to_cache(qkv, cos, sin, lens, q_ref, k_ref, v_ref, heads, kv_heads, True)
        expected = kernels.attention_reference(q_ref, k_ref, v_ref, lens)
        for _ in range(2):  # the slice counters reset themselves
            out = kernels.attention(None, kc, vc, lens, plan, torch.empty_like(q_ref), None, 0, qkv, cos, sin)
            torch.cuda.synchronize()
            assert (out.float() - expected.float()).abs().max() < 0.03, (b, n, c)
        assert torch.equal(kc, k_ref) and torch.equal(vc, v_ref)


def test_fused_decode_probe_on_gpu_gives_the_engines_logits():
    # validation/fused_decode.py in bf16 on the GPU (its GEMVs accumulate in another order than cuBLAS's)
    assert validation_script("fused_decode").check("cuda", 3) < 0.02
