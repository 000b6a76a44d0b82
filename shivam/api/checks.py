"""Every check of the API's arguments, and the checked Scenario they build: the CLI turns its strings into values
and the same functions refuse them, with the same one-line messages (naming the command-line option)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

import numpy as np

from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario
from shivam.specs import (
    GPU,
    Dtypes,
    ModelSpec,
    Params,
    default_engine,
    differs_from_bundled,
    engine_ids,
    load_engine,
    load_gpu,
    load_model,
    resolve_params,
)

DEFAULT_DRAFT = "opt-125m"  # the draft model of the paper's stages II and III
DEFAULT_ENGINE = "graph"  # what fit and report take; calibrate and predictions pick theirs for the GPU
DEFAULT_ALPHAS = (0.6, 0.7, 0.8, 0.9)
K_MAX = 64
MAX_GRID_ROWS = 10_000  # (k x acceptance) rows one prediction may hold: a grid above it is refused at once
MAX_TOKENS = 10_000_000  # prompt + generated tokens: far above any model's context, below an overflow
MAX_BATCH = 1_000_000
MAX_TP = 8  # tensor parallelism is modelled within one node's NVLink or PCIe domain
MAX_BATCHES = 1024  # batch sizes one prediction or crossover scan may hold
MAX_RAGGED = 4096  # sequences of a ragged batch (--prompts), each prefilled on its own
SAMPLING = ("greedy", "rejection")
CalibrationArg = str | Path | Literal[False] | None


# --- argument checks (shared with the CLI, which only turns strings into these values) ---------------------------
def check_int(value, option: str, lo: int, hi: int, meaning: str = "it") -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ShivamError(f"{option} {value!r} is not a whole number: give an integer between {lo:,} and {hi:,}")
    if not lo <= value <= hi:
        raise ShivamError(f"{option} {value} is out of range: {meaning} must be between {lo:,} and {hi:,}")
    return int(value)


def check_float(value, option: str, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ShivamError(f"{option} {value!r} is not a number: give a number between {lo:g} and {hi:g}")
    if not math.isfinite(value) or not lo <= value <= hi:
        raise ShivamError(f"{option} {value!r} is out of range: it must be between {lo:g} and {hi:g}")
    return float(value)


def check_list(value, option: str) -> list:
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


def check_batches(batch) -> list[int]:
    """One batch size or several (a scan for the crossover), each 1..MAX_BATCH, at most MAX_BATCHES of them."""
    values = (
        [batch]
        if isinstance(batch, (int, np.integer)) and not isinstance(batch, bool)
        else check_list(batch, "--batch")
    )
    if len(values) > MAX_BATCHES:
        raise ShivamError(
            f"--batch has {len(values):,} values, above the limit of {MAX_BATCHES:,}; give fewer batch sizes"
        )
    return sorted({check_int(v, "--batch", 1, MAX_BATCH) for v in values})


def check_prompts(prompts) -> list[int]:
    """A ragged batch's prompt lengths, one per sequence."""
    values = check_list(prompts, "--prompts")
    if len(values) > MAX_RAGGED:
        raise ShivamError(
            f"--prompts has {len(values):,} sequences, above the limit of {MAX_RAGGED:,}; give fewer sequences"
        )
    return [check_int(v, "--prompts", 0, MAX_TOKENS) for v in values]


def check_sampling(sampling) -> str:
    if sampling not in SAMPLING:
        raise ShivamError(
            f"--sampling {sampling!r}: use greedy (verify by argmax) or rejection (rejection sampling over the "
            f"vocabulary)"
        )
    return sampling


def check_ks(k) -> list[int]:
    return sorted({check_int(v, "--k", 0, K_MAX, "the speculation window") for v in check_list(k, "--k")})


def check_alphas(alpha) -> list[float]:
    return [check_float(v, "--alpha", 0.0, 1.0) for v in check_list(alpha, "--alpha")]


def check_acceptance(acceptance, k_max: int) -> list[float]:
    values = [check_float(v, "--acceptance", 0.0, 1.0) for v in check_list(acceptance, "--acceptance")]
    if k_max > len(values):
        raise ShivamError(
            f"--acceptance: the per-position acceptance vector has {len(values)} values but k goes up "
            f"to {k_max}; give at least {k_max} values"
        )
    return values


