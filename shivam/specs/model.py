"""A transformer's shape, read from its Hugging Face config.json.

Every family is reduced to the same few numbers (ModelSpec). The weight matrices of one layer are listed in exactly one
place, `layer_linears`, which both the parameter count and the per-step cost (shivam.sim.workload) use.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field, model_validator

from shivam.errors import ShivamError, suggest
from shivam.resources import data_dir


class Linear(NamedTuple):
    name: str
    d_in: int
    d_out: int
    bias: bool

    @property
    def params(self) -> int:
        return self.d_in * self.d_out + (self.d_out if self.bias else 0)


class ModelSpec(BaseModel):
    name: str
    family: str
    hidden: int = Field(gt=0)
    layers: int = Field(gt=0)
    heads: int = Field(gt=0)
    kv_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate: int = Field(gt=0)
    vocab: int = Field(gt=0)
    embed_dim: int = Field(gt=0, description="width of the token embedding (OPT-350m projects 512 -> 1024)")
    learned_positions: int = Field(ge=0, description="rows of a learned position table (OPT, GPT-2); 0 for RoPE")
    tied_embeddings: bool
    gated_mlp: bool = Field(description="3 matrices (gate, up, down) vs 2 (fc1, fc2)")
    norm: Literal["layernorm", "rmsnorm"]
    final_norm: bool
    qkv_bias: bool
    out_bias: bool
    mlp_bias: bool
    experts: int = Field(default=1, gt=0)
    experts_per_token: int = Field(default=1, gt=0)
    max_context: int = Field(gt=0)

    @model_validator(mode="after")
    def _consistent(self):
        if self.heads % self.kv_heads:
            raise ValueError(f"num_attention_heads {self.heads} is not a multiple of num_key_value_heads {self.kv_heads}")
        if self.experts_per_token > self.experts:
            raise ValueError("num_experts_per_tok exceeds the number of experts")
        return self

    # --- weights -----------------------------------------------------------------------------------------------
    def attention_linears(self) -> list[Linear]:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [Linear("q_proj", self.hidden, q, self.qkv_bias), Linear("k_proj", self.hidden, kv, self.qkv_bias),
                Linear("v_proj", self.hidden, kv, self.qkv_bias), Linear("o_proj", q, self.hidden, self.out_bias)]

    def expert_linears(self) -> list[Linear]:
        """The MLP of one expert (or the only MLP of a dense model)."""
        d, f, b = self.hidden, self.intermediate, self.mlp_bias
        if self.gated_mlp:
            return [Linear("gate_proj", d, f, b), Linear("up_proj", d, f, b), Linear("down_proj", f, d, b)]
        return [Linear("fc1", d, f, b), Linear("fc2", f, d, b)]

    def router(self) -> Linear | None:
        return Linear("router", self.hidden, self.experts, False) if self.experts > 1 else None

    @property
    def norm_params(self) -> int:
        return self.hidden * (2 if self.norm == "layernorm" else 1)

    def layer_params(self) -> int:
        router = self.router()
        return (sum(l.params for l in self.attention_linears())
                + self.experts * sum(l.params for l in self.expert_linears())
                + (router.params if router else 0) + 2 * self.norm_params)

    def embedding_linears(self) -> list[Linear]:
        """Projections around the trunk when the embedding is narrower than the model (OPT-350m)."""
        if self.embed_dim == self.hidden:
            return []
        return [Linear("project_in", self.embed_dim, self.hidden, False),
                Linear("project_out", self.hidden, self.embed_dim, False)]

    def param_count(self) -> int:
        embed = self.vocab * self.embed_dim
        return (embed + (0 if self.tied_embeddings else embed) + self.learned_positions * self.hidden
                + sum(l.params for l in self.embedding_linears()) + self.layers * self.layer_params()
                + (self.norm_params if self.final_norm else 0))

    def active_param_count(self) -> int:
        """Parameters one token touches: only experts_per_token experts of each MoE layer."""
        idle = (self.experts - self.experts_per_token) * sum(l.params for l in self.expert_linears())
        return self.param_count() - self.layers * idle

    def kv_bytes_per_token(self, kv_bytes_per_element: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes_per_element

    @property
    def attention_kind(self) -> str:
        if self.kv_heads == self.heads:
            return "MHA"
        return "MQA" if self.kv_heads == 1 else f"GQA ({self.heads // self.kv_heads} query heads per KV head)"


# --- reading config.json ---------------------------------------------------------------------------------------
_OPT_LIKE = {"opt"}
_GPT2_LIKE = {"gpt2"}
_LLAMA_LIKE = {"llama", "mistral", "mixtral", "qwen2", "phi3", "gemma"}
SUPPORTED_FAMILIES = sorted(_OPT_LIKE | _GPT2_LIKE | _LLAMA_LIKE)


def _need(cfg: dict, key: str, source: str):
    if key not in cfg or cfg[key] is None:
        raise ShivamError(f"{source}: config.json lacks the field {key!r}, which a {cfg.get('model_type')} "
                          f"model needs; use the model's complete Hugging Face config.json")
    return cfg[key]


def spec_from_config(cfg: dict, name: str, source: str = "config.json") -> ModelSpec:
    if not isinstance(cfg, dict):
        raise ShivamError(f"{source}: config.json must hold a JSON object; use the model's Hugging Face config.json")
    family = cfg.get("model_type")
    if family is None:
        raise ShivamError(f"{source}: config.json lacks the field 'model_type'; use the model's Hugging Face config.json")
    need = lambda key: _need(cfg, key, source)  # noqa: E731
    try:
        if family in _OPT_LIKE:
            d = need("hidden_size")
            fields = dict(hidden=d, layers=need("num_hidden_layers"), heads=need("num_attention_heads"),
                          intermediate=need("ffn_dim"), vocab=need("vocab_size"),
                          embed_dim=cfg.get("word_embed_proj_dim") or d,
                          learned_positions=need("max_position_embeddings") + 2,  # OPT offsets positions by 2
                          tied_embeddings=cfg.get("tie_word_embeddings", True), gated_mlp=False, norm="layernorm",
                          final_norm=cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False),
                          qkv_bias=cfg.get("enable_bias", True), out_bias=cfg.get("enable_bias", True),
                          mlp_bias=cfg.get("enable_bias", True), max_context=need("max_position_embeddings"))
        elif family in _GPT2_LIKE:
            d = need("n_embd")
            fields = dict(hidden=d, layers=need("n_layer"), heads=need("n_head"), intermediate=cfg.get("n_inner") or 4 * d,
                          vocab=need("vocab_size"), embed_dim=d, learned_positions=need("n_positions"),
                          tied_embeddings=cfg.get("tie_word_embeddings", True), gated_mlp=False, norm="layernorm",
                          final_norm=True, qkv_bias=True, out_bias=True, mlp_bias=True, max_context=need("n_positions"))
        elif family in _LLAMA_LIKE:
            d, heads = need("hidden_size"), need("num_attention_heads")
            default_bias = family == "qwen2"  # Qwen2 has q/k/v biases and no flag for them
            fields = dict(hidden=d, layers=need("num_hidden_layers"), heads=heads,
                          kv_heads=cfg.get("num_key_value_heads") or heads,
                          head_dim=cfg.get("head_dim") or d // heads,
                          intermediate=need("intermediate_size"), vocab=need("vocab_size"), embed_dim=d,
                          learned_positions=0, tied_embeddings=cfg.get("tie_word_embeddings", family == "gemma"),
                          gated_mlp=True, norm="rmsnorm", final_norm=True,
                          qkv_bias=cfg.get("attention_bias", default_bias), out_bias=False,
                          mlp_bias=cfg.get("mlp_bias", False),
                          experts=cfg.get("num_local_experts") or 1, experts_per_token=cfg.get("num_experts_per_tok") or 1,
                          max_context=need("max_position_embeddings"))
        else:
            raise ShivamError(f"{source}: model_type {family!r} is not supported; supported families: "
                              f"{', '.join(SUPPORTED_FAMILIES)}")
        fields.setdefault("kv_heads", fields["heads"])
        fields.setdefault("head_dim", fields["hidden"] // fields["heads"])
        return ModelSpec(name=name, family=family, **fields)
    except ShivamError:
        raise
    except (ValueError, TypeError) as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).strip().splitlines()
        detail = first[-1] if len(first) < 3 else " ".join(line.strip() for line in first[1:3])
        raise ShivamError(f"{source}: config.json is not a valid {family} config ({detail}); fix the field named") from None


@lru_cache(maxsize=1)
def bundled_index() -> dict[str, dict]:
    return json.loads((data_dir("models") / "index.json").read_text())


def resolve_model(ref: str) -> tuple[str, dict, str]:
    """An alias, a Hugging Face id or a path to a config.json -> (display name, config dict, source)."""
    index = bundled_index()
    by_hf_id = {entry["hf_id"].lower(): alias for alias, entry in index.items()}
    alias = ref.lower() if ref.lower() in index else by_hf_id.get(ref.lower())
    if alias:
        path = data_dir("models") / index[alias]["file"]
        return alias, json.loads(path.read_text()), str(path)
    path = Path(ref)
    if path.is_dir():
        path = path / "config.json"
    if path.suffix == ".json" or path.exists():
        if not path.is_file():
            raise ShivamError(f"model file {str(path)!r} does not exist; give a path to a config.json or a bundled alias")
        try:
            cfg = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ShivamError(f"{path}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc}); "
                              f"give the model's Hugging Face config.json") from None
        return path.parent.name if path.name == "config.json" else path.stem, cfg, str(path)
    choices = list(index) + [e["hf_id"] for e in index.values()]
    raise ShivamError(f"unknown model {ref!r}{suggest(ref, choices)}; run `shivam models` for the bundled ones, "
                      f"or give a path to a config.json")


def load_model(ref: str) -> ModelSpec:
    name, cfg, source = resolve_model(ref)
    return spec_from_config(cfg, name, source)
