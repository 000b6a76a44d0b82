"""shivam's public Python API: what the command line calls, with the same checks and the same one-line errors.

    import shivam
    r = shivam.predict(model="mistral-7b", gpu="l4", k=range(0, 9), alpha=0.8)
    r.best_k()            # the k of least energy per token
    r.rows                # the rows `shivam predict --format json` prints
    r.to_pandas()         # a DataFrame (pandas is imported only here)

Every argument is checked before anything is costed; a bad one raises ShivamError whose message names the argument
(by its command-line option) and the fix. docs/api.md documents each function with runnable examples.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario, prediction
from shivam.sim.workload import kv_cache_bytes, step_ops, weight_bytes
from shivam.specs import (
    GPU,
    Dtypes,
    ModelSpec,
    Params,
    engine_ids,
    gpu_ids,
    load_engine,
    load_gpu,
    load_model,
    resolve_params,
)
from shivam.specs.dtypes import nbytes

DEFAULT_DRAFT = "opt-125m"  # the draft model of the paper's stages II and III
DEFAULT_ENGINE = "graph"
DEFAULT_ALPHAS = (0.6, 0.7, 0.8, 0.9)
K_MAX = 64
MAX_GRID_ROWS = 10_000  # (k x acceptance) rows one prediction may hold: a grid above it is refused at once
MAX_TOKENS = 10_000_000  # prompt + generated tokens: far above any model's context, below an overflow
MAX_BATCH = 1_000_000
CalibrationArg = str | Path | Literal[False] | None


# --- argument checks (shared with the CLI, which only turns strings into these values) ---------------------------
def _int(value, option: str, lo: int, hi: int, meaning: str = "it") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ShivamError(f"{option} {value!r} is not a whole number: give an integer between {lo:,} and {hi:,}")
    if not lo <= value <= hi:
        raise ShivamError(f"{option} {value} is out of range: {meaning} must be between {lo:,} and {hi:,}")
    return int(value)


def _float(value, option: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ShivamError(f"{option} {value!r} is not a number: give a number between {lo:g} and {hi:g}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ShivamError(f"{option} {value:g} is out of range: it must be between {lo:g} and {hi:g}")
    return float(value)


def _listed(value, option: str) -> list:
    if isinstance(value, (str, bytes)) or value is None:
        raise ShivamError(f"{option} {value!r}: give a number or a list of numbers")
    values = list(value) if isinstance(value, Iterable) else [value]
    if not values:
        raise ShivamError(f"{option} selects nothing: give at least one value")
    if len(values) > MAX_GRID_ROWS:
        raise ShivamError(
            f"{option} has {len(values):,} values, above the limit of {MAX_GRID_ROWS:,}; "
            f"give fewer values or a coarser step"
        )
    return values


def check_ks(k) -> list[int]:
    return sorted({_int(v, "--k", 0, K_MAX, "the speculation window") for v in _listed(k, "--k")})


def check_alphas(alpha) -> list[float]:
    return [_float(v, "--alpha", 0.0, 1.0) for v in _listed(alpha, "--alpha")]


def check_acceptance(acceptance, k_max: int) -> list[float]:
    values = [_float(v, "--acceptance", 0.0, 1.0) for v in _listed(acceptance, "--acceptance")]
    if k_max > len(values):
        raise ShivamError(
            f"--acceptance: the per-position acceptance vector has {len(values)} values but k goes up "
            f"to {k_max}; give at least {k_max} values"
        )
    return values


def _model(ref, option: str) -> ModelSpec:
    if isinstance(ref, ModelSpec):
        return ref
    if not isinstance(ref, (str, Path)) or not str(ref):
        raise ShivamError(
            f"{option} {ref!r}: give a bundled alias (`shivam models`), a Hugging Face id or a path to a config.json"
        )
    return _naming(option, load_model, str(ref))


def _naming(option: str, load, *args):
    """load(*args), its refusal prefixed with the option it concerns (the same loaders serve --model and --draft)."""
    try:
        return load(*args)
    except ShivamError as exc:
        message = str(exc)
        raise ShivamError(message if message.startswith(option) else f"{option}: {message}") from None


def _gpu(ref) -> GPU:
    if isinstance(ref, GPU):
        return ref
    if not isinstance(ref, (str, Path)):
        raise ShivamError(f"--gpu {ref!r}: give a bundled GPU id (`shivam gpus`) or a path to a GPU file")
    return _naming("--gpu", load_gpu, str(ref))


def _engine(engine) -> str:
    engine = DEFAULT_ENGINE if engine is None else engine
    if not isinstance(engine, (str, Path)) or not str(engine):
        raise ShivamError(f"--engine {engine!r}: use one of {', '.join(engine_ids())} or a profile file")
    _naming("--engine", load_engine, str(engine))  # an unknown engine or a bad profile is refused here, by name
    return str(engine)


def _dtypes(gpu: GPU, weights_dtype, act_dtype, kv_dtype) -> Dtypes:
    for option, value in (("--weights-dtype", weights_dtype), ("--act-dtype", act_dtype), ("--kv-dtype", kv_dtype)):
        if value is not None and not isinstance(value, str):
            raise ShivamError(f"{option} {value!r}: give a dtype name such as bf16, fp8 or int4")
    default = gpu.default_dtype()
    dtypes = Dtypes.of(weights_dtype or default, act_dtype or default, kv_dtype)
    if dtypes.compute not in gpu.peak_tflops:
        raise ShivamError(
            f"{gpu.name} has no {dtypes.compute} arithmetic; choose --act-dtype from {', '.join(gpu.peak_tflops)}"
        )
    return dtypes


def _params(gpu: GPU, engine: str, calibration: CalibrationArg) -> Params:
    if calibration is not None and calibration is not False and not isinstance(calibration, (str, Path)):
        raise ShivamError(
            f"--calibration {calibration!r}: give a calibration file, None (the bundled one) or False "
            f"(datasheet estimates)"
        )
    use_bundled = calibration is not False
    path = str(calibration) if isinstance(calibration, (str, Path)) else None
    return _naming("--calibration", resolve_params, gpu, engine, path, use_bundled)


def check_fits(scn: Scenario, k_max: int, gpu_name: str) -> None:
    """Refuses a scenario whose weights and KV cache exceed the GPU's memory, naming the model that does not fit,
    or whose context exceeds a model's positions."""
    tokens = scn.prompt + scn.gen + k_max + 1
    have = scn.params.capacity_bytes
    target = weight_bytes(scn.target, scn.dtypes) + kv_cache_bytes(scn.target, scn.dtypes, scn.batch, tokens)
    fix = "use a smaller --weights-dtype, batch or context, or a larger GPU"
    if target > have:
        raise ShivamError(
            f"{scn.target.name} does not fit on {gpu_name}: weights + KV cache need {target:,.0f} bytes "
            f"({target / 1e9:.1f} GB), the GPU has {have:,.0f} ({have / 1e9:.0f} GB); {fix}"
        )
    need = scn.memory_needed(k_max)
    if need > have:
        raise ShivamError(
            f"the draft {scn.draft.name} does not fit beside {scn.target.name} on {gpu_name}: both need "
            f"{need:,.0f} bytes ({need / 1e9:.1f} GB), the GPU has {have:,.0f} ({have / 1e9:.0f} GB), "
            f"{scn.target.name} alone {target / 1e9:.1f} GB; {fix}, or a smaller --draft"
        )
    for m in (scn.target, scn.draft if k_max > 0 else None):
        if m is not None and tokens > m.max_context:
            raise ShivamError(
                f"prompt + generation + k + 1 = {tokens:,} tokens exceeds {m.name}'s "
                f"max_position_embeddings {m.max_context:,}; shorten --prompt or --gen"
            )


