"""The simulator's parameters for one GPU and engine: one flat, typed `Params` object.

Datasheet ceilings come from the GPU file, software overheads and kernel facts from the engine profile, energy
coefficients from the GPU file; a calibration (written by `shivam fit`) replaces any fitted one. `Params` is also the
set of quantities the fitter can move.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shivam.errors import ShivamError
from shivam.specs.calibration import Calibration, find_calibration, load_calibration
from shivam.specs.engine import FamilyDispatches, Kernels, load_engine
from shivam.specs.gpu import GPU
from shivam.userfiles import validation_message


class Params(BaseModel):
    """The simulator's free parameters for one GPU and engine (SI units: bytes, seconds, joules, watts)."""

    model_config = ConfigDict(allow_inf_nan=False)

    bandwidth_Bps: float = Field(gt=0, description="datasheet DRAM bandwidth")
    peak_flops: dict[str, Annotated[float, Field(gt=0)]] = Field(description="dense peak FLOP/s per dtype")
    memory_efficiency: float = Field(
        gt=0, le=1.5, description="fraction of the DRAM bandwidth weights and KV stream at"
    )
    compute_efficiency: float = Field(gt=0, le=1.5, description="fraction of the dense peak matmuls reach")
    attention_compute_fraction: float = Field(
        default=1.0,
        gt=0,
        le=2,
        description="the attention kernel's rate in its QK^T and PV products relative to the matmuls' "
        "(compute_efficiency): what a long prompt's compute-bound causal attention runs at",
    )
    prompt_attention_fraction: float | None = Field(
        default=None,
        gt=0,
        le=2,
        description="a split-KV kernel's prompt tiles (more new tokens than it fuses): their products' rate relative "
        "to the matmuls', their keys re-read from L2 by every row block after the first; None: as other programs",
    )
    overlap_exponent: float = Field(
        default=100.0,
        ge=1,
        description="how an operator's memory and compute times "
        "combine: 1 adds them (no overlap), large values give the roofline max",
    )
    per_kernel_s: float = Field(ge=0, description="launch/dispatch overhead per kernel (eager engines: per operator)")
    attention_cta_Bps: float = Field(
        gt=0,
        description="bytes of K and V one thread block of the masked (several "
        "new tokens) attention kernel streams per second: that kernel is latency-bound",
    )
    attention_block_s: float = Field(
        default=0.0,
        ge=0,
        description="fixed time of each thread block of that kernel (loading its queries, its mask and output "
        "epilogue) beside streaming its keys and values at attention_cta_Bps",
    )
    attention_iteration_s: float = Field(
        default=8e-7,
        gt=0,
        description="time of one inner iteration of a split-KV program running alone (a block of keys and values "
        "loaded and multiplied): the latency its loads wait on",
    )
    attention_merge_s: float = Field(
        default=1e-8,
        ge=0,
        description="time of one step of a split-KV kernel's merge (slices x slices padded to a power of two "
        "steps, run by the last program after the others)",
    )
    attention_memory_efficiency: float = Field(
        default=0.9,
        gt=0,
        le=1.5,
        description="fraction of the DRAM bandwidth a split-KV kernel's programs stream their caches at together "
        "(a multiprocessor's share of it bounds the programs it runs at once)",
    )
    multiprocessors: int = Field(gt=0, description="streaming multiprocessors: thread blocks that run at once")
    l2_capacity_bytes: float = Field(default=0.0, ge=0, description="the L2 cache's size (the GPU file's l2_mb)")
    per_light_kernel_s: float = Field(
        ge=0, description="cost of a kernel that only casts, fills or concatenates a few rows"
    )
    misaligned_matmul_fraction: float = Field(
        gt=0,
        le=1,
        description="fraction of the tensor-core peak a matmul "
        "with rows not 16-byte aligned reaches (cuBLAS's fallback kernels)",
    )
    misaligned_bandwidth_fraction: float = Field(
        gt=0, le=1, description="fraction of the DRAM bandwidth the same fallback kernel streams its operands at"
    )
    misaligned_gemv_bandwidth_fraction: float = Field(
        gt=0, le=1, description="fraction of the DRAM bandwidth the GEMV cuBLAS runs for one unaligned row streams at"
    )
    misaligned_power_w: float = Field(
        ge=0, description="power the fallback kernels draw beyond static power and their bytes' and FLOPs' energy"
    )
    dispatch_counts: Literal["graph", "eager"] = Field(
        default="graph",
        description="what per_kernel_s multiplies: the workload's kernels (shivam.sim.workload) or "
        "the operators an eager engine dispatches (its profile's eager_dispatches)",
    )
    per_step_s: float = Field(ge=0, description="host overhead per forward step")
    per_iteration_s: float = Field(ge=0, description="host synchronization per decoding iteration")
    limit_stretch_exponent: float = Field(
        default=0.0,
        ge=0,
        description="how much longer a call runs at the board's power limit: its time times (P / P_lim)^this, P the "
        "power it would draw unheld (the clocks the board lowers)",
    )
    static_power_w: float = Field(ge=0, description="power drawn for as long as the step lasts")
    active_power_w: float = Field(ge=0, description="extra power while kernels execute")
    block_power_w: float = Field(
        default=0.0,
        ge=0,
        description="power per multiprocessor kept busy by a kernel held at its thread blocks' latency floor "
        "(masked attention), beyond static power; for a split-KV kernel, whose occupancy is known, the power of "
        "each resident program",
    )
    dram_j_per_byte: float = Field(ge=0, description="board-level energy per DRAM byte moved")
    kv_j_per_byte: float = Field(
        default=0.0,
        ge=0,
        description="energy per byte of KV cache the attention kernels read or write, beyond dram_j_per_byte",
    )
    l2_j_per_byte: float = Field(
        default=0.0,
        ge=0,
        description="energy per byte thread blocks read from L2 beyond the DRAM bytes (blocks streaming the same "
        "keys: the query heads of one KV head in the masked attention kernel)",
    )
    dram_floor_j_per_byte: float = Field(ge=0, description="DRAM-device energy per byte: the physical floor")
    j_per_flop: dict[str, float] = Field(description="energy per FLOP by dtype")
    pcie_Bps: float = Field(gt=0, description="host-to-device copy bandwidth")
    pcie_j_per_byte: float = Field(ge=0, description="energy per byte copied over PCIe")
    capacity_bytes: float = Field(gt=0, description="device memory")
    power_limit_w: float | None = Field(
        default=None, gt=0, description="the board's power limit; None: none applied (not fitted)"
    )
    power_window_s: float | None = Field(
        default=None,
        gt=0,
        description="the power limiter's averaging time constant (the GPU file's power_limit_window_ms); None: a "
        "speculative iteration's average power is held as a whole (not fitted)",
    )
    link_kind: str | None = Field(
        default=None, description="the GPU-to-GPU link tensor parallelism uses; None: the GPU file has none (--tp 1)"
    )
    link_Bps: float = Field(default=0.0, ge=0, description="GPU-to-GPU bandwidth per direction")
    link_latency_s: float = Field(default=0.0, ge=0, description="latency per step of a ring collective")
    link_j_per_byte: float = Field(default=0.0, ge=0, description="energy per byte crossing the GPU-to-GPU link")
    engine: str = Field(description="the engine profile the defaults and kernel facts come from")
    kernels: Kernels = Field(description="the engine's kernel counts and attention kernel (not fitted)")
    eager_dispatches: dict[str, FamilyDispatches] | None = Field(
        default=None, description="an eager engine's operators per decode step, per model family (not fitted)"
    )
    energy_band: tuple[float, float] = Field(description="90 % band of energy predictions, as measured/predicted")
    time_band: tuple[float, float] = Field(description="90 % band of time predictions, as measured/predicted")
    band_basis: str = Field(description="where the band comes from")
    source: str = Field(description="where the numbers came from: 'datasheet estimates' or a calibration file")


