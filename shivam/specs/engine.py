"""Engine profiles: one JSON file per inference engine (hardware/engines/<name>.json, or a user's own file).

A profile holds what belongs to the engine rather than to the model or the GPU: the default efficiencies and
overheads a calibration refines, and the engine's kernel facts (how many kernels each operator launches, which
attention kernel runs and what it costs per key, the kernels fp8 GEMMs add). The workload (shivam.sim.workload)
reads these facts; it has no engine-specific constant of its own, so adding an engine is adding a file.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shivam.bundled import data_dir
from shivam.errors import ShivamError, suggest
from shivam.specs.calibration import Band
from shivam.userfiles import read_json, validation_message


class SplitKV(BaseModel):
    """Launch settings of a split-KV attention kernel (the reference engine's): one program per (sequence, KV head,
    block of query rows, slice of keys), the last program of each row block merging the slices' partial results."""

    model_config = ConfigDict(extra="forbid")
    block_n_decode: int = Field(gt=0, description="keys per inner iteration at one new token")
    block_n_verify: int = Field(gt=0, description="keys per inner iteration at several new tokens")
    block_m_min: int = Field(gt=0, description="query rows per program at least (a matrix-multiply tile)")
    block_m_max: int = Field(gt=0, description="query rows per program at most")
    wide_head_dim: int | None = Field(
        None,
        gt=0,
        description="head_dim (padded to a power of two) from which the wide-head tiles below are launched: a "
        "program's accumulator and query grow with the head, and the narrow heads' tiles would spill registers",
    )
    wide_block_m_max: int | None = Field(None, gt=0, description="query rows per program at most, wide heads")
    wide_block_n: int | None = Field(None, gt=0, description="keys per inner iteration, wide heads")
    wide_prefill_rows: int | None = Field(
        None,
        gt=0,
        description="query rows (new tokens x KV group) from which wide heads take the narrow heads' tiles "
        "(block_m_max rows, block_n_verify keys) in wide_prefill_warps warps: every row block streams the keys "
        "before its rows, so a prefill's many small blocks read them many times over; a tile of twice the warps "
        "holds a wide head's 64 rows without spilling",
    )
    wide_prefill_warps: int | None = Field(None, gt=0, description="warps per program of those tiles")
    target_programs: int = Field(gt=0, description="programs the slicing aims for")
    min_slice_keys: int = Field(gt=0, description="keys per slice at least, as the cache capacity counts them")
    bucket_min: int = Field(gt=0, description="the smallest cache capacity a graph is captured for")
    bucket_cap_min: int = Field(
        gt=0, description="a capacity bucket is at most max(keys, this): the decoder's cache holds at least this many"
    )
    fused_max_new: int = Field(ge=0, description="new tokens up to which RoPE and the cache write run inside attention")
    unfused_launches: int = Field(ge=0, description="kernels per layer RoPE and the cache write take above that")
    partial_bytes: int = Field(gt=0, description="bytes per element of a slice's partial output (fp32)")
    max_shared_bytes: int | None = Field(
        None,
        gt=0,
        description="the most shared memory one program takes (the widest head's largest tiles): a GPU "
        "whose thread blocks may take less cannot launch every variant",
    )
    programs_per_sm: dict[str, tuple[int, int]] = Field(
        default_factory=dict,
        description="programs one multiprocessor runs at once, by compiled variant 'head_dim/block_m/block_n' "
        "(head_dim padded to a power of two, at least 64): (one slice, several slices, whose merge takes more "
        "registers); empty: not known (the kernel is then costed as one program per multiprocessor, bounded by "
        "the roofline)",
    )


