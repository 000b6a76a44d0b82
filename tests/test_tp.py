"""Tensor parallelism: the split engine against the whole one (two gloo processes on the CPU), and the model against
hand calculations."""

import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from conftest import ROOT

import shivam
from shivam.sim.roofline import collective_time
from shivam.sim.scenario import Scenario
from shivam.sim.workload import tensor_parallel_transfers, weight_bytes
from shivam.specs import Dtypes, load_model, make_params
from shivam.specs.gpu import load_gpu
from shivam.specs.model import spec_from_config
from shivam.validate.tp import TensorParallelDecoder, start_process_group

# --- the engine: N processes compute what one computes ------------------------------------------------------------
CONFIGS = {
    # GQA, 2 KV heads: each of 2 processes holds one
    "llama-gqa": json.loads((ROOT / "tests/data/tiny-llama.json").read_text()),
    # one KV head, replicated on both processes; q/k/v biases; tied embeddings; an odd vocabulary (padded slice)
    "qwen2-mqa": {
        "model_type": "qwen2",
        "hidden_size": 32,
        "intermediate_size": 48,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 1,
        "vocab_size": 101,
        "max_position_embeddings": 64,
        "tie_word_embeddings": True,
    },
    # LayerNorm, learned positions, biases everywhere, a 2-matrix MLP
    "opt": json.loads((ROOT / "tests/data/tiny-opt.json").read_text()),
}
STEPS = [(3, 0), (1, 3), (2, 4)]  # (new tokens, context): a verify step, a decode step, another verify step


def _logits(cfg: dict, rank: int, world: int) -> list[torch.Tensor]:
    spec = spec_from_config(cfg, "tiny")
    dec = TensorParallelDecoder(spec, batch=2, max_context=16, rank=rank, world=world, device="cpu", seed=7)
    g = torch.Generator().manual_seed(1)
    out = []
    for n, c in STEPS:
        tokens = torch.randint(0, spec.vocab, (2, n), generator=g)
        out.append(dec.logits(tokens, c))
    return out


def _worker(rank: int, world: int, port: int, cfg: dict, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world))
    r, w, device = start_process_group("gloo")
    assert (r, w, device.type, os.environ["NCCL_NVLS_ENABLE"]) == (rank, world, "cpu", "0")
    assert os.environ["TORCH_SYMM_MEM_DISABLE_MULTICAST"] == os.environ["NVSHMEM_DISABLE_NVLS"] == "1"
    torch.save(_logits(cfg, rank, world), os.path.join(folder, f"rank{rank}.pt"))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("name", CONFIGS)
