"""`inspect`, `overview` and `stage1`: one model's operators, every bundled model on every bundled GPU, and the
paper's host-copy microbenchmark."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from shivam.api.checks import (
    DEFAULT_DRAFT,
    MAX_TOKENS,
    CalibrationArg,
    check_fits,
    check_int,
    check_list,
    dtypes_arg,
    engine_arg,
    gpu_arg,
    model_arg,
    params_arg,
)
from shivam.api.prediction import predict
from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario
from shivam.sim.workload import step_ops
from shivam.specs import GPU, Dtypes, ModelSpec, gpu_ids, load_engine
from shivam.specs.dtypes import nbytes


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
    spec = model_arg(model, "--model")
    gpu_spec = gpu_arg(gpu) if gpu is not None else None
    context = check_int(context, "--context", 0, MAX_TOKENS)
    if context + 1 > spec.max_context:
        raise ShivamError(
            f"--context {context:,} + 1 new token exceeds {spec.name}'s max_position_embeddings "
            f"{spec.max_context:,}; give a shorter --context"
        )
    if gpu_spec is not None:
        dtypes = dtypes_arg(gpu_spec, weights_dtype, None, kv_dtype)
        params = params_arg(gpu_spec, engine_arg(engine, gpu_spec, calibration), calibration)
        check_fits(Scenario(target=spec, params=params, dtypes=dtypes, prompt=context, gen=1), 0, gpu_spec.name)
    else:
        dtypes = Dtypes.of(weights_dtype or "bf16", None, kv_dtype)
        params = None
    kernels = params.kernels if params is not None else load_engine(engine_arg(engine)).kernels
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
            if float(o.launches) + float(o.light_launches) + float(o.dram_bytes) + float(o.flops) > 0
        ],
    }  # not an operator gated off at 1 token (all zero); one an engine fuses away (no launch) keeps its bytes
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
    calibration: CalibrationArg = None,
) -> dict:
    """The paper's stage I predicted: reload an n x n weight matrix from the host before every GEMM, or load it once
    and reuse it `reuse` times; with the parameters `predict` would use (`parameters` names them)."""
    from shivam.sim.hostcopy import reload_vs_reuse
    from shivam.specs import normalize

    gpu_spec = gpu_arg(gpu)
    if dtype is not None and not isinstance(dtype, str):
        raise ShivamError(f"--dtype {dtype!r}: give a dtype name such as bf16 or fp16")
    dt_name = normalize(dtype or gpu_spec.default_dtype(), "--dtype")
    if dt_name not in gpu_spec.peak_tflops:
        raise ShivamError(
            f"{gpu_spec.name} has no {dt_name} arithmetic; choose --dtype from "
            f"{', '.join(d for d in gpu_spec.peak_tflops if d in ('fp32', 'fp16', 'bf16', 'fp8'))}"
        )
    counts = [check_int(r, "--reuse", 1, 100_000, "the reuse count") for r in check_list(reuse, "--reuse")]
    n = check_int(size, "--size", 1, 65_536)
    rows = check_int(tokens, "--tokens", 1, 1_000_000)
    params = params_arg(gpu_spec, engine_arg(engine, gpu_spec, calibration), calibration)
    res = reload_vs_reuse(params, n, rows, Dtypes.of(dt_name, dt_name), counts)
    return {"gpu": gpu_spec.id, "gpu_name": gpu_spec.name, "dtype": dt_name, "parameters": params.source, **res}
