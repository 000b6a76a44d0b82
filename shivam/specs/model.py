"""A transformer's shape, read from its Hugging Face config.json.

Every family is reduced to the same few numbers (ModelSpec). The weight matrices of one layer are listed in exactly one
place, `layer_linears`, which both the parameter count and the per-step cost (shivam.sim.workload) use.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal, NamedTuple

from pydantic import BaseModel, Field, ValidationError, model_validator

from shivam.bundled import data_dir
from shivam.errors import ShivamError, suggest
from shivam.userfiles import read_json


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
            raise ValueError(
                f"num_attention_heads {self.heads} is not a multiple of num_key_value_heads {self.kv_heads}"
            )
        if self.experts_per_token > self.experts:
            raise ValueError("num_experts_per_tok exceeds the number of experts")
        return self

    # --- weights -----------------------------------------------------------------------------------------------
    def attention_linears(self) -> list[Linear]:
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        return [
            Linear("q_proj", self.hidden, q, self.qkv_bias),
            Linear("k_proj", self.hidden, kv, self.qkv_bias),
            Linear("v_proj", self.hidden, kv, self.qkv_bias),
            Linear("o_proj", q, self.hidden, self.out_bias),
        ]

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
        return (
            sum(l.params for l in self.attention_linears())
            + self.experts * sum(l.params for l in self.expert_linears())
            + (router.params if router else 0)
            + 2 * self.norm_params
        )

    def embedding_linears(self) -> list[Linear]:
        """Projections around the trunk when the embedding is narrower than the model (OPT-350m)."""
        if self.embed_dim == self.hidden:
            return []
        return [
            Linear("project_in", self.embed_dim, self.hidden, False),
            Linear("project_out", self.hidden, self.embed_dim, False),
        ]

    def param_count(self) -> int:
        embed = self.vocab * self.embed_dim
        return (
            embed
            + (0 if self.tied_embeddings else embed)
            + self.learned_positions * self.hidden
            + sum(l.params for l in self.embedding_linears())
            + self.layers * self.layer_params()
            + (self.norm_params if self.final_norm else 0)
        )

    def active_param_count(self) -> int:
        """Parameters one token touches: only experts_per_token experts of each MoE layer."""
        idle = (self.experts - self.experts_per_token) * sum(l.params for l in self.expert_linears())
        return self.param_count() - self.layers * idle

    def kv_bytes_per_token(self, kv_bytes_per_element: float) -> float:
        return 2 * self.layers * self.kv_heads * self.head_dim * kv_bytes_per_element

    # --- tensor parallelism ------------------------------------------------------------------------------------
    def split_problem(self, gpus: int) -> str | None:
        """Why the model does not split over `gpus` tensor-parallel GPUs (None when it does): its query heads and its
        MLP width must divide evenly, and its KV heads either divide over the GPUs or replicate onto them evenly."""
        if self.heads % gpus:
            return f"its {self.heads} attention heads do not divide over {gpus} GPUs"
        if self.kv_heads % gpus and gpus % self.kv_heads:
            return f"its {self.kv_heads} KV heads neither divide over {gpus} GPUs nor replicate evenly onto them"
        if self.intermediate % gpus:
            return f"its MLP width {self.intermediate} does not divide over {gpus} GPUs"
        return None

    def kv_head_copies(self, gpus: int) -> int:
        """How many GPUs hold each KV head at `gpus`-way tensor parallelism: 1 while the KV heads divide over the
        GPUs; with fewer KV heads than GPUs each GPU holds one and every KV head is replicated gpus / kv_heads times."""
        return gpus // self.kv_heads if self.kv_heads < gpus else 1

    def shard(self, gpus: int) -> ModelSpec:
        """What one of `gpus` tensor-parallel GPUs holds and computes (Megatron-style): heads / gpus query heads,
        kv_heads / gpus KV heads (one, replicated, when there are fewer KV heads than GPUs), intermediate / gpus of
        the MLP (of every expert), ceil(vocab / gpus) rows of the embedding and of the LM head. Norms, learned
        positions, embedding projections and the router stay whole on every GPU. Call split_problem first."""
        if gpus == 1:
            return self
        problem = self.split_problem(gpus)
        if problem is not None:
            raise ValueError(f"{self.name} does not split over {gpus} GPUs: {problem}")
        return self.model_copy(
            update=dict(
                heads=self.heads // gpus,
                kv_heads=max(1, self.kv_heads // gpus),
                intermediate=self.intermediate // gpus,
                vocab=-(-self.vocab // gpus),
            )
        )

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
        raise ShivamError(
            f"{source}: config.json lacks the field {key!r}, which a {cfg.get('model_type')} "
            f"model needs; use the model's complete Hugging Face config.json"
        )
    return cfg[key]


# config.json fields that must be positive whole numbers where present, per family
_POSITIVE_INTS = {
    "opt": (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "ffn_dim",
        "vocab_size",
        "max_position_embeddings",
        "word_embed_proj_dim",
    ),
    "gpt2": ("n_embd", "n_layer", "n_head", "n_inner", "vocab_size", "n_positions"),
    "llama": (
        "hidden_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "head_dim",
        "intermediate_size",
        "vocab_size",
        "max_position_embeddings",
        "num_local_experts",
        "num_experts_per_tok",
    ),
}
_BOOLS = (
    "tie_word_embeddings",
    "do_layer_norm_before",
    "_remove_final_layer_norm",
    "enable_bias",
    "attention_bias",
    "mlp_bias",
)
# ModelSpec field -> the config.json key it comes from, for messages
_CONFIG_KEY = {
    "opt": {
        "hidden": "hidden_size",
        "layers": "num_hidden_layers",
        "heads": "num_attention_heads",
        "intermediate": "ffn_dim",
        "vocab": "vocab_size",
        "embed_dim": "word_embed_proj_dim",
        "max_context": "max_position_embeddings",
    },
    "gpt2": {
        "hidden": "n_embd",
        "layers": "n_layer",
        "heads": "n_head",
        "intermediate": "n_inner",
        "vocab": "vocab_size",
        "max_context": "n_positions",
    },
    "llama": {
        "hidden": "hidden_size",
        "layers": "num_hidden_layers",
        "heads": "num_attention_heads",
        "kv_heads": "num_key_value_heads",
        "head_dim": "head_dim",
        "intermediate": "intermediate_size",
        "vocab": "vocab_size",
        "max_context": "max_position_embeddings",
        "experts": "num_local_experts",
        "experts_per_token": "num_experts_per_tok",
    },
}


def _family_group(family: str) -> str:
    return "opt" if family in _OPT_LIKE else "gpt2" if family in _GPT2_LIKE else "llama"


def _check_types(cfg: dict, family: str, source: str) -> None:
    """Refuse, by name, a field of the wrong type or sign before any arithmetic uses it."""
    for key in _POSITIVE_INTS[_family_group(family)]:
        value = cfg.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0 or value > 10**9:
            raise ShivamError(
                f"{source}: field {key!r} must be a whole number from 1 to 1,000,000,000 (got {str(value)[:40]!r}); "
                f"fix {key} in config.json"
            )
    for key in _BOOLS:
        if key in cfg and cfg[key] is not None and not isinstance(cfg[key], bool):
            raise ShivamError(
                f"{source}: field {key!r} must be true or false (got {str(cfg[key])[:40]!r}); fix {key} in config.json"
            )


def spec_from_config(cfg: dict, name: str, source: str = "config.json") -> ModelSpec:
    if not isinstance(cfg, dict):
        raise ShivamError(f"{source}: config.json must hold a JSON object; use the model's Hugging Face config.json")
    family = cfg.get("model_type")
    if family is None:
        raise ShivamError(
            f"{source}: config.json lacks the field 'model_type'; use the model's Hugging Face config.json"
        )
    if not isinstance(family, str) or family not in SUPPORTED_FAMILIES:
        raise ShivamError(
            f"{source}: model_type {str(family)[:40]!r} is not supported; supported families: "
            f"{', '.join(SUPPORTED_FAMILIES)}"
        )
    _check_types(cfg, family, source)
    need = lambda key: _need(cfg, key, source)  # noqa: E731
    if family in _OPT_LIKE:
        d = need("hidden_size")
        fields = dict(
            hidden=d,
            layers=need("num_hidden_layers"),
            heads=need("num_attention_heads"),
            intermediate=need("ffn_dim"),
            vocab=need("vocab_size"),
            embed_dim=cfg.get("word_embed_proj_dim") or d,
            learned_positions=need("max_position_embeddings") + 2,  # OPT offsets positions by 2
            tied_embeddings=cfg.get("tie_word_embeddings", True),
            gated_mlp=False,
            norm="layernorm",
            final_norm=(cfg.get("do_layer_norm_before", True) and not cfg.get("_remove_final_layer_norm", False)),
            qkv_bias=cfg.get("enable_bias", True),
            out_bias=cfg.get("enable_bias", True),
            mlp_bias=cfg.get("enable_bias", True),
            max_context=need("max_position_embeddings"),
        )
    elif family in _GPT2_LIKE:
        d = need("n_embd")
        fields = dict(
            hidden=d,
            layers=need("n_layer"),
            heads=need("n_head"),
            intermediate=cfg.get("n_inner") or 4 * d,
            vocab=need("vocab_size"),
            embed_dim=d,
            learned_positions=need("n_positions"),
            tied_embeddings=cfg.get("tie_word_embeddings", True),
            gated_mlp=False,
            norm="layernorm",
            final_norm=True,
            qkv_bias=True,
            out_bias=True,
            mlp_bias=True,
            max_context=need("n_positions"),
        )
    else:
        d, heads = need("hidden_size"), need("num_attention_heads")
        default_bias = family == "qwen2"  # Qwen2 has q/k/v biases and no flag for them
        fields = dict(
            hidden=d,
            layers=need("num_hidden_layers"),
            heads=heads,
            kv_heads=cfg.get("num_key_value_heads") or heads,
            **({"head_dim": cfg["head_dim"]} if cfg.get("head_dim") else {}),
            intermediate=need("intermediate_size"),
            vocab=need("vocab_size"),
            embed_dim=d,
            learned_positions=0,
            tied_embeddings=cfg.get("tie_word_embeddings", family == "gemma"),
            gated_mlp=True,
            norm="rmsnorm",
            final_norm=True,
            qkv_bias=cfg.get("attention_bias", default_bias),
            out_bias=False,
            mlp_bias=cfg.get("mlp_bias", False),
            experts=cfg.get("num_local_experts") or 1,
            experts_per_token=cfg.get("num_experts_per_tok") or 1,
            max_context=need("max_position_embeddings"),
        )
    fields.setdefault("kv_heads", fields["heads"])
    if fields["hidden"] < fields["heads"] and "head_dim" not in fields:
        raise ShivamError(
            f"{source}: hidden size {fields['hidden']} is smaller than the number of attention heads "
            f"{fields['heads']}; fix the config's hidden size or heads"
        )
    if "head_dim" not in fields and fields["hidden"] % fields["heads"]:
        raise ShivamError(
            f"{source}: hidden size {fields['hidden']} is not a multiple of the {fields['heads']} attention heads and "
            f"the config gives no head_dim; fix the hidden size or the heads, or give head_dim"
        )
    fields.setdefault("head_dim", fields["hidden"] // fields["heads"])
    try:
        return ModelSpec(name=name, family=family, **fields)
    except ValidationError as exc:
        keys = {**_CONFIG_KEY[_family_group(family)], "": "config.json"}
        err = exc.errors()[0]
        loc = str(err["loc"][0]) if err.get("loc") else ""
        key = keys.get(loc, loc)
        msg = err["msg"].removeprefix("Value error, ")
        raise ShivamError(
            f"{source}: config.json is not a valid {family} config: {msg}; fix "
            f"{key if loc else 'the fields it names'} in config.json"
        ) from None


@lru_cache(maxsize=1)
def bundled_index() -> dict[str, dict]:
    return json.loads((data_dir("models") / "index.json").read_text())


def resolve_model(ref: str) -> tuple[str, dict, str]:
    """An alias, a Hugging Face id or a path to a config.json (or its folder) -> (display name, config, source)."""
    index = bundled_index()
    by_hf_id = {entry["hf_id"].lower(): alias for alias, entry in index.items()}
    alias = ref.lower() if ref.lower() in index else by_hf_id.get(ref.lower())
    if alias:
        path = data_dir("models") / index[alias]["file"]
        return alias, json.loads(path.read_text()), str(path)
    fix = "give a path to a config.json or a bundled alias (`shivam models`)"
    looks_like_path = ref.endswith(".json") or "/" in ref or "\\" in ref
    try:
        path = Path(ref)
        # committed results name model files relative to the checkout (validation/probes/...): found from anywhere
        in_checkout = data_dir("models").parent / ref
        if not path.is_absolute() and not path.exists() and in_checkout.exists():
            path = in_checkout
        if path.is_dir():
            if not (path / "config.json").is_file():
                raise ShivamError(f"model folder {ref[:120]!r} holds no config.json; {fix}")
            path = path / "config.json"
            looks_like_path = True
        exists = looks_like_path or path.exists()
    except OSError as exc:  # a name too long for the file system, say
        if not looks_like_path:
            exists = False
        else:
            raise ShivamError(f"model file {ref[:60]!r}... cannot be opened ({exc.strerror}); {fix}") from None
    if exists:
        cfg = read_json(path, "model file", fix)
        return path.parent.name if path.name == "config.json" else path.stem, cfg, str(path)
    choices = list(index) + [e["hf_id"] for e in index.values()]
    raise ShivamError(
        f"unknown model {ref[:80]!r}{suggest(ref, choices)}; run `shivam models` for the bundled ones, "
        f"or give a path to a config.json"
    )


def load_model(ref: str) -> ModelSpec:
    name, cfg, source = resolve_model(ref)
    return spec_from_config(cfg, name, source)
