"""The validator's engines on the CPU with tiny configs: their logic, not their speed."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import ROOT  # noqa: E402

from shivam.specs.model import load_model  # noqa: E402
from shivam.validate.engines import Decoder, spec_call, stage1_call, step_call  # noqa: E402

TINY_LLAMA = str(ROOT / "tests/data/tiny-llama.json")
TINY_OPT = str(ROOT / "tests/data/tiny-opt.json")


def _logits_path(dec, tokens, c):
    return dec.forward(tokens, c)


@pytest.mark.parametrize("cfg", [TINY_LLAMA, TINY_OPT])
def test_kv_cache_one_at_a_time_equals_all_at_once(cfg):
    # a verify step of n tokens must see exactly what n decode steps see: same cache, positions and causal mask
    torch.manual_seed(0)
    dec = Decoder(load_model(cfg), 2, 64, device="cpu", seed=1)
    prompt = torch.randint(0, 200, (2, 6))
    dec.forward(prompt, 0)
    new = torch.randint(0, 200, (2, 4))
    together = dec.forward(new, 6)
    one_by_one = torch.cat([dec.forward(new[:, i : i + 1], 6 + i) for i in range(4)], dim=1)
    assert torch.equal(together, one_by_one)


def test_step_call_counts_tokens():
    dec = Decoder(load_model(TINY_LLAMA), 3, 64, device="cpu")
    assert step_call(dec, 5, 10)() == 15


def test_spec_loop_yields_tau_tokens_on_average():
    # drawn acceptance must reproduce (1 - a^(k+1)) / (1 - a) per sequence: a=0.7, k=3 -> 2.533
    target = Decoder(load_model(TINY_LLAMA), 4, 64, device="cpu")
    draft = Decoder(load_model(TINY_OPT), 4, 64, device="cpu")  # another vocabulary (300 vs 256), folded
    call = spec_call(target, draft, 3, 0.7, 20, seed=5)
    mean = np.mean([call() for _ in range(400)]) / 4
    assert mean == pytest.approx((1 - 0.7**4) / 0.3, rel=0.04)


def test_spec_loop_alpha_extremes():
    target = Decoder(load_model(TINY_LLAMA), 2, 64, device="cpu")
    draft = Decoder(load_model(TINY_LLAMA), 2, 64, device="cpu")
    assert spec_call(target, draft, 4, 1.0, 10)() == 2 * 5
    assert spec_call(target, draft, 4, 0.0, 10)() == 2 * 1


def test_context_beyond_cache_is_refused():
    from shivam.errors import ShivamError

    dec = Decoder(load_model(TINY_LLAMA), 1, 32, device="cpu")
    with pytest.raises(ShivamError, match="exceeds"):
        step_call(dec, 4, 30)


def test_stage1_runs_the_sequence():
    assert stage1_call(32, 8, 3, True, "bf16", "cpu")() == 0.0


def test_moe_is_refused_by_the_graph_engine():
    from shivam.errors import ShivamError

    with pytest.raises(ShivamError, match="mixture-of-experts"):
        Decoder(load_model("mixtral-8x7b"), 1, 16, device="cpu")


def test_hf_engine_loads_local_safetensors_only(tmp_path):
    from shivam.errors import ShivamError
    from shivam.validate.engines import generate_call, hf_model

    model = hf_model(TINY_LLAMA, "bf16", "cpu")
    model.save_pretrained(tmp_path / "ckpt", safe_serialization=True)
    loaded = hf_model(TINY_LLAMA, "bf16", "cpu", weights=str(tmp_path / "ckpt"))
    w0 = dict(model.named_parameters())["model.embed_tokens.weight"]
    assert torch.equal(dict(loaded.named_parameters())["model.embed_tokens.weight"], w0)
    call = generate_call(loaded, prompt=6, gen=5, batch=2)
    assert call() == 10 and call.stats["iterations"] == 4  # prefill + 4 decode forwards for 5 new tokens
    (tmp_path / "pickled").mkdir()
    (tmp_path / "pickled" / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(ShivamError, match="safetensors"):
        hf_model(TINY_LLAMA, "bf16", "cpu", weights=str(tmp_path / "pickled"))


def test_assisted_generation_counts_its_iterations(tmp_path):
    # a draft with the target's own weights is always right: far fewer target forwards than tokens
    from shivam.validate.engines import generate_call, hf_model

    target = hf_model(TINY_LLAMA, "bf16", "cpu")
    target.save_pretrained(tmp_path, safe_serialization=True)
    twin = hf_model(TINY_LLAMA, "bf16", "cpu", weights=str(tmp_path))
    call = generate_call(target, prompt=6, gen=12, batch=1, draft_model=twin, k=3)
    assert call() == 12
    assert 1 <= call.stats["iterations"] <= 6  # plain decoding would need 11


def test_eager_dispatch_table_is_what_the_counting_script_measures():
    # the hf engine profile's eager_dispatches table is measured, not estimated: re-count one family with the
    # installed transformers (if it is the version the table was counted with) and compare
    import sys

    transformers = pytest.importorskip("transformers")
    from shivam.sim.workload import eager_dispatches
    from shivam.specs import load_engine
    from shivam.specs.model import load_model

    table = load_engine("hf").eager_dispatches
    if table.transformers != transformers.__version__:
        pytest.skip(f"table counted with transformers {table.transformers}, installed {transformers.__version__}")
    sys.path.insert(0, str(ROOT / "validation"))
    from count_eager_ops import dispatches

    one, two = dispatches("llama-68m", 1), dispatches("llama-68m", 2)
    assert table.families["llama"].per_layer == two - one
    assert eager_dispatches(load_model("llama-68m"), table.families) == two  # llama-68m has 2 layers


def test_hf_static_engine_generates_every_token_with_a_static_cache():
    # cache_implementation="static": exactly `gen` new tokens per sequence, one forward per token after the prefill
    from shivam.validate.engines import generate_call, hf_model

    model = hf_model(TINY_LLAMA, "fp32", "cpu")
    dynamic, static = generate_call(model, 6, 5, 2), generate_call(model, 6, 5, 2, static=True)
    assert dynamic() == static() == 10
    assert static.stats["iterations"] == 4


def test_generate_calls_are_split_into_set_up_prefill_and_steps(tmp_path):
    # the streamer's clock sees the prompt, then each step's tokens: 5 new tokens are a prefill and 4 steps; the
    # phases add up to the call's wall time measured outside it
    import time

    from shivam.validate.engines import generate_call, hf_model

    model = hf_model(TINY_LLAMA, "fp32", "cpu")
    call = generate_call(model, 6, 5, 2, static=True)
    t0 = time.perf_counter()
    call()
    wall = time.perf_counter() - t0
    (ph,) = call.stats["phases"]
    assert ph["steps"] == call.stats["iterations"] == 4
    parts = [ph["setup_s"], ph["prefill_s"], ph["step_s"], ph["finish_s"]]
    assert all(x >= 0 for x in parts) and ph["step_s"] > 0
    total = ph["setup_s"] + ph["prefill_s"] + ph["steps"] * ph["step_s"] + ph["finish_s"]
    assert total <= wall and total == pytest.approx(wall, abs=2e-3)
    # assisted: one hand-over per iteration (the target's forwards after the first)
    model.save_pretrained(tmp_path, safe_serialization=True)
    twin = hf_model(TINY_LLAMA, "fp32", "cpu", weights=str(tmp_path))
    assisted = generate_call(model, 6, 12, 1, draft_model=twin, k=3)
    assisted()
    assert assisted.stats["phases"][0]["steps"] == assisted.stats["iterations"]


def test_call_phases_by_hand():
    from shivam.errors import ShivamError
    from shivam.validate.engines import call_phases
    from shivam.validate.runner import phase_summary

    # started at 10, first forward at 10.5, the prompt handed over at 10.25, tokens at 13, 14, 15, 16, idle at 16.5
    ph = call_phases(10.0, 10.5, [10.25, 13.0, 14.0, 15.0, 16.0], 16.5)
    assert ph == {"setup_s": 0.5, "prefill_s": 2.5, "step_s": 1.0, "steps": 3.0, "finish_s": 0.5}
    other = call_phases(0.0, 1.0, [0.5, 4.0, 10.0], 10.0)  # one step of 6 s
    summary = phase_summary([ph, other, ph])
    assert summary["calls"] == 3 and summary["step_s"] == 1.0 and summary["step_range_s"] == [1.0, 6.0]
    assert summary["setup_range_s"] == [0.5, 1.0]
    with pytest.raises(ShivamError, match="streamer"):
        call_phases(0.0, 0.5, [1.0], 2.0)
    with pytest.raises(ShivamError, match="ran no forward"):
        call_phases(0.0, None, [1.0, 2.0], 2.0)


def test_ref_points_run_on_the_reference_decoder():
    from shivam.calibrate.points import Point
    from shivam.validate.ref import RefDecoder
    from shivam.validate.runner import Workbench

    bench = Workbench("cpu")
    p = Point(suite="t", engine="ref", kind="spec", model=TINY_LLAMA, draft=TINY_LLAMA, k=2, alpha=1.0, context=8)
    assert bench.call_for(p)() == 3
    assert all(isinstance(d, RefDecoder) for d in bench._decoders.values())
    with pytest.raises(Exception, match="generate points only"):
        bench.call_for(Point(suite="t", engine="hf", kind="step", model=TINY_LLAMA))