# the parameters the fit moves through time (shivam.calibrate.fit), and what a calibration file may set: those,
# the energy coefficients and the per-kernel fractions measured on their own
TIME_PARAMS = (
    "memory_efficiency",
    "compute_efficiency",
    "attention_compute_fraction",
    "prompt_attention_fraction",
    "overlap_exponent",
    "per_kernel_s",
    "per_step_s",
    "per_iteration_s",
    "pcie_Bps",
    "attention_cta_Bps",
    "attention_block_s",
    "attention_iteration_s",
    "attention_merge_s",
    "attention_memory_efficiency",
    "limit_stretch_exponent",
)
CALIBRATED = TIME_PARAMS + (
    "per_light_kernel_s",
    "misaligned_matmul_fraction",
    "misaligned_bandwidth_fraction",
    "misaligned_gemv_bandwidth_fraction",
    "misaligned_power_w",
    "static_power_w",
    "active_power_w",
    "block_power_w",
    "dram_j_per_byte",
    "kv_j_per_byte",
    "l2_j_per_byte",
    "pcie_j_per_byte",
    "j_per_flop",
    "peak_flops",
    "bandwidth_Bps",
)


def resolve_params(gpu: GPU, engine: str, calibration: str | None = None, use_bundled: bool = True) -> Params:
    """Parameters for a GPU and engine: the given calibration file, else the bundled one (if any and wanted), else
    the datasheet estimates. Params.source says which."""
    name = load_engine(engine).engine  # `engine` may be a profile file: its calibrations go by the name inside
    path = calibration or (find_calibration(gpu.id, name) if use_bundled else None)
    shown = shown_path(path) if path else None
    return make_params(gpu, engine, load_calibration(path) if path else None, shown)