def model_arg(ref, option: str) -> ModelSpec:
    if isinstance(ref, ModelSpec):
        return ref
    if not isinstance(ref, (str, Path)) or not str(ref):
        raise ShivamError(
            f"{option} {ref!r}: give a bundled alias (`shivam models`), a Hugging Face id or a path to a config.json"
        )
    return naming(option, load_model, str(ref))


def naming(option: str, load, *args):
    """load(*args), its refusal prefixed with the option it concerns (the same loaders serve --model and --draft)."""
    try:
        return load(*args)
    except ShivamError as exc:
        message = str(exc)
        raise ShivamError(message if message.startswith(option) else f"{option}: {message}") from None


def gpu_arg(ref) -> GPU:
    if isinstance(ref, GPU):
        return ref
    if not isinstance(ref, (str, Path)):
        raise ShivamError(f"--gpu {ref!r}: give a bundled GPU id (`shivam gpus`) or a path to a GPU file")
    return naming("--gpu", load_gpu, str(ref))


def own_calibration(gpu: GPU, calibration: CalibrationArg) -> CalibrationArg:
    """The calibration a GPU takes where none is named: False (its datasheet figures) for an edited copy of a bundled
    GPU file that keeps the bundled id, since every calibration of that id, bundled or installed, was measured on
    the bundled GPU (specs.differs_from_bundled); else as given."""
    return False if calibration is None and differs_from_bundled(gpu) else calibration


def engine_arg(engine, gpu: GPU | None = None, calibration: CalibrationArg = None) -> str:
    """The engine named, else the one a prediction for this GPU and calibration takes (specs.default_engine)."""
    if gpu is not None:
        calibration = own_calibration(gpu, calibration)
    if engine is None:
        engine = DEFAULT_ENGINE if gpu is None else naming("--calibration", default_engine, gpu.id, calibration)
    if not isinstance(engine, (str, Path)) or not str(engine):
        raise ShivamError(f"--engine {engine!r}: use one of {', '.join(engine_ids())} or a profile file")
    naming("--engine", load_engine, str(engine))  # an unknown engine or a bad profile is refused here, by name
    return str(engine)


def dtypes_arg(gpu: GPU, weights_dtype, act_dtype, kv_dtype) -> Dtypes:
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


def params_arg(gpu: GPU, engine: str, calibration: CalibrationArg) -> Params:
    if calibration is not None and calibration is not False and not isinstance(calibration, (str, Path)):
        raise ShivamError(
            f"--calibration {calibration!r}: give a calibration file, None (the bundled one) or False "
            f"(datasheet estimates)"
        )
    calibration = own_calibration(gpu, calibration)
    use_bundled = calibration is not False
    path = str(calibration) if isinstance(calibration, (str, Path)) else None
    return naming("--calibration", resolve_params, gpu, engine, path, use_bundled)


def tp_degrees(model: ModelSpec) -> list[int]:
    """The tensor-parallel degrees (1 to MAX_TP) a model splits over."""
    return [n for n in range(1, MAX_TP + 1) if model.split_problem(n) is None]


def check_tp(tp, draft_tp, target: ModelSpec, draft: ModelSpec | None, params: Params) -> tuple[int, int]:
    """The tensor-parallel degrees of the target (--tp) and of the draft (--draft-tp, on some of the target's GPUs),
    refused where a model does not split over them or the GPU file has no link to split over."""
    tp = check_int(tp, "--tp", 1, MAX_TP, "the tensor-parallel degree (GPUs of one node)")
    draft_tp = check_int(draft_tp, "--draft-tp", 1, MAX_TP, "the draft's tensor-parallel degree")
    if draft_tp > tp:
        raise ShivamError(
            f"--draft-tp {draft_tp} exceeds --tp {tp}: the draft runs on some of the target's GPUs; give --draft-tp "
            f"from 1 to {tp}"
        )
    for option, n, model in (("--tp", tp, target), ("--draft-tp", draft_tp, draft)):
        problem = model.split_problem(n) if model is not None else None
        if problem is not None:
            degrees = ", ".join(str(d) for d in tp_degrees(model) if d <= (tp if option == "--draft-tp" else MAX_TP))
            raise ShivamError(
                f"{option} {n}: {model.name} does not split over {n} GPUs: {problem}; use {option} {degrees}"
            )
    if tp > 1 and params.link_kind is None:
        raise ShivamError(
            f"--tp {tp}: the GPU file gives no GPU-to-GPU link; add a link section (`shivam gpus --schema`) "
            f"or use --tp 1"
        )
    return tp, draft_tp