class MaskedAttention(BaseModel):
    """The attention kernel the engine runs over several new tokens (verify steps, prefill)."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["latency_bound_per_block", "split_kv"] = Field(
        description="latency_bound_per_block: one thread block per (sequence, head, q_tile queries) streams all of "
        "its head's keys and values alone, at the per-block rate attention_cta_Bps; split_kv: decode, verify and "
        "prefill run one split-KV kernel that reads the cache once for all new tokens and all query heads of a KV "
        "group, each program streaming its slice at the per-program rate attention_cta_Bps (split_kv's settings)"
    )
    q_tile: int = Field(1, gt=0, description="queries per thread block (latency_bound_per_block)")
    head_dim_even_queries: list[tuple[int, float]] = Field(
        default_factory=lambda: [(1 << 20, float(1 << 20))],
        min_length=1,
        description="(head_dim bucket, effective head_dim streamed per key and per K/V tensor) at even "
        "query counts; a head_dim takes the first bucket at least as wide (latency_bound_per_block)",
    )
    head_dim_odd_queries: list[tuple[int, float]] = Field(
        default_factory=lambda: [(1 << 20, float(1 << 20))],
        min_length=1,
        description="the same at odd query counts (latency_bound_per_block)",
    )
    light_launches: int = Field(0, ge=0, description="light kernels per layer the mask adds (fills, element-wise)")
    mask_launches: int = Field(0, ge=0, description="kernels per step that build the causal mask")
    split_kv: SplitKV | None = None

    @model_validator(mode="after")
    def _settings_of_the_kind(self):
        if self.kind == "latency_bound_per_block" and "head_dim_even_queries" not in self.model_fields_set:
            raise ValueError("a latency_bound_per_block kernel needs q_tile and both head_dim tables")
        if self.kind == "split_kv" and self.split_kv is None:
            raise ValueError("a split_kv kernel needs its launch settings (split_kv)")
        return self


class OperatorLaunches(BaseModel):
    """Kernels the engine launches for one occurrence of each operator of the workload."""

    model_config = ConfigDict(extra="forbid")
    embed: int = Field(ge=0, description="the token-embedding lookup")
    position_embed: int = Field(ge=0, description="a learned position-embedding lookup and add (OPT, GPT-2)")
    norm: int = Field(ge=0, description="a layer or RMS norm with its residual add")
    rope: int = Field(ge=0, description="rotary embedding of q and k")
    kv_write: int = Field(ge=0, description="writing the step's K and V into the cache")
    matmul: int = Field(ge=0, description="a fused GEMM (q/k/v, gate/up) or a single one")
    act: int = Field(ge=0, description="the activation of a plain MLP")
    gated_act: int = Field(ge=0, description="the activation and gate product of a gated MLP")
    router_topk: int = Field(ge=0, description="an MoE router's softmax and top-k")
    expert_combine: int = Field(ge=0, description="weighting and summing the experts' outputs")
    sample: int = Field(ge=0, description="reading the logits for sampling")


class Prefill(BaseModel):
    """How the engine runs a prompt's prefill (docs/model.md, section 4b)."""

    model_config = ConfigDict(extra="forbid")
    chunk_tokens: int | None = Field(
        None,
        gt=0,
        description="tokens per sequence per prefill step (chunked prefill: the prompt in steps of this many "
        "tokens, each attending to the chunks before it); none: the whole prompt in one forward step",
    )
    logits: Literal["all", "last"] = Field(
        "last",
        description="which positions of a prefill step the LM head computes: every prompt position (all) or only "
        "the last one, the one that samples the first generated token (last)",
    )
    basis: str = ""


class Acceptance(BaseModel):
    """The kernels that accept or reject drafted tokens by rejection sampling (Leviathan et al. 2023, Chen et al.
    2023), once per verify step, over the vocabulary at every verified position; used with sampling='rejection'
    (greedy verification compares argmaxes, which the sample operator already costs)."""

    model_config = ConfigDict(extra="forbid")
    launches: int = Field(
        4,
        ge=0,
        description="kernels per verify step: softmax of the target's logits, of the draft's, the accept test, "
        "the resampling from the residual distribution",
    )
    flops_per_element: float = Field(
        6.0,
        ge=0,
        description="FLOPs per vocabulary element of the target's and of the draft's logits (softmax: max, "
        "exponent, sum, divide; the ratio p/q and the residual max(0, p - q))",
    )
    basis: str = ""


class Kernels(BaseModel):
    """Kernel counts and kernel classes: what the engine launches for each operator of the workload."""

    model_config = ConfigDict(extra="forbid")
    launches: OperatorLaunches
    attention_launches: int = Field(ge=0, description="kernels per layer of attention over one new token")
    masked_attention: MaskedAttention
    fp8_cast_launches: int = Field(ge=0, description="light kernels casting a GEMM's input to fp8")
    fp8_row_multiple: int = Field(gt=0, description="row multiple an fp8 GEMM needs; other row counts are padded")
    fp8_pad_launches: int = Field(ge=0, description="light kernels padding an fp8 GEMM's rows (zeros + concatenation)")
    logit_bytes: int = Field(gt=0, description="bytes per logit the LM head writes and sampling reads back")
    prefill: Prefill = Field(default_factory=Prefill, description="how the engine runs a prompt's prefill")
    acceptance: Acceptance = Field(
        default_factory=Acceptance, description="the rejection sampler's kernels (sampling='rejection')"
    )
    basis: str