def shown_path(path) -> str:
    """A calibration's path as Params.source says it: relative to the working directory where it lies below it
    (reports are committed and shared)."""
    shown = str(path)
    with contextlib.suppress(ValueError):
        shown = str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    return shown


def _link_values(gpu: GPU) -> dict:
    """The link's figures in SI units, or nothing for a GPU file without a link section."""
    if gpu.link is None:
        return {}
    return dict(
        link_kind=gpu.link.kind,
        link_Bps=gpu.link.bandwidth_gbs * 1e9,
        link_latency_s=gpu.link.latency_us.value * 1e-6,
        link_j_per_byte=gpu.link.pj_per_bit.value * 8e-12,
    )


def make_params(
    gpu: GPU, engine: str = "graph", calibration: Calibration | None = None, calibration_path: str | None = None
) -> Params:
    prof = load_engine(engine)
    engine = prof.engine
    e = gpu.energy
    values = dict(
        bandwidth_Bps=gpu.memory.bandwidth_gbs * 1e9,
        peak_flops={dt: r * 1e12 for dt, r in gpu.peak_tflops.items()},
        memory_efficiency=prof.memory_efficiency,
        compute_efficiency=prof.compute_efficiency,
        overlap_exponent=prof.overlap_exponent,
        dispatch_counts=prof.dispatch_counts,
        per_kernel_s=prof.per_kernel_s,
        per_step_s=prof.per_step_s,
        per_iteration_s=prof.per_iteration_s,
        attention_cta_Bps=prof.attention_cta_Bps,
        attention_block_s=prof.attention_block_s,
        attention_iteration_s=prof.attention_iteration_s,
        attention_merge_s=prof.attention_merge_s,
        attention_memory_efficiency=prof.attention_memory_efficiency,
        prompt_attention_fraction=prof.prompt_attention_fraction,
        multiprocessors=gpu.multiprocessors,
        l2_capacity_bytes=gpu.l2_mb * 1e6,
        misaligned_matmul_fraction=prof.misaligned_matmul_fraction,
        misaligned_bandwidth_fraction=prof.misaligned_bandwidth_fraction,
        misaligned_gemv_bandwidth_fraction=prof.misaligned_gemv_bandwidth_fraction,
        misaligned_power_w=prof.misaligned_power_w,
        per_light_kernel_s=prof.per_light_kernel_s,
        static_power_w=e.static_power_w.value,
        active_power_w=e.active_power_w.value,
        block_power_w=0.0,
        dram_j_per_byte=e.dram_board_pj_per_bit.value * 8e-12,
        dram_floor_j_per_byte=e.dram_device_pj_per_bit.value * 8e-12,
        j_per_flop={dt: v.value * 1e-12 for dt, v in e.pj_per_flop.items()},
        pcie_Bps=gpu.pcie.bandwidth_gbs * 1e9,
        pcie_j_per_byte=e.pcie_pj_per_bit.value * 8e-12,
        capacity_bytes=gpu.capacity_bytes,
        power_limit_w=gpu.power_limit_w,
        power_window_s=gpu.power_limit_window_ms.value * 1e-3 if gpu.power_limit_window_ms else None,
        **_link_values(gpu),
        engine=prof.engine,
        kernels=prof.kernels,
        eager_dispatches=prof.eager_dispatches.families if prof.eager_dispatches else None,
        energy_band=prof.datasheet_band.energy,
        time_band=prof.datasheet_band.time,
        band_basis=f"datasheet-only band of the {engine} engine: {prof.datasheet_band.basis}",
        source=f"{gpu.id} datasheet + energy estimates, {engine} engine defaults",
    )
    if calibration is not None:
        if calibration.gpu != gpu.id or calibration.engine != engine:
            raise ShivamError(
                f"calibration {calibration_path} is for {calibration.gpu}/{calibration.engine}, not "
                f"{gpu.id}/{engine}; pass the matching --gpu and --engine or another file"
            )
        for name, value in calibration.parameters.items():
            if name not in CALIBRATED:
                raise ShivamError(
                    f"{calibration_path}: {name!r} is not a parameter a calibration sets; known: "
                    f"{', '.join(CALIBRATED)}"
                )
            if isinstance(value, dict) != (name in ("j_per_flop", "peak_flops")):
                raise ShivamError(
                    f"{calibration_path}: parameter {name!r} has the wrong form ({type(value).__name__})"
                    f"; refit it with `shivam fit`"
                )
            values[name] = {**values[name], **value} if isinstance(value, dict) else value
        values["source"] = f"calibration {calibration_path}"
        if calibration.card is not None:
            values["source"] += f" (card {calibration.card.uuid[:12]}, {calibration.card.name})"
        if calibration.band is not None:
            b = calibration.band
            values.update(energy_band=b.energy, time_band=b.time, band_basis=f"calibration band: {b.basis}")
        else:  # no cross-validation to say how far it errs: the datasheet band's relative width, centred
            centred = {}
            for key in ("energy", "time"):
                lo, hi = getattr(prof.datasheet_band, key)
                half = (hi - lo) / (hi + lo)
                centred[f"{key}_band"] = (1.0 - half, 1.0 + half)
            values.update(
                **centred,
                band_basis="calibration without a band of its own: the datasheet band's width, "
                "centred on the prediction",
            )
        if len(calibration.card_factors) > 1:  # an operator's error bar: the same work on another card of this GPU
            f = calibration.card_factors.values()
            values["source"] += (
                f" (energy differed by ±{50 * (max(f) - min(f)):.0f} % between the "
                f"{len(calibration.card_factors)} cards or campaigns it was fitted on)"
            )
    try:
        return Params(**values)
    except ValidationError as exc:  # a calibration file with a value no GPU can have
        raise ShivamError(
            validation_message(exc, str(calibration_path or gpu.id), fix="refit it with `shivam fit`")
        ) from None
