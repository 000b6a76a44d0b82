"""Parameter counts and KV sizes against published figures (independent of this code)."""

import json

import pytest
from conftest import ROOT

from shivam.specs.dtypes import nbytes
from shivam.specs.model import load_model

# Published totals: OPT paper / HF model cards, Meta's Llama 2 card, Mistral AI, and HF's num_parameters() as reported
# in the model cards and papers (GPT-2 124,439,808; Gemma-2B 2,506,172,416; Qwen2-0.5B 494,032,768; Phi-3-mini
# 3,821,079,552; Mixtral 46.7 B total, 12.9 B active).
PUBLISHED = {
    "opt-125m": 125_239_296,
    "opt-1.3b": 1_315_758_080,
    "llama-2-7b": 6_738_415_616,
    "mistral-7b": 7_241_732_096,
    "mixtral-8x7b": 46_702_792_704,
    "gpt2": 124_439_808,
    "gemma-2b": 2_506_172_416,
    "qwen2-0.5b": 494_032_768,
    "phi-3-mini": 3_821_079_552,
    "opt-6.7b": 6_658_473_984,
    "llama-2-13b": 13_015_864_320,
    "tinyllama-1.1b": 1_100_048_384,
}


@pytest.mark.parametrize("alias,count", PUBLISHED.items())
def test_parameter_count_matches_published(alias, count):
    assert load_model(alias).param_count() == count


def test_mixtral_active_parameters_are_about_12_9_billion():
    # Mistral AI: "12.9B active parameters"; hand count: total minus 6 idle experts x 3 x 4096 x 14336 per layer
    m = load_model("mixtral-8x7b")
    assert m.active_param_count() == 46_702_792_704 - 32 * 6 * 3 * 4096 * 14336
    assert round(m.active_param_count() / 1e9, 1) == 12.9


@pytest.mark.parametrize("alias,kv", [("llama-2-7b", 524_288), ("mistral-7b", 131_072)])
def test_kv_bytes_per_token_16bit(alias, kv):
    assert load_model(alias).kv_bytes_per_token(nbytes("bf16")) == kv


def test_attention_kinds():
    assert load_model("llama-2-7b").attention_kind == "MHA"
    assert load_model("mistral-7b").attention_kind.startswith("GQA")
    assert load_model("gemma-2b").attention_kind == "MQA"


def test_opt_350m_projects_its_512_wide_embedding():
    m = load_model("opt-350m")
    assert (m.embed_dim, m.hidden, m.final_norm) == (512, 1024, False)
    assert [l.name for l in m.embedding_linears()] == ["project_in", "project_out"]


def test_model_by_hf_id_and_by_path(tmp_path):
    assert load_model("mistralai/Mistral-7B-Instruct-v0.2").param_count() == 7_241_732_096
    from shivam.bundled import data_dir

    cfg = json.loads((data_dir("models") / "opt-1.3b.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert load_model(str(tmp_path)).param_count() == 1_315_758_080
    assert load_model(str(tmp_path / "config.json")).param_count() == 1_315_758_080


def test_int4_counts_its_group_scales():
    # 4 bits per weight + one fp16 scale and one fp16 zero per 128 weights
    assert nbytes("int4") == pytest.approx(0.5 + 4 / 128)


@pytest.mark.parametrize("alias,vocab,billions", [("llama-2-70b", 32_000, 69.0), ("llama-3-70b", 128_256, 70.6)])
def test_70b_parameter_counts(alias, vocab, billions):
    # hand count: 80 layers of q and o (8192 x 8192 each), k and v (8192 x 1024 each: 8 KV heads of 128), gate, up
    # and down (8192 x 28672 each), two RMSNorms; untied embedding and LM head; the final norm
    layer = 2 * 8192 * 8192 + 2 * 8192 * 1024 + 3 * 8192 * 28672 + 2 * 8192
    m = load_model(alias)
    assert m.param_count() == 80 * layer + 2 * vocab * 8192 + 8192
    assert round(m.param_count() / 1e9, 1) == billions
    assert (m.kv_heads, m.max_context) == (8, 4096 if alias == "llama-2-70b" else 8192)


def test_gpu_memory_is_what_a_program_can_allocate():
    # vendors state GPU memory in binary GB; the H200's driver reports 143,771 MiB (the cards measured), so
    # Llama-3-70B's 70.6e9 bf16 weights (141.1e9 bytes) fit one H200 with room for a short cache
    import shivam
    from shivam.errors import ShivamError
    from shivam.specs.gpu import GPU, load_gpu

    assert load_gpu("h200").capacity_bytes == pytest.approx(143_771 * 2**20, rel=1e-5)
    assert load_gpu("t4").capacity_bytes == pytest.approx(16 * 2**30 * 15 / 16, rel=1e-5)  # GDDR6 with ECC on
    assert load_gpu("a100-80gb").capacity_bytes == 80 * 2**30  # no usable_gb given: the capacity as stated
    r = shivam.predict(model="llama-3-70b", gpu="h200", k=[0], alpha=0.8)
    assert r.rows[0]["energy_per_token_j"] > 0
    raw = load_gpu("t4").model_dump()
    raw["memory"]["usable_gb"]["value"] = 20.0  # above 16 GiB
    with pytest.raises(ValueError, match="usable_gb 20 .* exceeds capacity_gb 16"):
        GPU.model_validate(raw)
    with pytest.raises(ShivamError, match="does not fit on NVIDIA H100"):
        shivam.predict(model="llama-3-70b", gpu="h100-sxm", k=[0], alpha=0.8)


def test_a_hidden_size_the_heads_do_not_divide_needs_a_head_dim(tmp_path):
    from shivam.errors import ShivamError
    from shivam.specs.model import load_model

    cfg = json.loads((ROOT / "models/mistral-7b.json").read_text())
    cfg.update(hidden_size=897, num_attention_heads=14, num_key_value_heads=14)
    (tmp_path / "odd.json").write_text(json.dumps(cfg))
    with pytest.raises(ShivamError, match="hidden size 897 is not a multiple of the 14 attention heads"):
        load_model(str(tmp_path / "odd.json"))
    (tmp_path / "given.json").write_text(json.dumps({**cfg, "head_dim": 64}))  # an explicit head_dim stands
    assert load_model(str(tmp_path / "given.json")).head_dim == 64