def test_two_processes_give_the_logits_of_one(name, tmp_path):
    cfg = CONFIGS[name]
    whole = _logits(cfg, 0, 1)
    mp.spawn(_worker, args=(2, _free_port(), cfg, str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        split = torch.load(tmp_path / f"rank{rank}.pt")
        for a, b in zip(whole, split):
            assert a.shape == b.shape
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)
    assert whole[0].abs().max() > 0.01  # the logits compared are not all zero


def test_a_shard_holds_its_share_of_the_weights():
    spec = spec_from_config(CONFIGS["llama-gqa"], "tiny")  # d 64, 4 heads of 16, 2 KV heads, f 128, V 256
    dec = TensorParallelDecoder(spec, batch=1, max_context=8, rank=1, world=2, device="cpu")
    layer = dec.layers[0]
    assert layer["qkv"][0].shape == ((2 + 2 * 1) * 16, 64)  # 2 query heads and 1 KV head (k and v)
    assert layer["o_proj"][0].shape == (64, 2 * 16)
    assert layer["up"][0].shape == (2 * 64, 64) and layer["down"][0].shape == (64, 64)
    assert dec.embed.shape == (128, 64) and dec.vocab_start == 128


# --- the model against hand calculations ----------------------------------------------------------------------------
H200 = make_params(load_gpu("h200"))
BF16 = Dtypes.of("bf16", "bf16")


def test_two_all_reduces_per_layer_of_batch_x_tokens_x_hidden():
    m = load_model("llama-2-70b")
    transfers = {t.name: t for t in tensor_parallel_transfers(m, 8, 5, BF16, H200.kernels, 2)}
    # 8 sequences x 5 new tokens x 8192 x 2 bytes = 655,360 bytes, after o_proj and after down in each of 80 layers
    for name in ("attention_all_reduce", "mlp_all_reduce"):
        assert (transfers[name].collective, transfers[name].nbytes, transfers[name].repeat) == (
            "all_reduce",
            655_360,
            80,
        )
    assert transfers["embed_all_reduce"].repeat == 1
    # the logits of 40 tokens over 32,000 words, fp32, gathered
    assert transfers["logits_all_gather"].nbytes == 40 * 32_000 * 4
    assert tensor_parallel_transfers(m, 8, 5, BF16, H200.kernels, 1) == []


def test_ring_all_reduce_time_by_hand():
    # 4 GPUs, 1 MB: 2 x 3 = 6 steps of 250 kB at 450 GB/s, plus 6 latencies of 2 us
    assert H200.link_Bps == 450e9 and H200.link_latency_s == pytest.approx(2e-6)
    want = 6 * 250_000 / 450e9 + 6 * 2e-6
    assert collective_time("all_reduce", 1_000_000, 4, H200) == pytest.approx(want, rel=1e-12)
    assert collective_time("all_gather", 1_000_000, 4, H200) == pytest.approx(want / 2, rel=1e-12)


def test_weights_per_gpu_halve():
    m = load_model("llama-2-70b")
    one, two = weight_bytes(m, BF16), weight_bytes(m, BF16, 2)
    norms = (2 * 80 + 1) * 8192 * 2  # RMSNorm weights stay whole on every GPU
    assert two == pytest.approx((one - norms) / 2 + norms, rel=0, abs=0)


def test_kv_heads_are_replicated_beyond_their_count():
    m = load_model("llama-2-70b")  # 8 KV heads
    assert m.shard(8).kv_heads == 1 and m.kv_head_copies(8) == 1
    assert m.shard(2).kv_heads == 4
    g = load_model("gemma-2b")  # one KV head: every GPU holds it
    assert g.shard(2).kv_heads == 1 and g.kv_head_copies(2) == 2
    r = shivam.predict(model="gemma-2b", gpu="h200", k=0, tp=2)
    assert any("replicated on 2 GPUs" in w for w in r.warnings)


def test_the_default_is_one_gpu_and_unchanged():
    a = shivam.predict(model="llama-2-7b", gpu="h200", k=[0, 4], alpha=0.8)
    b = shivam.predict(model="llama-2-7b", gpu="h200", k=[0, 4], alpha=0.8, tp=1, draft_tp=1)
    assert [r["energy_per_token_j"] for r in a.rows] == [r["energy_per_token_j"] for r in b.rows]
    assert a.rows[0]["tp"] == 1 and a.rows[0]["breakdown_j"]["link"] == 0.0


def test_a_split_step_by_hand():
    # t_TP = t_shard + the collectives; E_TP = 2 E_shard + 2 P_static t_collectives + e_link x link bytes
    m = load_model("llama-2-70b")
    scn = Scenario(target=m, params=H200, dtypes=BF16, tp=2)
    one_gpu = Scenario(target=m.shard(2), params=H200, dtypes=BF16)
    shard = one_gpu._step(m.shard(2), 1, 300)  # the shard's operators, sampling over its own slice
    split = scn.verify_step(0, 300)
    hidden = 8192 * 2
    t_ar = 2 * (hidden / 2) / 450e9 + 2 * 2e-6
    t_ag = (32_000 * 4 / 2) / 450e9 + 2e-6
    t_links = 161 * t_ar + t_ag
    sent = 161 * 2 * hidden + 32_000 * 4
    assert float(split.link_s) == pytest.approx(t_links, rel=1e-12)
    assert float(split.link_bytes) == pytest.approx(sent, rel=1e-12)
    assert float(split.e_link) == pytest.approx(2 * H200.static_power_w * t_links + H200.link_j_per_byte * sent)
    # the shard's own step differs from `shard` only in sampling over the whole vocabulary (32,000 fp32 logits)
    assert float(split.time_s) == pytest.approx(float(shard.time_s) + t_links, rel=2e-3)
    assert float(split.energy_j - split.e_link) == pytest.approx(2 * float(shard.energy_j), rel=2e-3)


def test_a_draft_on_one_gpu_leaves_the_others_waiting_at_static_power():
    m, d = load_model("llama-2-70b"), load_model("llama-68m")
    scn = Scenario(target=m, params=H200, dtypes=BF16, draft=d, tp=4, draft_tp=1)
    alone = Scenario(target=d, params=H200, dtypes=BF16).verify_step(0, 200)
    step = scn.draft_step(200)
    assert float(step.time_s) == float(alone.time_s)
    assert float(step.e_idle) == pytest.approx(3 * H200.static_power_w * float(alone.time_s))
    assert float(step.energy_j) == pytest.approx(float(alone.energy_j) + float(step.e_idle))


# --- memory per GPU: Llama-2-70B (68,976,648,192 parameters, 327,680 KV bytes per token in bf16) -----------------
def _fits(gpu: str, tp: int, **shape) -> bool:
    try:
        shivam.predict(model="llama-2-70b", gpu=gpu, k=0, tp=tp, **shape)
    except shivam.ShivamError as exc:
        assert "does not fit" in str(exc)
        return False
    return True


def test_llama_2_70b_memory_per_gpu_as_arithmetic_says():
    # batch 32 of 1024 + 1024 tokens: 137.95 GB of bf16 weights + 32 x 2049 x 327,680 = 21.49 GB of KV cache on one
    # GPU, above the 143,771 MiB (150.76 GB) an H200's driver reports
    shape = dict(batch=32, prompt=1024, gen=1024)
    assert 68_976_648_192 * 2 + 32 * 2049 * 327_680 > 143_771 * 2**20
    assert not _fits("h200", 1, **shape) and _fits("h200", 2, **shape)
    # the A100-80GB: half of that (~79.7 GB) fits in 80 GiB (85.9 GB) at TP 2, and a quarter at TP 4
    assert not _fits("a100-80gb", 1, **shape) and _fits("a100-80gb", 2, **shape) and _fits("a100-80gb", 4, **shape)
    # batch 8 of 1024 + 1024 tokens (143.3 GB) and batch 1 of 128 + 128 tokens (137.98 GB) fit one H200
    assert _fits("h200", 1, batch=8, prompt=1024, gen=1024)
    assert _fits("h200", 1)


def test_the_refusal_names_the_least_tp_that_fits():
    with pytest.raises(shivam.ShivamError, match="use --tp 2 or more"):
        shivam.predict(model="llama-2-70b", gpu="a100-80gb", k=0)
    with pytest.raises(shivam.ShivamError, match="use --tp 4 or more"):
        shivam.predict(model="llama-2-70b", gpu="a100-40gb", k=0)


@pytest.mark.parametrize("gpu", ["h200", "a100-80gb"])
@pytest.mark.parametrize("tp", [2, 4, 8])
def test_llama_2_70b_predictions_at_tp_2_4_8(gpu, tp):
    r = shivam.predict(model="llama-2-70b", gpu=gpu, k=[0, 4], alpha=0.8, draft="llama-68m", tp=tp)
    base = r.rows[0]
    assert base["tp"] == tp and r.meta["link"] == "nvlink"
    assert np.isfinite(base["energy_per_token_j"]) and base["breakdown_j"]["link"] > 0
    assert base["breakdown_j"]["idle"] == 0 and r.rows[1]["breakdown_j"]["idle"] > 0  # the draft on one of tp GPUs


def test_splitting_a_7b_model_costs_energy_on_h200():
    e = [shivam.predict(model="llama-2-7b", gpu="h200", k=0, tp=n).rows[0]["energy_per_token_j"] for n in (1, 2, 4, 8)]
    assert e == sorted(e)  # every split spends more: each GPU's static power and launches, plus the all-reduces


# --- bad input: one line, exit 2 ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--tp", "3"], "--tp 3: llama-2-70b does not split over 3 GPUs"),
        (["--tp", "16"], "--tp 16 is out of range"),
        (["--tp", "0"], "--tp 0 is out of range"),
        (["--tp", "two"], "cannot parse --tp"),
        (["--tp", "2", "--draft-tp", "4"], "--draft-tp 4 exceeds --tp 2"),
        (["--tp", "1"], "use --tp 2 or more"),
    ],
)
def test_bad_tp_is_one_line(cli, args, needle):
    res = cli("predict", "--model", "llama-2-70b", "--gpu", "a100-80gb", "--k", "0", *args)
    assert res.returncode == 2
    assert len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