def _least_tp_that_fits(scn: Scenario, k_max: int) -> int | None:
    have = scn.params.capacity_bytes
    for n in tp_degrees(scn.target):
        if n > scn.tp and dataclasses.replace(scn, draft=None, tp=n).memory_needed(k_max) <= have:
            return n
    return None


def check_fits(scn: Scenario, k_max: int, gpu_name: str) -> None:
    """Refuses a scenario whose weights, KV cache and activations exceed one GPU's memory (each GPU's share when
    split over several), naming the model that does not fit, or whose context exceeds a model's positions."""
    tokens = (max(scn.prompts) if scn.prompts else scn.prompt) + scn.gen + k_max + 1
    have = scn.params.capacity_bytes
    target = dataclasses.replace(scn, draft=None).memory_needed(k_max)  # the target alone
    fix = "use a smaller --weights-dtype, batch or context, or a larger GPU"
    where = f"{gpu_name} at --tp {scn.tp}" if scn.tp > 1 else gpu_name
    per_gpu = " per GPU" if scn.tp > 1 else ""
    if target > have:
        least = _least_tp_that_fits(scn, k_max) if scn.params.link_kind is not None else None
        split = f"use --tp {least} or more, or " if least is not None else ""
        raise ShivamError(
            f"{scn.target.name} does not fit on {where}: weights, KV cache and activations need {target:,.0f} bytes"
            f"{per_gpu} ({target / 1e9:.1f} GB), the GPU has {have:,.0f} ({have / 1e9:.1f} GB usable); {split}{fix}"
        )
    need = scn.memory_needed(k_max)
    if need > have:
        raise ShivamError(
            f"the draft {scn.draft.name} does not fit beside {scn.target.name} on {where}: both need "
            f"{need:,.0f} bytes{per_gpu} ({need / 1e9:.1f} GB), the GPU has {have:,.0f} ({have / 1e9:.1f} GB usable), "
            f"{scn.target.name} alone {target / 1e9:.1f} GB; {fix}, or a smaller --draft"
            + (" or a larger --draft-tp" if scn.draft_tp < scn.tp else "")
        )
    for m in (scn.target, scn.draft if k_max > 0 else None):
        if m is not None and tokens > m.max_context:
            raise ShivamError(
                f"prompt + generation + k + 1 = {tokens:,} tokens exceeds {m.name}'s "
                f"max_position_embeddings {m.max_context:,}; shorten --prompt or --gen"
            )