class FamilyDispatches(BaseModel):
    per_layer: int = Field(ge=0)
    outside_layers: int = Field(ge=0)
    counted_on: str


class EagerDispatches(BaseModel):
    """Operators an eager engine dispatches per decode step, per model family: per_kernel_s multiplies these."""

    what: str
    measured_by: str
    transformers: str
    torch: str
    date: str
    families: dict[str, FamilyDispatches]


class CalibrationPriors(BaseModel):
    model_config = ConfigDict(extra="forbid")
    values: dict[str, float]
    basis: str
    per_gpu_model: list[str] = Field(
        default=[],
        description="of `values`, those a GPU model's bundled calibration of this engine replaces where one exists: "
        "facts of the kernel on that GPU model, which several cards' suites fitted together identify",
    )


class EngineProfile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: str
    description: str
    memory_efficiency: float = Field(gt=0, le=1.5)
    compute_efficiency: float = Field(gt=0, le=1.5)
    overlap_exponent: float = Field(default=100.0, ge=1)
    dispatch_counts: Literal["graph", "eager"] = Field(
        default="graph",
        description="what per_kernel_s multiplies: the kernels of the workload (graph) or the "
        "operators the engine dispatches eagerly (eager_dispatches)",
    )
    per_kernel_s: float = Field(ge=0)
    per_step_s: float = Field(ge=0)
    per_iteration_s: float = Field(ge=0)
    attention_cta_Bps: float = Field(gt=0)
    attention_block_s: float = Field(0.0, ge=0, description="fixed time per thread block of a latency-bound kernel")
    attention_iteration_s: float = Field(
        8e-7, gt=0, description="time of one inner iteration of a split-KV program alone (its loads' latency)"
    )
    attention_merge_s: float = Field(
        1e-8, ge=0, description="time of one step of a split-KV kernel's merge (slices x padded slices steps)"
    )
    attention_memory_efficiency: float = Field(
        0.9, gt=0, le=1.5, description="fraction of the DRAM bandwidth a split-KV kernel's programs stream at together"
    )
    prompt_attention_fraction: float | None = Field(
        None,
        gt=0,
        le=2,
        description="a split-KV kernel's prompt tiles: their products' rate relative to the matmuls' (keys re-read "
        "from L2); None: as its other programs",
    )
    misaligned_matmul_fraction: float = Field(gt=0, le=1)
    misaligned_bandwidth_fraction: float = Field(gt=0, le=1)
    misaligned_gemv_bandwidth_fraction: float = Field(gt=0, le=1)
    misaligned_power_w: float = Field(ge=0)
    per_light_kernel_s: float = Field(ge=0)
    kernels: Kernels
    eager_dispatches: EagerDispatches | None = None
    datasheet_band: Band = Field(description="90 % band of a prediction from datasheet figures alone (no calibration)")
    quick_calibration_band: Band | None = Field(
        None,
        description="the 90 % band of a `shivam calibrate --quick` calibration: how far quick calibrations of "
        "other cards predicted held-out points measured after them (shivam.calibrate.band.quick_band); none: not "
        "measured (a quick calibration then keeps its own cross-validation band)",
    )
    calibration_priors: CalibrationPriors | None = Field(
        None,
        description="parameters `shivam calibrate` holds for this engine beside the ones it holds for every engine "
        "(shivam.validate.calibration.PRIORS)",
    )
    basis: str


@cache
def engine_ids() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in (data_dir("hardware") / "engines").glob("*.json")))


@lru_cache(maxsize=32)
def load_engine(ref: str) -> EngineProfile:
    """A bundled engine by name, or an engine profile file in the same schema."""
    fix = "give a bundled engine name or an engine profile file"
    if ref.endswith(".json") or "/" in ref:
        path = Path(ref)
    else:
        if ref not in engine_ids():
            raise ShivamError(
                f"unknown engine {ref[:80]!r} (--engine){suggest(ref, engine_ids())}: use one of "
                f"{', '.join(engine_ids())}, or a path to an engine profile file"
            )
        path = data_dir("hardware") / "engines" / f"{ref}.json"
    raw = read_json(path, "engine profile", fix)
    try:
        prof = EngineProfile.model_validate(raw)
    except ValidationError as exc:
        raise ShivamError(validation_message(exc, str(path), fix="compare with hardware/engines/graph.json")) from None
    if prof.dispatch_counts == "eager" and prof.eager_dispatches is None:
        raise ShivamError(
            f"{path}: dispatch_counts is 'eager' but the profile has no eager_dispatches table; "
            f"add one (validation/count_eager_ops.py counts it)"
        )
    return prof
