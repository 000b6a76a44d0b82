"""GPU specifications (hardware/<gpu>.json), engine profiles (hardware/engines/) and calibrations.

Everything the cost model needs ends up in one flat `Params` object: datasheet ceilings from the GPU file, software
overheads from the engine profile, and energy coefficients from the GPU file, any of which a calibration file
(written by `shivam fit`) replaces. `Params` is also the set of quantities the fitter can move.
"""

from __future__ import annotations

import contextlib
import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from shivam.errors import ShivamError, suggest
from shivam.resources import data_dir

ENGINES = ("graph", "hf")


class Estimate(BaseModel):
    value: float = Field(ge=0)
    estimate: bool = True
    basis: str


class Memory(BaseModel):
    type: str
    capacity_gb: float = Field(gt=0)
    bandwidth_gbs: float = Field(gt=0)


class Pcie(BaseModel):
    generation: int
    bandwidth_gbs: float = Field(gt=0, description="per direction, x16")


class Energy(BaseModel):
    idle_power_w: Estimate
    static_power_w: Estimate
    active_power_w: Estimate
    dram_device_pj_per_bit: Estimate
    dram_board_pj_per_bit: Estimate
    pcie_pj_per_bit: Estimate
    pj_per_flop: dict[str, Estimate]


class GPU(BaseModel):
    id: str
    name: str
    memory: Memory
    peak_tflops: dict[str, float]
    tdp_w: float = Field(gt=0)
    pcie: Pcie
    l2_mb: float
    multiprocessors: int = Field(gt=0, description="streaming multiprocessors (compute units): thread blocks run at once")
    energy: Energy
    sources: list[str] = Field(min_length=1)
    notes: str = ""

    @property
    def capacity_bytes(self) -> float:
        return self.memory.capacity_gb * 1e9

    def default_dtype(self) -> str:
        return "bf16" if "bf16" in self.peak_tflops else "fp16"


class Params(BaseModel):
    """The simulator's free parameters for one GPU and engine (SI units: bytes, seconds, joules, watts)."""

    bandwidth_Bps: float = Field(gt=0, description="datasheet DRAM bandwidth")
    peak_flops: dict[str, float] = Field(description="dense peak FLOP/s per dtype")
    memory_efficiency: float = Field(gt=0, le=1.5)
    compute_efficiency: float = Field(gt=0, le=1.5)
    overlap_exponent: float = Field(default=100.0, ge=1, description="how an operator's memory and compute times "
                                    "combine: 1 adds them (no overlap), large values give the roofline max")
    per_kernel_s: float = Field(ge=0, description="launch/dispatch overhead per kernel (eager engines: per operator)")
    attention_cta_Bps: float = Field(gt=0, description="bytes of K and V one thread block of the masked (several "
                                     "new tokens) attention kernel streams per second: that kernel is latency-bound")
    multiprocessors: int = Field(gt=0)
    per_light_kernel_s: float = Field(ge=0, description="cost of a kernel that only casts, fills or concatenates a "
                                      "few rows")
    misaligned_matmul_fraction: float = Field(gt=0, le=1, description="fraction of the tensor-core peak a matmul "
                                              "with rows not 16-byte aligned reaches (cuBLAS's fallback kernels)")
    misaligned_bandwidth_fraction: float = Field(gt=0, le=1, description="fraction of the DRAM bandwidth the same "
                                                 "fallback kernel streams its operands at")
    misaligned_gemv_bandwidth_fraction: float = Field(gt=0, le=1, description="fraction of the DRAM bandwidth the "
                                                      "GEMV cuBLAS runs for one unaligned row streams at")
    misaligned_power_w: float = Field(ge=0, description="power the fallback kernels draw beyond static power and "
                                      "their bytes' and FLOPs' energy")
    dispatch_counts: Literal["graph", "eager"] = Field(
        default="graph", description="what per_kernel_s multiplies: the graph decoder's kernels (shivam.workload) or "
                                     "the operators transformers dispatches eagerly (hardware/engines/hf-dispatches.json)")
    per_step_s: float = Field(ge=0, description="host overhead per forward step")
    per_iteration_s: float = Field(ge=0, description="host synchronization per decoding iteration")
    static_power_w: float = Field(ge=0, description="power drawn for as long as the step lasts")
    active_power_w: float = Field(ge=0, description="extra power while kernels execute")
    block_power_w: float = Field(default=0.0, ge=0, description="power per multiprocessor kept busy by a kernel held "
                                 "at its thread blocks' latency floor (masked attention), beyond static power")
    dram_j_per_byte: float = Field(ge=0, description="board-level energy per DRAM byte moved")
    dram_floor_j_per_byte: float = Field(ge=0, description="DRAM-device energy per byte: the physical floor")
    j_per_flop: dict[str, float]
    pcie_Bps: float = Field(gt=0)
    pcie_j_per_byte: float = Field(ge=0)
    capacity_bytes: float = Field(gt=0)
    source: str = Field(description="where the numbers came from: 'datasheet estimates' or a calibration file")