def build_scenario(
    model,
    gpu,
    *,
    draft=None,
    k_max: int = 0,
    batch=1,
    prompt=128,
    gen=128,
    engine=None,
    calibration: CalibrationArg = None,
    weights_dtype=None,
    act_dtype=None,
    kv_dtype=None,
) -> tuple[Scenario, dict]:
    """A checked Scenario and the metadata every prediction row carries (model, draft, GPU, engine, dtypes, ...)."""
    gpu_spec = _gpu(gpu)
    target = _model(model, "--model")
    default_draft = draft is None and k_max > 0
    draft_spec = _model(DEFAULT_DRAFT if default_draft else draft, "--draft") if (draft is not None or k_max) else None
    batch = _int(batch, "--batch", 1, MAX_BATCH)
    prompt = _int(prompt, "--prompt", 0, MAX_TOKENS)
    gen = _int(gen, "--gen", 1, MAX_TOKENS)
    engine = _engine(engine)
    dtypes = _dtypes(gpu_spec, weights_dtype, act_dtype, kv_dtype)
    params = _params(gpu_spec, engine, calibration)
    scn = Scenario(target=target, params=params, dtypes=dtypes, draft=draft_spec, batch=batch, prompt=prompt, gen=gen)
    check_fits(scn, k_max, gpu_spec.name)
    warnings = []
    if draft_spec is not None and draft_spec.vocab != target.vocab:
        warnings.append(
            f"the draft {draft_spec.name} has a vocabulary of {draft_spec.vocab:,} tokens and "
            f"{target.name} {target.vocab:,}: a real deployment needs a draft with the target's tokenizer"
        )
    meta = {
        "model": target.name,
        "draft": draft_spec.name if draft_spec else None,
        "gpu": gpu_spec.id,
        "gpu_name": gpu_spec.name,
        "engine": params.engine,
        "parameters": params.source,
        "calibrated": params.source.startswith("calibration"),
        "weights_dtype": dtypes.weights,
        "act_dtype": dtypes.activations,
        "kv_dtype": dtypes.kv,
        "batch": batch,
        "prompt": prompt,
        "gen": gen,
        "default_draft_used": default_draft,
        "warnings": warnings,
    }
    return scn, meta


