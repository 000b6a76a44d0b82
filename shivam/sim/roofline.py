"""Time and energy of a list of operators on one GPU: the only place these equations live.

Per operator (docs/model.md, section 3):
    t_mem  = dram_bytes / (bandwidth * memory_efficiency)
    t_comp = flops / (peak_rate[dtype] * compute_efficiency)   (attention: x attention_compute_fraction too)
    t_op   = max(overlap(t_mem, t_comp), t_block) + launches * per_kernel_s + light_launches * per_light_kernel_s
             (+ pcie_bytes / pcie bandwidth for copies)
    a misaligned matmul (cuBLAS's sm75 fallback: loads and arithmetic do not overlap) instead takes
             dram_bytes / (bandwidth * misaligned_bandwidth_fraction) + flops / (peak_rate * misaligned_matmul_fraction)
    t_block (occupancy not known: the graph engine's masked attention) = d * ceil(w): a latency-bound kernel, whose
             thread blocks each take a fixed time, stream their bytes alone and compute between their loads, in
             waves of one block per multiprocessor: d = attention_block_s + block_bytes / attention_cta_Bps
             + block_flops / sm_rate (sm_rate = one multiprocessor's share of the attention's rate),
             w = blocks / multiprocessors. A ragged batch's blocks differ (each streams its own sequence's keys):
             t_block = max(d * ceil(w), d * max(w - 1, 0) + d_max), the multiprocessors sharing the work evenly but
             the last block to start on one being the longest sequence's, d_max = attention_block_s + span * (d -
             attention_block_s), span = its keys over the mean (within -8 % to +5 % of a greedy schedule of the
             blocks in launch order, for the measured ragged batches of 8-128 sequences)
    t_waves (a split-KV kernel, whose programs per multiprocessor o the engine profile gives by compiled variant)
             replaces both t_roof and t_block: P programs run in floor(P / (o S)) full waves of o per multiprocessor
             (S multiprocessors) and a last wave of the rest, ceil(rest / S) per multiprocessor (a last wave of
             programs with no cached keys to stream, empty last slices the grid launches last: attention_block_s +
             attention_iteration_s, the one block of new keys they attend to); a wave of m per multiprocessor lasts
                 attention_block_s + overlap(iterations * attention_iteration_s, m * block_bytes / share)
                 + m * block_flops / sm_rate,   share = bandwidth * attention_memory_efficiency / S
             (block_flops: the program's row block, padded rows included, times its keys)
             prompt tiles (more new tokens than the kernel fuses, where the profile has prompt_attention_fraction):
             the bandwidth term takes block_bytes x their DRAM share (_prompt_dram_share: the KV head's keys and
             values once over its row blocks where the layer's cache fits in L2, else once over the row blocks
             resident together), and sm_rate is R x compute_efficiency x prompt_attention_fraction / S
             (a program alone waits on its loads once per block of keys; m programs together stream at most a
             multiprocessor's share of the bandwidth; where the two times are close, both bite, and they combine
             as an operator's memory and compute times do). A ragged batch's last wave lasts at least its longest
             program alone, attention_block_s + span * (iterations * attention_iteration_s + block_flops / sm_rate).
             Then the last program of each row block merges the slices' partials: + merge_steps *
             attention_merge_s (merge_steps = slices * slices padded to a power of two, the merge's unrolled loop)
    overlap(a, b) = (a^p + b^p)^(1/p), p = overlap_exponent: p = 1 adds the two (no overlap), p -> infinity is the
             roofline's max(a, b) (perfect overlap). The default p = 100 is the max within 0.7 %; a fit finds p where
             the data shows partial overlap (skinny verify GEMMs on the H200: p = 1.97).
Per step:
    t_step = sum(repeat * t_op) + per_step_s
    E_step = static_power * t_step + active_power * t_busy + e_dram * dram_bytes + e_kv * kv_bytes
             + e_l2 * l2_bytes + sum(e_flop[dtype] * flops)
             + e_pcie * pcie_bytes + block_power * sm_s_floor + misaligned_power * t_fallback
    l2_bytes = what thread blocks read from L2 beyond the DRAM bytes: the masked kernel's blocks of the query heads
             sharing a KV head each read its keys and values, which come from DRAM once (e_dram, which includes their
             path through L2 to the SMs, counts that read); every further read takes the on-chip path alone. Per
             layer of the latency-bound masked kernel (workload.py; a split-KV kernel serves a KV group at once: 0,
             its prompt tiles' re-reads not counted):
             b * (c + n) * 2 * d_h * s_kv * (H * ceil(n / q_tile) - H_kv)
    sm_s_floor = sum over operators held at their latency floor of blocks * t_per_block (the mean block's time, span
             1): each thread block keeps a multiprocessor busy, drawing power whatever little it computes, for as
             long as it runs; a last wave of fewer blocks than multiprocessors leaves the others idle. A split-KV
             kernel (occupancy known) counts its programs' resident time instead, always: sum over its waves of
             programs * t_wave (block_power is then the power of one resident program)
    t_fallback = time in cuBLAS's fallback kernels (unaligned rows), which draw power beyond their bytes and FLOPs
Tensor parallelism over N GPUs (docs/model.md, section 6): each GPU runs its shard's operators (the equations above,
one GPU's t_step and E_step), then the step's collectives, serially (a decode step has nothing to overlap them with):
    ring all-reduce of S bytes:  t = 2(N-1)/N * S / link_bandwidth + 2(N-1) * link_latency
                                 (a reduce-scatter and an all-gather: 2(N-1) steps of S/N bytes per GPU)
    ring all-gather to S bytes:  t = (N-1)/N * S / link_bandwidth + (N-1) * link_latency
    bytes over the link          = N * steps * S/N (every GPU sends S/N per step)
    t_TP     = t_step + sum(t_collective)                      (the GPUs are symmetric: the max over them is t_step)
    E_TP     = N * E_step + N * static_power * sum(t_collective) + e_link * link bytes
               + idle GPUs * static_power * t_TP              (GPUs that wait, e.g. while a draft runs on fewer)
The board's power limit P_lim. By default (power_held, below) an iteration or a prefill above it is held there,
running longer at its power. With --power-limit (power_limited) a step whose average power E_step / t_step
exceeds it runs its SMs at a lower clock scale s < 1 until it draws P_lim. Voltage falls with the clock, so the
SMs' dynamic energy (arithmetic, active power, latency-floor blocks: E_sm) falls as s^2 and their compute-bound time
t_c stretches by 1/s; memory energy is kept; static power accrues over the longer time:
    t(s)  = t_step + t_c * (1/s - 1)
    E(s)  = E_step - E_sm * (1 - s^2) + P_static * t_c * (1/s - 1)
    s     : E(s) / t(s) = P_lim, by bisection over [0.2, 1]
A step still above P_lim at s = 0.2 (almost no compute-bound time) is then stretched with its energy kept,
t' = (E - P_static t) / (P_lim - P_static). Per GPU of
a tensor-parallel step. A step below the limit is unchanged.
The hold (power_held, held) applies over what the board averages its power over: a prefill's steps together, a
speculative iteration's draft steps, verify step and host sync together where the limiter's window is not known
(below), not each step alone. Where the unheld power P = E / t exceeds
gpus * P_lim, the call runs longer (lower clocks) and draws the limit:
    t' = t * (P / (gpus * P_lim))^limit_stretch_exponent,   E' = gpus * P_lim * t'
    (each time and energy term of each step scaled alike; GPUs left waiting, e_idle, are outside the hold; with
    limit_stretch_exponent 0 the energy is capped and the time kept)
Where the GPU file gives the limiter's averaging time tau (power_limit_window_ms), a speculative iteration is two
phases repeated, a hot one (the verify step, say: P_hot for t_hot) and a cool one (the draft steps and the sync),
and the limiter sees their power through a first-order average, which peaks at the end of the hot phase at
    P_peak = P_cool + (P_hot - P_cool) * f,   f = (1 - exp(-t_hot / tau)) / (1 - exp(-(t_hot + t_cool) / tau))
Above gpus * P_lim the board holds the hot phase alone, at P_hot' = P_cool + (gpus * P_lim - P_cool) / f, with the
stretch above for its factor P_hot' / P_hot; the cool phase runs as it is (phase_cap_factors). As tau -> infinity
the iteration's mean power tends to the limit, as with the average (with limit_stretch_exponent 0 exactly; the
split of its energy between the phases differs), and as tau -> 0 each phase is held on its own; a single phase
(t_cool = 0: f = 1) is held as a whole. A cool phase that is itself over the limit holds each phase at the limit; a
GPU without tau holds the iteration's average. Which phase is hot is decided by their unheld powers.
Everything broadcasts over numpy arrays.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import NamedTuple

import numpy as np

from shivam.errors import ShivamError
from shivam.sim.workload import OpCost
from shivam.specs import Params

BOUNDS = ("memory", "compute", "overhead", "link")
ENERGY_TERMS = (  # the StepCost fields that sum to energy_j
    "e_static",
    "e_overhead",
    "e_active",
    "e_floor",
    "e_fallback",
    "e_memory",
    "e_compute",
    "e_pcie",
    "e_link",
    "e_idle",
)


@dataclass(frozen=True)
class StepCost:
    """Time, bytes, FLOPs and energy terms of a step (or of any sum of steps). Every field is a float numpy array,
    all of one shape: a scalar step is 0-d, a (k, alpha, context) grid is 3-d."""

    time_s: np.ndarray
    busy_s: np.ndarray  # roofline time: kernels executing
    overhead_s: np.ndarray  # launch gaps and host work
    memory_bound_s: np.ndarray  # busy time in operators limited by bytes
    compute_bound_s: np.ndarray
    floor_sm_s: np.ndarray  # block-seconds: kernels held at their blocks' latency floor, split-KV programs resident
    fallback_s: np.ndarray  # busy time in cuBLAS's fallback kernels (a matmul with unaligned rows)
    dram_bytes: np.ndarray
    weight_bytes: np.ndarray
    kv_bytes: np.ndarray
    pcie_bytes: np.ndarray
    flops: np.ndarray
    launches: np.ndarray
    e_static: np.ndarray  # static power over the busy time
    e_overhead: np.ndarray  # static power over launch gaps and host work
    e_active: np.ndarray
    e_floor: np.ndarray  # block_power over the floor-bound SM-seconds
    e_fallback: np.ndarray  # misaligned_power over the fallback kernels' time
    e_memory: np.ndarray
    e_compute: np.ndarray
    e_pcie: np.ndarray
    l2_bytes: np.ndarray = 0.0  # read from L2 by thread blocks beyond the DRAM bytes (several blocks, same keys)
    # tensor parallelism (0 on one GPU): collectives' time, bytes over the GPU-to-GPU link (all GPUs together), the
    # GPUs' static power over the collectives plus the link's energy per byte, the static power of GPUs left waiting
    link_s: np.ndarray = 0.0
    link_bytes: np.ndarray = 0.0
    e_link: np.ndarray = 0.0
    e_idle: np.ndarray = 0.0

    def __post_init__(self):
        names = [f.name for f in fields(self)]
        arrays = np.broadcast_arrays(*(np.asarray(getattr(self, n), dtype=float) for n in names))
        for name, arr in zip(names, arrays):
            object.__setattr__(self, name, arr)

    @property
    def energy_j(self) -> np.ndarray:
        return sum(getattr(self, name) for name in ENERGY_TERMS)

    @property
    def bound(self):
        """Which of memory, compute, overhead or the link's collectives takes most of the step's time (a string, or an
        array of them)."""
        idx = np.argmax(np.stack([self.memory_bound_s, self.compute_bound_s, self.overhead_s, self.link_s]), axis=0)
        return BOUNDS[int(idx)] if idx.ndim == 0 else np.array(BOUNDS)[idx]

    def scaled(self, factor) -> StepCost:
        return StepCost(**{f.name: getattr(self, f.name) * factor for f in fields(self)})

    def total(self, axis: int | None = None) -> StepCost:
        """The sum over every element (or along `axis`): a sequence of steps as one cost."""
        return StepCost(**{f.name: np.sum(getattr(self, f.name), axis=axis) for f in fields(self)})

    def __add__(self, other: StepCost) -> StepCost:
        return StepCost(**{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)})


def rate(p: Params, kind: str, dtype: str) -> float:
    """Peak FLOP/s of the units that run an operator: tensor cores in `dtype` (matmuls, attention) or the fp32 vector
    units (element-wise work)."""
    key = "fp32" if kind == "elementwise" else dtype
    if key not in p.peak_flops:
        raise ShivamError(f"this GPU has no {key} matmul rate; choose a dtype it has: {', '.join(p.peak_flops)}")
    return p.peak_flops[key]


FALLBACK_KINDS = ("matmul_misaligned", "gemv_misaligned")


def _efficiencies(op: OpCost, p: Params) -> tuple[float, float]:
    """Fractions of the bandwidth and of the peak an operator's kernels reach. A matmul with unaligned output rows runs
    one of cuBLAS's fallback kernels, at rates measured for them (the Hopper kernels' fitted efficiencies do not apply):
    several rows, an sm75 tensor-op kernel; one row, a GEMV."""
    if op.kind == "matmul_misaligned":
        return p.misaligned_bandwidth_fraction, p.misaligned_matmul_fraction
    if op.kind == "gemv_misaligned":
        return p.misaligned_gemv_bandwidth_fraction, p.compute_efficiency
    if op.kind == "attention":  # a fused attention kernel's products run below a GEMM's rate (softmax between them)
        return p.memory_efficiency, p.compute_efficiency * p.attention_compute_fraction
    return p.memory_efficiency, p.compute_efficiency


def op_time(op: OpCost, p: Params, compute_dtype: str):
    """(seconds an operator's kernels execute, launch costs apart; its block-seconds at its latency floor, or for a
    split-KV kernel its programs' resident time; whether its bytes take longer than its FLOPs). Its time is the
    overlap of its memory and compute times, or the latency floor of its thread blocks, or a split-KV kernel's
    waves, plus its PCIe copy; the sm75 fallback kernel's synchronous loads do not
    overlap its arithmetic, so there the two times add."""
    mem_eff, comp_eff = _efficiencies(op, p)
    t_mem = op.dram_bytes / (p.bandwidth_Bps * mem_eff)
    t_comp = op.flops / (rate(p, op.kind, compute_dtype) * comp_eff)
    t_pcie = op.pcie_bytes / p.pcie_Bps
    if op.kind == "matmul_misaligned":
        return t_mem + t_comp + t_pcie, 0.0, t_mem >= t_comp
    sm_rate = rate(p, op.kind, compute_dtype) * comp_eff / p.multiprocessors
    if op.kind == "attention" and p.prompt_attention_fraction is not None:  # a prompt's tiles compute at their own rate
        prompt_rate = rate(p, op.kind, compute_dtype) * p.compute_efficiency * p.prompt_attention_fraction
        sm_rate = np.where(np.asarray(op.prompt_tiles) > 0, prompt_rate / p.multiprocessors, sm_rate)
    known = op.blocks_per_sm > 0
    # a block alone: its bytes at the per-block rate, or (split-KV) its iterations each waiting on its loads
    alone = np.where(known, op.block_iterations * p.attention_iteration_s, op.block_bytes / p.attention_cta_Bps)
    work = alone + op.block_flops / sm_rate
    per_block = np.where(op.block_bytes > 0, p.attention_block_s + work, 0.0)
    longest = np.where(op.block_bytes > 0, p.attention_block_s + op.block_span * work, 0.0)  # a ragged batch's
    t_roof = overlap(t_mem, t_comp, p.overlap_exponent)
    # occupancy not known: one block per multiprocessor per wave; the multiprocessors share the blocks evenly, but
    # the last to start on one may be the longest, finishing later (each block equal: whole waves)
    waves = op.blocks / p.multiprocessors
    t_single = np.maximum(per_block * np.ceil(waves), per_block * np.maximum(waves - 1, 0) + longest)
    t_waves, last, resident = _split_kv_waves(op, p, alone, sm_rate)
    t_waves = t_waves + op.merge_steps * p.attention_merge_s  # the merge runs once, after the last wave
    # known occupancy: the waves stand for the roofline (they bound the programs by their share of the bandwidth)
    t_block = np.where(known, np.maximum(t_waves, t_waves - last + longest), t_single)
    t_op = np.where(known, t_block, np.maximum(t_roof, t_single))
    # block-seconds: a block per multiprocessor while it runs alone; known occupancy, each program while resident
    sm_s = np.where(known, resident, np.where(t_block > t_roof, per_block * op.blocks, 0.0))
    return t_op + t_pcie, sm_s, t_mem >= t_comp


def _split_kv_waves(op: OpCost, p: Params, alone, sm_rate):
    """(time of a split-KV kernel's programs run in waves of blocks_per_sm per multiprocessor, time of its last
    wave, program-seconds resident: each program for its wave's time). A wave whose multiprocessors hold m programs
    each lasts attention_block_s + overlap(alone, m bytes / share) + m FLOPs / sm_rate: each program streams no
    faster than alone (its iterations x attention_iteration_s), the m together no faster than the multiprocessor's
    share of the bandwidth (where the two are close, both bite: the smooth maximum of an operator's memory and
    compute times), and they take turns at its tensor cores. The programs past the last full wave spread over the
    multiprocessors, ceil(rest / multiprocessors) each; where they are all empty (op.empty_blocks: launched last, no
    cached keys to stream), their wave is each program's fixed time and one iteration (the step's new keys), and the
    last wave with keys is the full one before."""
    occupancy = np.maximum(op.blocks_per_sm, 1.0)
    sms = p.multiprocessors
    share = p.bandwidth_Bps * p.attention_memory_efficiency / sms

    dram = op.block_bytes * _prompt_dram_share(op, p, occupancy)

    def wave(m):
        streamed = overlap(alone, m * dram / share, p.overlap_exponent)
        return np.where(op.block_bytes > 0, p.attention_block_s + streamed + m * op.block_flops / sm_rate, 0.0)

    full = np.floor(op.blocks / (occupancy * sms))
    rest = op.blocks - full * occupancy * sms
    full_wave = wave(occupancy)
    # the part-filled last wave, if any; of empty programs alone (launched last), each program's fixed time
    empty_tail = (rest > 0) & (rest <= op.empty_blocks)
    # (an empty last slice still attends to the step's new keys: one iteration)
    empty_wave = p.attention_block_s + p.attention_iteration_s
    tail = np.where(rest > 0, np.where(empty_tail, empty_wave, wave(np.ceil(rest / sms))), 0.0)
    resident = full * occupancy * sms * full_wave + rest * tail
    last = np.where((rest > 0) & ~empty_tail, tail, full_wave)  # the last wave with keys to stream
    return full * full_wave + tail, last, resident


def _prompt_dram_share(op: OpCost, p: Params, occupancy):
    """Of a split-KV program's bytes, the share DRAM delivers: all, except a prompt's tiles under a profile that
    has them, whose row blocks of one KV head stream the same keys. Where the layer's cache fits in L2, the first row
    block brings them in and the others read them there (block_dram_share); where it does not, only the row blocks
    of a KV head resident in the same wave share one read (the grid runs the heads' first row blocks, then their
    second, ...: (occupancy x multiprocessors) / (programs / row blocks) of them at once, at least one)."""
    if p.prompt_attention_fraction is None:
        return 1.0
    rows = np.asarray(op.prompt_tiles, dtype=float)
    per_row_block = np.maximum(op.blocks / np.maximum(rows, 1.0), 1.0)  # programs of one row block (heads, slices)
    resident = np.clip(occupancy * p.multiprocessors / per_row_block, 1.0, np.maximum(rows, 1.0))
    in_l2 = op.kv_read_bytes <= p.l2_capacity_bytes
    share = np.where(in_l2, op.block_dram_share, np.maximum(op.block_dram_share, 1.0 / resident))
    return np.where(rows > 0, share, 1.0)


def overlap(t_mem, t_comp, p: float):
    """(t_mem^p + t_comp^p)^(1/p), computed relative to the larger time so that large p cannot overflow."""
    big = np.maximum(t_mem, t_comp)
    safe = np.where(big > 0, big, 1.0)
    return np.where(big > 0, big * ((t_mem / safe) ** p + (t_comp / safe) ** p) ** (1.0 / p), 0.0)


class StepInputs(NamedTuple):
    """What step_cost takes: a step's operators, the dtype its matmuls run in, an eager engine's dispatch count."""

    ops: list[OpCost]
    compute_dtype: str
    dispatches: float | None = None
    host_steps: int = 1


def _energy_key(op: OpCost, compute_dtype: str) -> str:
    return "fp32" if op.kind == "elementwise" else compute_dtype


def step_cost(ops: list[OpCost], p: Params, compute_dtype: str, host_steps: int = 1, dispatches=None) -> StepCost:
    """The step's cost. `dispatches`, when given, replaces the operators' own kernel count as what per_kernel_s
    multiplies: an eager engine's host dispatches per step (shivam.sim.workload.eager_dispatches)."""
    busy = mem_b = comp_b = floor_sm = fallback = dram = wb = kvb = pcie = flops = launches = light = e_flop = l2 = 0.0
    for op in ops:
        t_op, sm_s, memory_bound = op_time(op, p, compute_dtype)
        floor_sm = floor_sm + op.repeat * sm_s
        busy = busy + op.repeat * t_op
        if op.kind in FALLBACK_KINDS:
            fallback = fallback + op.repeat * t_op
        mem_b = mem_b + op.repeat * np.where(memory_bound, t_op, 0.0)
        comp_b = comp_b + op.repeat * np.where(memory_bound, 0.0, t_op)
        dram = dram + op.repeat * op.dram_bytes
        wb = wb + op.repeat * op.weight_bytes
        kvb = kvb + op.repeat * (op.kv_read_bytes + op.kv_write_bytes)
        l2 = l2 + op.repeat * op.l2_bytes
        pcie = pcie + op.repeat * op.pcie_bytes
        flops = flops + op.repeat * op.flops
        launches = launches + op.repeat * op.launches
        light = light + op.repeat * op.light_launches
        e_flop = e_flop + op.repeat * op.flops * p.j_per_flop.get(_energy_key(op, compute_dtype), 0.0)
    if dispatches is not None:  # an eager engine's dispatch count includes the light kernels
        launches, light = np.full_like(np.asarray(launches, dtype=float), dispatches), 0.0
    return _assemble(
        p, busy, mem_b, comp_b, floor_sm, fallback, dram, wb, kvb, pcie, flops, e_flop, launches, light, host_steps, l2
    )


def _assemble(
    p: Params,
    busy,
    mem_b,
    comp_b,
    floor_sm,
    fallback,
    dram,
    wb,
    kvb,
    pcie,
    flops,
    e_flop,
    launches,
    light,
    host_steps,
    l2=0.0,
) -> StepCost:
    """The step's overhead and energy terms from its summed operator times and counts (the per-step equations)."""
    overhead = launches * p.per_kernel_s + light * p.per_light_kernel_s + host_steps * p.per_step_s
    return StepCost(
        time_s=busy + overhead,
        busy_s=busy,
        overhead_s=overhead,
        memory_bound_s=mem_b,
        compute_bound_s=comp_b,
        floor_sm_s=floor_sm,
        fallback_s=fallback,
        dram_bytes=dram,
        weight_bytes=wb,
        kv_bytes=kvb,
        pcie_bytes=pcie,
        flops=flops,
        launches=launches + light,
        e_static=p.static_power_w * busy,
        e_overhead=p.static_power_w * overhead,
        e_active=p.active_power_w * busy,
        e_floor=p.block_power_w * floor_sm,
        e_fallback=p.misaligned_power_w * fallback,
        e_memory=p.dram_j_per_byte * dram + p.kv_j_per_byte * kvb + p.l2_j_per_byte * l2,
        e_compute=e_flop,
        e_pcie=p.pcie_j_per_byte * pcie,
        l2_bytes=l2,
    )


def _sum_over(value, shape) -> float:
    return float(np.sum(np.broadcast_to(value, shape)))


class StepSet:
    """Weighted sums of many steps, costed together: owner i's cost is the sum over its steps of weight x
    step_cost(step), with step_cost's equations, vectorized over every operator of every step (one op_time call per
    operator kind and dtype). A fit evaluates hundreds of measured points per parameter set; this makes that one
    numpy pass. The operators, and so the kernel facts they were counted with, are fixed when the set is built.

    steps: (owner index, weight, StepInputs); a step whose operators hold 1-d arrays (a decode step over several
    contexts) counts once per element."""

    _FIELDS = (
        "flops",
        "weight_bytes",
        "kv_read_bytes",
        "kv_write_bytes",
        "act_bytes",
        "pcie_bytes",
        "block_bytes",
        "blocks",
        "block_flops",
        "block_span",
        "blocks_per_sm",
        "block_iterations",
        "merge_steps",
        "empty_blocks",
        "block_dram_share",
        "prompt_tiles",
    )

    def __init__(self, steps: list[tuple[int, float, StepInputs]], owners: int):
        self.owners = owners
        rows: dict[tuple[str, str], dict[str, list]] = {}
        sums = {
            k: np.zeros(owners) for k in ("dram", "wb", "kvb", "l2", "pcie", "flops", "launches", "light", "host_steps")
        }
        self._flops_by_key: dict[str, np.ndarray] = {}
        for owner, weight, step in steps:
            # a step over several contexts is that many steps: every operator counts once per element
            shape = np.broadcast_shapes(
                *(np.shape(getattr(op, f)) for op in step.ops for f in self._FIELDS + ("launches", "light_launches"))
            )
            launches = light = 0.0
            for op in step.ops:
                mult = weight * op.repeat
                group = rows.setdefault((op.kind, step.compute_dtype), {f: [] for f in self._FIELDS + ("owner", "m")})
                for f in self._FIELDS:
                    group[f].append(np.broadcast_to(np.asarray(getattr(op, f), dtype=float), shape).ravel())
                n = int(np.prod(shape))
                group["owner"].append(np.full(n, owner))
                group["m"].append(np.full(n, mult))
                sums["dram"][owner] += mult * _sum_over(op.dram_bytes, shape)
                sums["wb"][owner] += mult * _sum_over(op.weight_bytes, shape)
                sums["kvb"][owner] += mult * _sum_over(op.kv_read_bytes + op.kv_write_bytes, shape)
                sums["l2"][owner] += mult * _sum_over(op.l2_bytes, shape)
                sums["pcie"][owner] += mult * _sum_over(op.pcie_bytes, shape)
                f_sum = mult * _sum_over(op.flops, shape)
                sums["flops"][owner] += f_sum
                key = _energy_key(op, step.compute_dtype)
                self._flops_by_key.setdefault(key, np.zeros(owners))[owner] += f_sum
                launches = launches + op.repeat * np.asarray(op.launches, dtype=float)
                light = light + op.repeat * np.asarray(op.light_launches, dtype=float)
            if step.dispatches is not None:
                launches, light = float(step.dispatches), 0.0
            elements = int(np.prod(shape))
            sums["launches"][owner] += weight * np.sum(np.broadcast_to(launches, shape))
            sums["light"][owner] += weight * np.sum(np.broadcast_to(light, shape))
            sums["host_steps"][owner] += weight * step.host_steps * elements
        self._sums = sums
        self._groups = []
        for (kind, dtype), g in rows.items():
            stacked = OpCost(
                "stack",
                kind,
                *(
                    np.concatenate(g[f])
                    for f in ("flops", "weight_bytes", "kv_read_bytes", "kv_write_bytes", "act_bytes")
                ),
                0.0,
                1,
                pcie_bytes=np.concatenate(g["pcie_bytes"]),
                block_bytes=np.concatenate(g["block_bytes"]),
                blocks=np.concatenate(g["blocks"]),
                block_flops=np.concatenate(g["block_flops"]),
                block_span=np.concatenate(g["block_span"]),
                blocks_per_sm=np.concatenate(g["blocks_per_sm"]),
                block_iterations=np.concatenate(g["block_iterations"]),
                merge_steps=np.concatenate(g["merge_steps"]),
                empty_blocks=np.concatenate(g["empty_blocks"]),
                block_dram_share=np.concatenate(g["block_dram_share"]),
                prompt_tiles=np.concatenate(g["prompt_tiles"]),
            )
            self._groups.append((kind, dtype, stacked, np.concatenate(g["owner"]), np.concatenate(g["m"])))

    def _any_blocks(self, occupancy_known: bool | None = None) -> bool:
        """Whether any operator is a latency-bound kernel (block_bytes > 0), of known or unknown occupancy or
        either (None)."""
        for _, _, op, _, _ in self._groups:
            blocks = op.block_bytes > 0
            if occupancy_known is not None:
                blocks = blocks & ((op.blocks_per_sm > 0) == occupancy_known)
            if np.any(blocks):
                return True
        return False

    @property
    def has_block_bytes(self) -> bool:
        """Whether any operator is a latency-bound kernel whose blocks stream bytes at attention_cta_Bps."""
        return self._any_blocks()

    @property
    def has_block_bytes_of_unknown_occupancy(self) -> bool:
        """Whether any latency-bound kernel's blocks stream at attention_cta_Bps (their occupancy not known)."""
        return self._any_blocks(occupancy_known=False)

    @property
    def has_occupancy(self) -> bool:
        """Whether any latency-bound kernel's programs per multiprocessor are known (split-KV waves)."""
        return self._any_blocks(occupancy_known=True)

    def costs(self, p: Params) -> StepCost:
        """Every owner's cost under parameters p: a StepCost of shape (owners,)."""
        n = self.owners
        busy, mem_b, comp_b, floor_sm, fallback = (np.zeros(n) for _ in range(5))
        for kind, dtype, op, owner, m in self._groups:
            t_op, sm_s, memory_bound = op_time(op, p, dtype)
            t_op, sm_s = np.broadcast_to(t_op, owner.shape), np.broadcast_to(sm_s, owner.shape)
            busy += np.bincount(owner, m * t_op, n)
            floor_sm += np.bincount(owner, m * sm_s, n)
            if kind in FALLBACK_KINDS:
                fallback += np.bincount(owner, m * t_op, n)
            mem_b += np.bincount(owner, m * np.where(memory_bound, t_op, 0.0), n)
            comp_b += np.bincount(owner, m * np.where(memory_bound, 0.0, t_op), n)
        s = self._sums
        e_flop = sum(p.j_per_flop.get(key, 0.0) * f for key, f in self._flops_by_key.items())
        return _assemble(
            p,
            busy,
            mem_b,
            comp_b,
            floor_sm,
            fallback,
            s["dram"],
            s["wb"],
            s["kvb"],
            s["pcie"],
            s["flops"],
            e_flop,
            s["launches"],
            s["light"],
            s["host_steps"],
            s["l2"],
        )


# steps of a ring collective over N GPUs, in units of N - 1
RING_STEPS = {"all_reduce": 2, "all_gather": 1}


def collective_time(collective: str, nbytes, gpus: int, p: Params):
    """Seconds of a ring all-reduce (or all-gather) over `gpus` GPUs of a tensor every GPU ends with `nbytes` of:
    steps = 2(N-1) (or N-1), each sending nbytes / N per GPU at the link's bandwidth after its latency."""
    steps = RING_STEPS[collective] * (gpus - 1)
    return steps * (nbytes / gpus) / p.link_Bps + steps * p.link_latency_s


def collective_link_bytes(collective: str, nbytes, gpus: int):
    """Bytes a ring collective sends over the link, all GPUs together: N GPUs x steps x nbytes / N."""
    return RING_STEPS[collective] * (gpus - 1) * nbytes


def tensor_parallel_cost(per_gpu: StepCost, transfers, p: Params, gpus: int, idle_gpus: int = 0) -> StepCost:
    """A step split over `gpus` GPUs: each runs `per_gpu` (one shard's step_cost), then the step's collectives
    (shivam.sim.workload.Transfer) run one after another; `idle_gpus` more GPUs wait at static power for as long as
    the step lasts. Times are the step's wall-clock times (the GPUs are symmetric); bytes, FLOPs, launches and
    energy are summed over the GPUs."""
    if gpus == 1 and idle_gpus == 0:
        return per_gpu
    if transfers and p.link_Bps <= 0:
        raise ShivamError(
            "this GPU file has no link section, so no tensor-parallel step can be costed; add one "
            "(`shivam gpus --schema`) or use --tp 1"
        )
    t_link = sum(t.repeat * collective_time(t.collective, t.nbytes, gpus, p) for t in transfers)
    sent = sum(t.repeat * collective_link_bytes(t.collective, t.nbytes, gpus) for t in transfers)
    summed = {f.name: getattr(per_gpu, f.name) * gpus for f in fields(per_gpu)}
    wall = {
        name: getattr(per_gpu, name)
        for name in ("busy_s", "overhead_s", "memory_bound_s", "compute_bound_s", "fallback_s")
    }
    time_s = per_gpu.time_s + t_link
    return StepCost(
        **{
            **summed,
            **wall,
            "time_s": time_s,
            "link_s": per_gpu.link_s + t_link,
            "link_bytes": per_gpu.link_bytes * gpus + sent,
            "e_link": per_gpu.e_link * gpus + gpus * p.static_power_w * t_link + p.link_j_per_byte * sent,
            "e_idle": per_gpu.e_idle * gpus + idle_gpus * p.static_power_w * time_s,
        }
    )


DVFS_ENERGY_EXPONENT = 2.0  # dynamic energy per operation ~ V^2 and V ~ f near the top clocks: E_dyn ~ s^2
MIN_CLOCK_SCALE = 0.2  # the lowest clock scale the solve considers


def _clocked(cost: StepCost, s, static_w: float) -> StepCost:
    """The step at clock scale s (0 < s <= 1) of the SMs: compute-bound time stretches by 1/s, the SMs' dynamic
    energy (arithmetic, active power, latency-floor blocks) scales by s^2, memory energy stays, static power accrues
    over the longer time."""
    extra = cost.compute_bound_s * (1.0 / s - 1.0)
    scale = s**DVFS_ENERGY_EXPONENT
    return dataclasses.replace(
        cost,
        time_s=cost.time_s + extra,
        busy_s=cost.busy_s + extra,
        compute_bound_s=cost.compute_bound_s + extra,
        e_static=cost.e_static + static_w * extra,
        e_compute=cost.e_compute * scale,
        e_active=cost.e_active * scale,
        e_floor=cost.e_floor * scale,
    )


def power_limited(cost: StepCost, p: Params) -> StepCost:
    """The step held to the board's power limit (the equation above): where E / t exceeds p.power_limit_w, the SM
    clock scale s < 1 at which it draws the limit (bisection, vectorized), then, if even the lowest clocks leave it
    above, its time stretched until it does (energy kept); elsewhere, without a limit, and where static power alone
    reaches the limit (GPU files are refused for it; a fit's scaled coefficients may), the step as it is."""
    limit = p.power_limit_w
    if limit is None or limit <= p.static_power_w:  # no limit, or parameters (a card's scale) that leave no room
        return cost
    over = cost.energy_j > limit * cost.time_s
    if not np.any(over):
        return cost
    lo = np.full(np.shape(cost.time_s), MIN_CLOCK_SCALE)
    hi = np.ones(np.shape(cost.time_s))
    for _ in range(40):  # E(s) - P_lim t(s) falls as s falls: keep the largest s at or under the limit
        mid = (lo + hi) / 2
        c = _clocked(cost, mid, p.static_power_w)
        fits = c.energy_j <= limit * c.time_s
        lo, hi = np.where(fits, mid, lo), np.where(fits, hi, mid)
    clocked = _clocked(cost, np.where(over, lo, 1.0), p.static_power_w)
    t, e = clocked.time_s, clocked.energy_j
    stretched = (e - p.static_power_w * t) / (limit - p.static_power_w)
    extra = np.where(e > limit * t * (1 + 1e-9), stretched - t, 0.0)  # what clocks alone could not bring down
    return dataclasses.replace(
        clocked,
        time_s=t + extra,
        busy_s=clocked.busy_s + extra,
        compute_bound_s=clocked.compute_bound_s + extra,
        e_static=clocked.e_static + p.static_power_w * extra,
    )


def power_cap_factor(cost: StepCost, p: Params, gpus: int = 1) -> np.ndarray:
    """The factor that brings the energy of `cost` (a sum of steps the board averages over, on `gpus` working GPUs)
    down to the board's power limit times its time (the equation above); 1 below it, without a limit, and where
    static power alone reaches it (as power_limited). GPUs left waiting (e_idle) draw static power, under the
    limit, and lend their headroom to none: their energy is outside the cap."""
    limit = p.power_limit_w
    if limit is None or limit <= p.static_power_w:
        return np.ones(np.shape(cost.time_s))
    cap, energy = gpus * limit * cost.time_s, cost.energy_j - cost.e_idle
    return np.where(energy > cap, cap / np.where(energy > 0, energy, 1.0), 1.0)


def phase_cap_factors(a: StepCost, b: StepCost, p: Params, gpus: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """The hold factors (the power held over the power unheld) of the two phases of a repeated iteration under a
    limiter that averages the board's power over p.power_window_s (the equation above): the hotter of the two is
    held until the averaged power peaks at the limit, the cooler runs as it is; where the cooler phase is itself
    over the limit, each is held at the limit on its own (the average of a limiter that never lets either phase
    above it; continuous with the case below it). Where the window is not known, both take the iteration's average
    factor (power_cap_factor). Which phase is the hotter may differ over a grid: they are told apart element by
    element. The factors are solved for the phases' unheld times; `held` then stretches the held phase by its
    factor^-limit_stretch_exponent, which leaves the averaged peak a fraction of a percent over the limit."""
    if p.power_window_s is None or p.power_limit_w is None or p.power_limit_w <= p.static_power_w:
        average = power_cap_factor(a + b, p, gpus)
        return average, average
    limit = gpus * p.power_limit_w

    def power(c: StepCost):
        t = np.asarray(c.time_s, dtype=float)
        return np.where(t > 0, (c.energy_j - c.e_idle) / np.where(t > 0, t, 1.0), 0.0), t

    (p_a, t_a), (p_b, t_b) = power(a), power(b)
    a_hot = p_a >= p_b
    p_hot, t_hot = np.where(a_hot, p_a, p_b), np.where(a_hot, t_a, t_b)
    p_cool, t_cool = np.where(a_hot, p_b, p_a), np.where(a_hot, t_b, t_a)
    tau = p.power_window_s
    f = -np.expm1(-t_hot / tau) / np.where(t_hot + t_cool > 0, -np.expm1(-(t_hot + t_cool) / tau), 1.0)
    peak = p_cool + (p_hot - p_cool) * f
    held_hot = np.where(
        peak > limit, (p_cool + (limit - p_cool) / np.where(f > 0, f, 1.0)) / np.where(p_hot > 0, p_hot, 1.0), 1.0
    )
    held_hot = np.minimum(held_hot, 1.0)
    both_over = p_cool >= limit  # the cooler phase alone over the limit: each phase held at it
    held_hot = np.where(both_over, limit / np.where(p_hot > 0, p_hot, 1.0), held_hot)
    held_cool = np.where(both_over, limit / np.where(p_cool > 0, p_cool, 1.0), 1.0)
    return np.where(a_hot, held_hot, held_cool), np.where(a_hot, held_cool, held_hot)


def phases_held(a: StepCost, b: StepCost, p: Params, gpus: int = 1) -> tuple[StepCost, StepCost]:
    """Both phases of a repeated iteration held to the board's power limit (phase_cap_factors, held)."""
    f_a, f_b = phase_cap_factors(a, b, p, gpus)
    return held(a, f_a, p), held(b, f_b, p)


TIME_TERMS = (
    "time_s",
    "busy_s",
    "overhead_s",
    "memory_bound_s",
    "compute_bound_s",
    "floor_sm_s",
    "fallback_s",
    "link_s",
)


def power_held(cost: StepCost, p: Params, gpus: int = 1) -> StepCost:
    """The cost held to the board's power limit (the equations above): above it, its time stretched by
    (P / P_lim)^limit_stretch_exponent, P the power it would draw unheld, and its working GPUs' energy brought to
    P_lim times that time; below it, without a limit, or where static power alone reaches it, as it is."""
    factor = power_cap_factor(cost, p, gpus)
    return held(cost, factor, p)


def limit_stretch(factor, p: Params) -> np.ndarray:
    """How much longer a call held with factor = P_held / P (P_lim / P for a call held as a whole) runs:
    factor^-limit_stretch_exponent (1 where factor is)."""
    return np.asarray(factor, dtype=float) ** (-p.limit_stretch_exponent)


def held(cost: StepCost, factor, p: Params) -> StepCost:
    """`cost` (or a share of what power_cap_factor or phase_cap_factors was computed over) held with that factor:
    its time terms stretched by factor^-limit_stretch_exponent, its working GPUs' power brought to factor x its
    unheld power over them (the limit, for a call held as a whole)."""
    stretch = limit_stretch(factor, p)
    if np.all(stretch == 1.0):
        return power_capped(cost, factor)
    stretched = (*TIME_TERMS, "e_idle")  # GPUs left waiting wait the longer time at static power
    longer = dataclasses.replace(cost, **{name: getattr(cost, name) * stretch for name in stretched})
    return power_capped(longer, factor * stretch)


def power_capped(cost: StepCost, factor) -> StepCost:
    """The cost with every energy term of its working GPUs scaled by `factor` (power_cap_factor), so the breakdown
    keeps its shares; its time, and the waiting GPUs' static energy, as they are."""
    working = [name for name in ENERGY_TERMS if name != "e_idle"]
    return dataclasses.replace(cost, **{name: getattr(cost, name) * factor for name in working})


def host_wait(p: Params, seconds, gpus: int = 1) -> StepCost:
    """The GPUs (`gpus` of them) idling at static power while the host synchronizes, e.g. to accept or reject
    drafted tokens."""
    z = np.zeros_like(np.asarray(seconds, dtype=float))
    return StepCost(
        time_s=seconds,
        busy_s=z,
        overhead_s=seconds,
        memory_bound_s=z,
        compute_bound_s=z,
        floor_sm_s=z,
        fallback_s=z,
        dram_bytes=z,
        weight_bytes=z,
        kv_bytes=z,
        pcie_bytes=z,
        flops=z,
        launches=z,
        e_static=z,
        e_overhead=p.static_power_w * seconds * gpus,
        e_active=z,
        e_floor=z,
        e_fallback=z,
        e_memory=z,
        e_compute=z,
        e_pcie=z,
    )


def energy_features(c: StepCost) -> dict:
    """The energy equation above is linear in its coefficients: E = sum(coefficient x feature) + energy_not_fitted(c)
    with these features (compute_scale multiplies the per-FLOP energies the cost was computed with). The fit uses this
    decomposition, so the equation stays here alone."""
    return {
        "static_power_w": c.time_s,
        "active_power_w": c.busy_s,
        "block_power_w": c.floor_sm_s,
        "dram_j_per_byte": c.dram_bytes,
        "kv_j_per_byte": c.kv_bytes,
        "l2_j_per_byte": c.l2_bytes,
        "compute_scale": c.e_compute,
        "pcie_j_per_byte": c.pcie_bytes,
    }


def energy_not_fitted(c: StepCost):
    """The part of E_step no fitted coefficient multiplies: the fallback kernels' power, measured on its own (the fit
    takes steps of one GPU: no link or idle terms)."""
    return c.e_fallback