class EngineProfile(BaseModel):
    engine: str
    description: str
    memory_efficiency: float
    compute_efficiency: float
    overlap_exponent: float = 100.0
    dispatch_counts: Literal["graph", "eager"] = "graph"
    per_kernel_s: float
    per_step_s: float
    per_iteration_s: float
    attention_cta_Bps: float
    misaligned_matmul_fraction: float
    misaligned_bandwidth_fraction: float
    misaligned_gemv_bandwidth_fraction: float
    misaligned_power_w: float
    per_light_kernel_s: float
    basis: str


class Calibration(BaseModel):
    """What `shivam fit` writes: fitted values replace the defaults of the named parameters."""

    gpu: str
    engine: str
    parameters: dict[str, float | dict[str, float]]
    uncertainty: dict[str, float | dict[str, float]] = {}
    fitted_from: list[str] = []
    card_factors: dict[str, float] = {}  # energy scale of each GPU card in the data (fit --card-factors)
    note: str = ""


@lru_cache(maxsize=None)
def gpu_ids() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in data_dir("hardware").glob("*.json")))


@lru_cache(maxsize=None)
def load_gpu(ref: str) -> GPU:
    key = ref.lower().replace("_", "-")
    if key not in gpu_ids():
        raise ShivamError(f"unknown GPU {ref!r}{suggest(key, gpu_ids())}; run `shivam gpus` for the bundled ones")
    path = data_dir("hardware") / f"{key}.json"
    try:
        return GPU.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ShivamError(f"{path}: invalid GPU file ({exc.errors()[0]['loc']}: {exc.errors()[0]['msg']})") from None


def load_engine(engine: str) -> EngineProfile:
    if engine not in ENGINES:
        raise ShivamError(f"unknown engine {engine!r}: use one of {', '.join(ENGINES)}")
    return EngineProfile.model_validate_json((data_dir("hardware") / "engines" / f"{engine}.json").read_text())


@lru_cache(maxsize=None)
def eager_dispatch_table() -> dict:
    """Operators transformers dispatches per decode step, per family (validation/count_eager_ops.py)."""
    return json.loads((data_dir("hardware") / "engines" / "hf-dispatches.json").read_text())["families"]


def bundled_calibration(gpu_id: str, engine: str) -> Path | None:
    path = data_dir("hardware") / "calibrated" / f"{gpu_id}-{engine}.json"
    return path if path.is_file() else None


def load_calibration(path: str | Path) -> Calibration:
    path = Path(path)
    if not path.is_file():
        raise ShivamError(f"calibration file {str(path)!r} does not exist; give a file written by `shivam fit`")
    try:
        return Calibration.model_validate_json(path.read_text())
    except ValidationError as exc:
        raise ShivamError(f"{path}: not a calibration file ({exc.errors()[0]['msg']}); give a file written by `shivam fit`") from None