def beyond_the_measured(target: ModelSpec, draft, dtypes: Dtypes, tp: int, draft_tp: int) -> list[str]:
    """What a prediction takes beyond every measurement its band comes from (the validator's suites, on which the
    calibrations and the datasheet band are fitted: single-GPU runs of dense models, weights in 16 bits or fp8, the
    KV cache in 16 bits)."""
    out = []
    if tp > 1 or draft_tp > 1:
        out.append(f"--tp {tp}" + (f" --draft-tp {draft_tp}" if draft_tp > 1 else ""))
    moe = [m.name for m in (target, draft) if m is not None and m.experts > 1]
    if moe:
        out.append(f"mixture of experts: {', '.join(moe)}")
    if dtypes.weights not in ("fp16", "bf16", "fp8"):
        out.append(f"{dtypes.weights} weights")
    if dtypes.kv not in ("fp16", "bf16"):
        out.append(f"{dtypes.kv} KV cache")
    return out


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
    tp=1,
    draft_tp=1,
    sampling="greedy",
    prompts=None,
    power_limit=False,
) -> tuple[Scenario, dict]:
    """A checked Scenario and the metadata every prediction row carries (model, draft, GPU, engine, dtypes, ...).

    prompts: a ragged batch, one prompt length per sequence (instead of batch and prompt). power_limit: clock every step
    down to the board's power limit instead of holding each iteration and prefill at it."""
    gpu_spec = gpu_arg(gpu)
    target = model_arg(model, "--model")
    default_draft = draft is None and k_max > 0
    draft_spec = (
        model_arg(DEFAULT_DRAFT if default_draft else draft, "--draft") if (draft is not None or k_max) else None
    )
    sampling = check_sampling(sampling)
    if not isinstance(power_limit, bool):
        raise ShivamError(f"--power-limit {power_limit!r}: give True or False")
    if prompts is not None:
        prompts = check_prompts(prompts)
        if batch not in (1, len(prompts)) or prompt not in (128, None):
            raise ShivamError(
                "--prompts gives each sequence's prompt length: it sets the batch and the prompt; leave out --batch "
                "and --prompt"
            )
        batch, prompt = len(prompts), sum(prompts) / len(prompts)
    else:
        prompt = check_int(prompt, "--prompt", 0, MAX_TOKENS)
    batch = check_int(batch, "--batch", 1, MAX_BATCH)
    gen = check_int(gen, "--gen", 1, MAX_TOKENS)
    warnings = []
    edited = differs_from_bundled(gpu_spec) if calibration is None else []
    if edited:  # own_calibration's rule, applied once here: engine_arg and params_arg then take the datasheet figures
        calibration = False
        warnings.append(
            f"the GPU file has the bundled id {gpu_spec.id!r} but differs from it ({', '.join(edited)}): the "
            f"calibrations of {gpu_spec.id} were measured on another GPU, so its datasheet figures are used; give the "
            f"file an id of its own, or --calibration FILE to take one anyway"
        )
    engine = engine_arg(engine, gpu_spec, calibration)
    dtypes = dtypes_arg(gpu_spec, weights_dtype, act_dtype, kv_dtype)
    params = params_arg(gpu_spec, engine, calibration)
    tp, draft_tp = check_tp(tp, draft_tp, target, draft_spec, params)
    scn = Scenario(
        target=target,
        params=params,
        dtypes=dtypes,
        draft=draft_spec,
        batch=batch,
        prompt=prompt,
        gen=gen,
        tp=tp,
        draft_tp=draft_tp,
        sampling=sampling,
        prompts=tuple(prompts) if prompts is not None else None,
        power_limit_steps=power_limit,
    )
    check_fits(scn, k_max, gpu_spec.name)
    for model, n, option in ((target, tp, "--tp"), (draft_spec, draft_tp, "--draft-tp")):
        if model is not None and model.kv_heads < n:
            warnings.append(
                f"{model.name} has {model.kv_heads} KV heads, fewer than {option} {n}: each GPU holds one, every KV "
                f"head replicated on {model.kv_head_copies(n)} GPUs, so its KV cache per GPU stops shrinking at "
                f"{option} {model.kv_heads}"
            )
    beyond = beyond_the_measured(target, draft_spec, dtypes, tp, draft_tp)
    if beyond:
        warnings.append(
            f"the 90 % band comes from measurements on one GPU of dense models with 16-bit or fp8 weights and a 16-bit "
            f"KV cache; this prediction goes beyond them ({', '.join(beyond)}): take the band as the least of its "
            f"uncertainty"
        )
    if k_max and draft_spec is not None and draft_spec.active_param_count() >= target.active_param_count():
        warnings.append(
            f"the draft {draft_spec.name} ({draft_spec.active_param_count() / 1e9:.2f} B parameters per token) is not "
            f"smaller than {target.name} ({target.active_param_count() / 1e9:.2f} B): each draft step costs at least "
            f"what a decode step of the target does, so speculation cannot save; give --draft a smaller model"
        )
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
        "tp": tp,
        "draft_tp": draft_tp,
        "sampling": sampling,
        "prompts": list(prompts) if prompts is not None else None,
        "power_limit_w": params.power_limit_w,
        "power_limit_steps": power_limit,
        "power_limit_window_s": params.power_window_s,  # None: an iteration held as a whole
        "link": params.link_kind if tp > 1 else None,
        "default_draft_used": default_draft,
        "warnings": warnings,
    }
    return scn, meta