# --- predict -------------------------------------------------------------------------------------------------------
ROW_CONTEXT_KEYS = (
    "model",
    "draft",
    "gpu",
    "engine",
    "batch",
    "prompt",
    "gen",
    "weights_dtype",
    "act_dtype",
    "kv_dtype",
)


@dataclass(frozen=True)
class Prediction:
    """What `predict` returns: metadata, one row per (acceptance, k), the best k per acceptance."""

    meta: dict
    rows: list[dict]
    best: dict
    contexts_averaged: list[float]
    required_alpha: dict | None = None
    scenario: Scenario | None = field(default=None, repr=False, compare=False)

    @property
    def warnings(self) -> list[str]:
        return self.meta["warnings"]

    def best_k(self, objective: Literal["energy", "latency"] = "energy", alpha: float | None = None) -> int:
        """The k of least energy (or time) per token, at `alpha` (needed when the prediction holds several)."""
        if objective not in ("energy", "latency"):
            raise ShivamError(f"objective {objective!r}: use 'energy' or 'latency'")
        labels = list(self.best)
        if alpha is None:
            if len(labels) > 1:
                raise ShivamError(
                    f"the prediction holds {len(labels)} acceptance rates ({', '.join(labels)}); "
                    f"pass alpha= one of them"
                )
            label = labels[0]
        else:
            label = next((lab for lab in labels if lab == f"{alpha:g}"), None)
            if label is None:
                raise ShivamError(f"alpha {alpha:g} is not in the prediction; choose from {', '.join(labels)}")
        return self.best[label][f"best_k_{objective}"]

    def to_dict(self) -> dict:
        """The document `shivam predict --format json` prints."""
        out = {**self.meta, "rows": self.rows, "best": self.best, "contexts_averaged": self.contexts_averaged}
        if self.required_alpha is not None:
            out["required_alpha"] = self.required_alpha
        return out

    def to_pandas(self):
        """The rows as a pandas DataFrame, the energy breakdown as columns energy_<term>_j."""
        try:
            import pandas as pd
        except ImportError:
            raise ShivamError("to_pandas needs pandas: pip install pandas") from None
        return pd.DataFrame(flat_rows(self.rows))


def flat_rows(rows: list[dict]) -> list[dict]:
    """Rows with the breakdown spread into energy_<term>_j columns and a per-position acceptance as text (CSV)."""
    out = []
    for r in rows:
        flat = {k: v for k, v in r.items() if k != "breakdown_j"}
        flat.update({f"energy_{k}_j": v for k, v in r["breakdown_j"].items()})
        if isinstance(flat["alpha"], list):
            flat["alpha"] = ",".join(f"{a:g}" for a in flat["alpha"])
        out.append(flat)
    return out