# NVML device names -> bundled GPU ids
_NVML_NAMES = {"H200": "h200", "H100 80GB HBM3": "h100-sxm", "H100 PCIe": "h100-pcie", "A100-SXM4-80GB": "a100-80gb",
               "A100-SXM4-40GB": "a100-40gb", "L4": "l4", "T4": "t4", "A10G": "a10g", "L40S": "l40s",
               "RTX 4090": "rtx-4090"}


def gpu_id_for(nvml_name: str) -> str | None:
    """The bundled GPU id for a name as NVML reports it ('NVIDIA H200' -> 'h200'), or None."""
    return next((gid for key, gid in _NVML_NAMES.items() if key in nvml_name), None)


def resolve_params(gpu: GPU, engine: str, calibration: str | None = None, use_bundled: bool = True) -> Params:
    """Parameters for a GPU and engine: the given calibration file, else the bundled one (if any and wanted), else
    the datasheet estimates. Params.source says which."""
    path = calibration or (bundled_calibration(gpu.id, engine) if use_bundled else None)
    shown = None
    if path:  # said relative to the working directory where it lies below it (reports are committed and shared)
        shown = str(path)
        with contextlib.suppress(ValueError):
            shown = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return make_params(gpu, engine, load_calibration(path) if path else None, shown)


def make_params(gpu: GPU, engine: str = "graph", calibration: Calibration | None = None,
                calibration_path: str | None = None) -> Params:
    prof = load_engine(engine)
    e = gpu.energy
    values = dict(
        bandwidth_Bps=gpu.memory.bandwidth_gbs * 1e9,
        peak_flops={dt: r * 1e12 for dt, r in gpu.peak_tflops.items()},
        memory_efficiency=prof.memory_efficiency, compute_efficiency=prof.compute_efficiency,
        overlap_exponent=prof.overlap_exponent, dispatch_counts=prof.dispatch_counts,
        per_kernel_s=prof.per_kernel_s, per_step_s=prof.per_step_s, per_iteration_s=prof.per_iteration_s,
        attention_cta_Bps=prof.attention_cta_Bps, multiprocessors=gpu.multiprocessors,
        misaligned_matmul_fraction=prof.misaligned_matmul_fraction,
        misaligned_bandwidth_fraction=prof.misaligned_bandwidth_fraction,
        misaligned_gemv_bandwidth_fraction=prof.misaligned_gemv_bandwidth_fraction,
        misaligned_power_w=prof.misaligned_power_w, per_light_kernel_s=prof.per_light_kernel_s,
        static_power_w=e.static_power_w.value, active_power_w=e.active_power_w.value, block_power_w=0.0,
        dram_j_per_byte=e.dram_board_pj_per_bit.value * 8e-12,
        dram_floor_j_per_byte=e.dram_device_pj_per_bit.value * 8e-12,
        j_per_flop={dt: v.value * 1e-12 for dt, v in e.pj_per_flop.items()},
        pcie_Bps=gpu.pcie.bandwidth_gbs * 1e9, pcie_j_per_byte=e.pcie_pj_per_bit.value * 8e-12,
        capacity_bytes=gpu.capacity_bytes,
        source=f"{gpu.id} datasheet + energy estimates, {engine} engine defaults",
    )
    if calibration is not None:
        if calibration.gpu != gpu.id or calibration.engine != engine:
            raise ShivamError(f"calibration {calibration_path} is for {calibration.gpu}/{calibration.engine}, not "
                              f"{gpu.id}/{engine}; pass the matching --gpu and --engine or another file")
        for name, value in calibration.parameters.items():
            if name not in values:
                raise ShivamError(f"{calibration_path}: unknown parameter {name!r}; known: {', '.join(values)}")
            values[name] = {**values[name], **value} if isinstance(value, dict) else value
        values["source"] = f"calibration {calibration_path}"
        if len(calibration.card_factors) > 1:  # an operator's error bar: the same work on another card of this GPU
            f = calibration.card_factors.values()
            values["source"] += (f" (energy differed by ±{50 * (max(f) - min(f)):.0f} % between the "
                                 f"{len(calibration.card_factors)} cards or campaigns it was fitted on)")
    return Params(**values)
