"""GPU specifications: one JSON file per GPU (hardware/<id>.json, or any file in the same schema).

Datasheet figures carry their sources; energy figures are `Estimate`s with a `basis` until a calibration replaces
them. `shivam gpus --schema` prints the JSON schema a user's own file must follow.
"""

from __future__ import annotations

from functools import cache, lru_cache
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from shivam.bundled import data_dir
from shivam.errors import ShivamError, suggest
from shivam.userfiles import read_json, validation_message


class Estimate(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    value: float = Field(ge=0, le=1e5)
    estimate: bool = True
    basis: str = Field(description="where the figure comes from")


class Memory(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    type: str = Field(description="HBM3e, GDDR6, ...")
    capacity_gb: float = Field(
        gt=0, le=1e5, description="device memory as the vendor states it, binary GB (80 GB: 80 x 2^30 bytes)"
    )
    bandwidth_gbs: float = Field(ge=1, le=1e6, description="datasheet DRAM bandwidth, GB/s")
    usable_gb: Estimate | None = Field(
        None,
        description="memory a program can allocate, GB (1e9 bytes): the driver's total (nvidia-smi memory.total) where "
        "measured, or the capacity less what ECC reserves (1/16 of GDDR6 where ECC is on); without it, capacity_gb",
    )

    @model_validator(mode="after")
    def _usable_within_capacity(self):
        if self.usable_gb is not None and self.usable_gb.value <= 0:
            raise ValueError("memory.usable_gb must be above 0 GB (leave it out where it is not known)")
        if self.usable_gb is not None and self.usable_gb.value * 1e9 > self.capacity_gb * 2**30:
            raise ValueError(
                f"memory.usable_gb {self.usable_gb.value:g} (1e9 bytes) exceeds capacity_gb {self.capacity_gb:g} "
                f"({self.capacity_gb * 2**30 / 1e9:.3f} in 1e9 bytes): lower usable_gb or leave it out"
            )
        return self

    @property
    def usable_bytes(self) -> float:
        return self.usable_gb.value * 1e9 if self.usable_gb is not None else self.capacity_gb * 2**30


class Pcie(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    generation: int = Field(ge=1, le=10)
    bandwidth_gbs: float = Field(ge=0.1, le=1e4, description="per direction, x16")


class Link(BaseModel):
    """The GPU-to-GPU link a tensor-parallel step's all-reduces cross (docs/model.md, section 6)."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    kind: Literal["nvlink", "pcie", "infinity-fabric"] = Field(description="what carries GPU-to-GPU traffic")
    bandwidth_gbs: float = Field(
        gt=0, le=1e5, description="GB/s one GPU sends to its peers at once, per direction (datasheet)"
    )
    latency_us: Estimate = Field(description="microseconds per step of a ring collective (launch, synchronization)")
    pj_per_bit: Estimate = Field(description="energy per bit crossing the link, beyond the GPUs' static power")
    basis: str = Field(description="where the kind and bandwidth come from")


class Energy(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    idle_power_w: Estimate
    static_power_w: Estimate = Field(description="power drawn for as long as a step lasts, kernels or not")
    active_power_w: Estimate = Field(description="extra power while kernels execute")
    dram_device_pj_per_bit: Estimate = Field(description="the DRAM device's own energy per bit: the physical floor")
    dram_board_pj_per_bit: Estimate = Field(description="board-level energy per DRAM bit moved")
    pcie_pj_per_bit: Estimate
    pj_per_flop: dict[str, Estimate] = Field(description="energy per FLOP by dtype (fp32, bf16, fp8, ...)")

    @model_validator(mode="after")
    def _draws_power(self):
        if self.static_power_w.value <= 0:
            raise ValueError("static_power_w must be above 0 W: a powered GPU draws power for as long as a step lasts")
        return self


class GPU(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    id: str = Field(
        pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$",
        description="short id, e.g. h200; a calibration hardware/calibrated/<id>-<engine>.json applies",
    )
    name: str = Field(description="the name NVML reports, e.g. NVIDIA H200")
    memory: Memory
    peak_tflops: dict[str, Annotated[float, Field(gt=0, le=1e6)]] = Field(
        min_length=1, description="dense tensor-core peak per dtype, TFLOP/s; fp32 is the vector units' rate"
    )
    tdp_w: float = Field(gt=0, le=1e5)
    power_limit_w: float | None = Field(
        default=None,
        gt=0,
        le=1e5,
        description="the board's power limit (W, the default nvidia-smi reports): an iteration or prefill whose "
        "predicted power exceeds it is held there, running longer at the limit's power (shivam.sim.roofline."
        "power_held; with --power-limit, clocked down: power_limited); none: no limit applied",
    )
    power_limit_window_ms: Estimate | None = Field(
        default=None,
        description="how long the board's power limiter averages its power over (ms, a first-order time constant): "
        "a speculative iteration's verify and drafts are held together as that average sees them (shivam.sim."
        "roofline.phase_cap_factors); none: the iteration's average power is held as a whole",
    )
    pcie: Pcie
    link: Link | None = Field(
        default=None, description="GPU-to-GPU link for tensor parallelism (--tp); a file without one runs --tp 1 only"
    )
    l2_mb: float = Field(ge=0, le=1e5)
    multiprocessors: int = Field(
        gt=0, le=1_000_000, description="streaming multiprocessors (compute units): thread blocks run at once"
    )
    shared_memory_per_block_kb: float | None = Field(
        default=None,
        gt=0,
        le=1e5,
        description="the most shared memory one thread block may take, KB (1024 bytes; CUDA's per-block opt-in "
        "limit of the compute capability): whether an engine's kernels launch at all; none: unknown",
    )
    energy: Energy
    sources: list[str] = Field(min_length=1, description="datasheets and papers the figures come from")
    notes: str = ""

    @model_validator(mode="after")
    def _limit_above_static(self):
        if self.power_limit_w is not None and self.power_limit_w <= self.energy.static_power_w.value:
            raise ValueError(
                f"power_limit_w {self.power_limit_w:g} W must be above energy.static_power_w "
                f"{self.energy.static_power_w.value:g} W: no step could run under it"
            )
        if self.power_limit_window_ms is not None and self.power_limit_window_ms.value <= 0:
            raise ValueError("power_limit_window_ms must be above 0 ms (leave it out where it is not known)")
        return self

    @property
    def capacity_bytes(self) -> float:
        return self.memory.usable_bytes

    def default_dtype(self) -> str:
        return "bf16" if "bf16" in self.peak_tflops else "fp16"


@cache
def gpu_ids() -> tuple[str, ...]:
    return tuple(sorted(p.stem for p in data_dir("hardware").glob("*.json")))


def _is_path(ref: str) -> bool:
    return ref.endswith(".json") or "/" in ref or "\\" in ref


@lru_cache(maxsize=64)
def load_gpu(ref: str) -> GPU:
    """A bundled GPU by id (`shivam gpus`), or a GPU file in the bundled schema (`shivam gpus --schema`)."""
    if not isinstance(ref, str) or not ref:
        raise ShivamError(f"--gpu {ref!r}: give a bundled GPU id (see `shivam gpus`) or a path to a GPU file")
    if _is_path(ref):
        path, shown = Path(ref), ref
    else:
        key = ref.lower().replace("_", "-")
        if key not in gpu_ids():
            raise ShivamError(
                f"unknown GPU {ref[:80]!r}{suggest(key, gpu_ids())}; run `shivam gpus` for the bundled "
                f"ones, or give a path to a GPU file (`shivam gpus --schema`)"
            )
        path = data_dir("hardware") / f"{key}.json"
        shown = str(path)
    fix = "give a GPU file in the bundled schema (`shivam gpus --schema` prints it)"
    raw = read_json(path, "GPU file", fix)
    try:
        return GPU.model_validate(raw)
    except ValidationError as exc:
        raise ShivamError(validation_message(exc, shown, fix="see `shivam gpus --schema`")) from None


def differs_from_bundled(gpu: GPU) -> list[str]:
    """Where a GPU carries a bundled GPU's id: the fields in which it differs from that bundled file (a user's copy,
    edited); empty where it is the bundled GPU or its id is its own."""
    if gpu.id not in gpu_ids():
        return []
    bundled = _bundled_figures(gpu.id)
    mine = {key: _figures(value) for key, value in gpu.model_dump().items()}
    if gpu.memory.usable_gb is None:  # a copy of a file from before usable_gb: its memory as bundled
        mine["memory"]["usable_gb"] = bundled["memory"]["usable_gb"]
    return [key for key in sorted(set(mine) | set(bundled)) if mine.get(key) != bundled.get(key)]


@cache
def _bundled_figures(gpu_id: str) -> dict:
    """A bundled GPU file's figures (_figures of each field), read once per process."""
    return {key: _figures(value) for key, value in load_gpu(gpu_id).model_dump().items()}


def _figures(value):
    """A GPU file's value without its words (names, sources, notes, each figure's basis and estimate flag): what
    changes what the GPU does."""
    if isinstance(value, dict):
        return {k: _figures(v) for k, v in value.items() if k not in ("basis", "estimate")}
    if isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return None
    return value


# NVML device names -> bundled GPU ids
_NVML_NAMES = {
    "H200": "h200",
    "H100 80GB HBM3": "h100-sxm",
    "H100 PCIe": "h100-pcie",
    "A100-SXM4-80GB": "a100-80gb",
    "A100-SXM4-40GB": "a100-40gb",
    "L4": "l4",
    "T4": "t4",
    "A10G": "a10g",
    "L40S": "l40s",
    "RTX 4090": "rtx-4090",
}


def gpu_id_for(nvml_name: str) -> str | None:
    """The bundled GPU id for a name as NVML reports it ('NVIDIA H200' -> 'h200'), or None."""
    matches = [key for key in _NVML_NAMES if key in nvml_name]  # "L4" is in "L40S": the longest name wins
    return _NVML_NAMES[max(matches, key=len)] if matches else None