def predict(
    model: str | ModelSpec,
    gpu: str | GPU,
    k: int | Iterable[int] = range(1, 9),
    alpha: float | Iterable[float] | None = None,
    draft: str | ModelSpec | None = None,
    batch: int = 1,
    prompt: int = 128,
    gen: int = 128,
    engine: str | None = None,
    calibration: CalibrationArg = None,
    weights_dtype: str | None = None,
    act_dtype: str | None = None,
    kv_dtype: str | None = None,
    acceptance: Iterable[float] | None = None,
    target_ratio: float | None = None,
) -> Prediction:
    """Time and energy per generated token versus speculation window k and acceptance.

    k: windows (k=0, standard decoding, is always added). alpha: i.i.d. acceptance rates (default 0.6-0.9), or
    acceptance: one per-position vector a_1..a_k instead (not both). draft: the draft model for k > 0 (default
    opt-125m, the paper's). calibration: a file from `shivam fit`, None for the bundled one of this GPU and engine,
    False for datasheet estimates. target_ratio: also report the alpha each k needs for this energy reduction."""
    ks = sorted({0, *check_ks(k)})
    if acceptance is not None and alpha is not None:
        raise ShivamError(
            "--alpha and --acceptance are exclusive: give i.i.d. rates (--alpha) or one per-position "
            "vector (--acceptance), not both"
        )
    positional = check_acceptance(acceptance, max(ks)) if acceptance is not None else None
    alphas = None if positional is not None else check_alphas(DEFAULT_ALPHAS if alpha is None else alpha)
    rows_total = len(ks) * (1 if positional is not None else len(alphas))
    if rows_total > MAX_GRID_ROWS:
        raise ShivamError(
            f"--k x --alpha make {rows_total:,} rows, above the limit of {MAX_GRID_ROWS:,}; "
            f"give fewer values or a coarser step"
        )
    ratio = None if target_ratio is None else _float(target_ratio, "--target-ratio", 1e-6, 1e6)
    scn, meta = build_scenario(
        model,
        gpu,
        draft=draft,
        k_max=max(ks),
        batch=batch,
        prompt=prompt,
        gen=gen,
        engine=engine,
        calibration=calibration,
        weights_dtype=weights_dtype,
        act_dtype=act_dtype,
        kv_dtype=kv_dtype,
    )
    res = prediction(scn, ks, alphas, positional, ratio)
    context = {key: meta[key] for key in ROW_CONTEXT_KEYS}
    rows = [{**context, **row, "alpha": positional if positional is not None else row["alpha"]} for row in res["rows"]]
    return Prediction(meta, rows, res["best"], res["contexts_averaged"], res.get("required_alpha"), scn)


# --- inspect -------------------------------------------------------------------------------------------------------
def inspect(
    model: str | ModelSpec,
    gpu: str | GPU | None = None,
    context: int = 512,
    weights_dtype: str | None = None,
    kv_dtype: str | None = None,
    engine: str | None = None,
    calibration: CalibrationArg = None,
) -> dict:
    """Per-operator parameters, bytes and FLOPs of one decode token at `context`, and (with a GPU) its time and
    energy with the same parameters `predict` uses (`parameters` names them)."""
    if gpu is None and calibration not in (None, False):
        raise ShivamError("--calibration applies to a GPU: give --gpu as well")
    spec = _model(model, "--model")
    gpu_spec = _gpu(gpu) if gpu is not None else None
    context = _int(context, "--context", 0, MAX_TOKENS)
    if context + 1 > spec.max_context:
        raise ShivamError(
            f"--context {context:,} + 1 new token exceeds {spec.name}'s max_position_embeddings "
            f"{spec.max_context:,}; give a shorter --context"
        )
    if gpu_spec is not None:
        dtypes = _dtypes(gpu_spec, weights_dtype, None, kv_dtype)
        params = _params(gpu_spec, _engine(engine), calibration)
        check_fits(Scenario(target=spec, params=params, dtypes=dtypes, prompt=context, gen=1), 0, gpu_spec.name)
    else:
        dtypes = Dtypes.of(weights_dtype or "bf16", None, kv_dtype)
        params = None
    kernels = params.kernels if params is not None else load_engine(_engine(engine)).kernels
    ops = step_ops(spec, 1, 1, context, dtypes, kernels)
    info: dict[str, Any] = {
        "model": spec.name,
        "family": spec.family,
        "parameters": spec.param_count(),
        "active_parameters": spec.active_param_count(),
        "layers": spec.layers,
        "hidden": spec.hidden,
        "heads": spec.heads,
        "kv_heads": spec.kv_heads,
        "head_dim": spec.head_dim,
        "attention": spec.attention_kind,
        "params_per_layer": spec.layer_params(),
        "weights_dtype": dtypes.weights,
        "kv_dtype": dtypes.kv,
        "kv_bytes_per_token": spec.kv_bytes_per_token(nbytes(dtypes.kv)),
        "context": context,
        "operators": [
            {
                "name": o.name,
                "kind": o.kind,
                "repeat": o.repeat,
                "flops": float(o.flops),
                "weight_bytes": float(o.weight_bytes),
                "kv_read_bytes": float(o.kv_read_bytes),
                "kv_write_bytes": float(o.kv_write_bytes),
                "act_bytes": float(o.act_bytes),
                "launches": int(o.launches),
                "light_launches": int(o.light_launches),
            }
            for o in ops
            if float(o.launches) + float(o.light_launches) > 0
        ],
    }  # not an operator gated off at 1 token
    info["decode_flops_per_token"] = sum(o["flops"] * o["repeat"] for o in info["operators"])
    info["decode_bytes_per_token"] = sum(
        (o["weight_bytes"] + o["kv_read_bytes"] + o["kv_write_bytes"] + o["act_bytes"]) * o["repeat"]
        for o in info["operators"]
    )
    if gpu_spec is not None:
        c = Scenario(target=spec, params=params, dtypes=dtypes).verify_step(0, context)
        info.update(
            gpu=gpu_spec.id,
            gpu_name=gpu_spec.name,
            engine=params.engine,
            parameters_source=params.source,
            decode_time_s=float(c.time_s),
            decode_energy_j=float(c.energy_j),
            decode_bound=c.bound,
        )
    return info


# --- overview ------------------------------------------------------------------------------------------------------
def overview(k: int = 4, alpha: float = 0.8, draft: str = DEFAULT_DRAFT) -> list[dict]:
    """Decode (k=0) and speculative energy per token of every bundled model on every bundled GPU (batch 1, prompt
    128 + 128 generated); `calibrated` says whether the GPU's figures come from a calibration or its datasheet."""
    from shivam.specs import bundled_index

    out = []
    for alias in bundled_index():
        for gid in gpu_ids():
            try:
                res = predict(alias, gid, k=[k], alpha=[alpha], draft=draft)
            except ShivamError as exc:
                out.append({"model": alias, "gpu": gid, "error": str(exc).split(";")[0]})
                continue
            base, spec = res.rows[0], res.rows[1]
            out.append(
                {
                    "model": alias,
                    "gpu": gid,
                    "calibrated": res.meta["calibrated"],
                    "parameters": res.meta["parameters"],
                    "decode_ms": 1e3 * base["time_per_token_s"],
                    "decode_j": base["energy_per_token_j"],
                    "spec_j": spec["energy_per_token_j"],
                    "energy_ratio": spec["energy_ratio"],
                    "bound": base["verify_bound"],
                }
            )
    return out


# --- stage I (the host-copy microbenchmark) ------------------------------------------------------------------------
def stage1(
    gpu: str | GPU,
    size: int = 4096,
    tokens: int = 4096,
    reuse: Iterable[int] = range(1, 101),
    dtype: str | None = None,
    engine: str | None = None,
) -> dict:
    """The paper's stage I predicted: reload an n x n weight matrix from the host before every GEMM, or load it once
    and reuse it `reuse` times."""
    from shivam.sim.hostcopy import reload_vs_reuse
    from shivam.specs import make_params, normalize

    gpu_spec = _gpu(gpu)
    if dtype is not None and not isinstance(dtype, str):
        raise ShivamError(f"--dtype {dtype!r}: give a dtype name such as bf16 or fp16")
    dt_name = normalize(dtype or gpu_spec.default_dtype(), "--dtype")
    if dt_name not in gpu_spec.peak_tflops:
        raise ShivamError(
            f"{gpu_spec.name} has no {dt_name} arithmetic; choose --dtype from "
            f"{', '.join(d for d in gpu_spec.peak_tflops if d in ('fp32', 'fp16', 'bf16', 'fp8'))}"
        )
    counts = [_int(r, "--reuse", 1, 100_000, "the reuse count") for r in _listed(reuse, "--reuse")]
    n = _int(size, "--size", 1, 65_536)
    rows = _int(tokens, "--tokens", 1, 1_000_000)
    res = reload_vs_reuse(make_params(gpu_spec, _engine(engine)), n, rows, Dtypes.of(dt_name, dt_name), counts)
    return {"gpu": gpu_spec.id, "gpu_name": gpu_spec.name, "dtype": dt_name, **res}