def test_a_gpu_file_without_a_link_runs_tp_1_only(cli, tmp_path):
    mine = json.loads((ROOT / "hardware/l4.json").read_text())
    del mine["link"]
    mine["id"] = "my-l4"
    path = tmp_path / "my-l4.json"
    path.write_text(json.dumps(mine))
    assert cli("predict", "--model", "opt-125m", "--gpu", str(path), "--k", "0").returncode == 0
    res = cli("predict", "--model", "opt-125m", "--gpu", str(path), "--k", "0", "--tp", "2")
    assert res.returncode == 2 and "no GPU-to-GPU link" in res.stderr


def test_every_bundled_gpu_names_its_link():
    forms = {"h200": "nvlink", "h100-sxm": "nvlink", "a100-80gb": "nvlink", "a100-40gb": "nvlink", "h100-pcie": "pcie"}
    for gid, kind in forms.items():
        link = load_gpu(gid).link
        assert link.kind == kind and link.basis
    assert load_gpu("h200").link.bandwidth_gbs == 450 and load_gpu("a100-80gb").link.bandwidth_gbs == 300
    for gid in ("l4", "l40s", "a10g", "t4", "rtx-4090"):
        assert load_gpu(gid).link.kind == "pcie"


def test_validate_tp_refuses_a_machine_with_too_few_gpus(cli):
    res = cli("validate", "--tp", "2")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "--tp 2 needs 2 GPUs" in res.stderr


def test_predict_does_not_import_torch():
    import subprocess
    import sys

    code = (
        "import sys, shivam; shivam.predict(model='llama-2-70b', gpu='h200', k=[0, 2], tp=2); "
        "assert 'torch' not in sys.modules"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr
