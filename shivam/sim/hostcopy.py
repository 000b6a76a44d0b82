"""Stage I of the paper: reload the weights from the host before every GEMM, or load them once and reuse them.

Case A (reload): r times (host-to-device copy of the n x n weights + GEMM). Case B (reuse): one copy + r GEMMs.
Both cases do the same arithmetic; the difference is r-1 PCIe copies (and the DRAM writes they cause).
`sequence_cost` is the one definition, used by `shivam stage1` and by the validator's stage1 points.
"""

from __future__ import annotations

import numpy as np

from shivam.sim.roofline import StepCost, StepInputs, step_cost
from shivam.sim.workload import host_to_device_gemm_ops
from shivam.specs import Dtypes, Params


def unit_steps(p: Params, n: int, tokens: int, dt: Dtypes) -> tuple[StepInputs, StepInputs]:
    """(copy + GEMM, GEMM alone): launched back to back, with no host step of their own."""
    return (
        StepInputs(host_to_device_gemm_ops(n, tokens, dt, p.kernels, reload=True), dt.compute, None, 0),
        StepInputs(host_to_device_gemm_ops(n, tokens, dt, p.kernels, reload=False), dt.compute, None, 0),
    )


def sequence_weights(reuse, reload: bool) -> tuple:
    """How many (copy + GEMM) and (GEMM alone) units a sequence runs: r x (copy + GEMM), or copy + GEMM then r - 1
    GEMMs. `reuse` may be an array."""
    reuse = np.asarray(reuse, dtype=float)
    return (reuse, 0.0) if reload else (1.0, reuse - 1)


def _units(p: Params, n: int, tokens: int, dt: Dtypes) -> tuple[StepCost, StepCost]:
    return tuple(step_cost(ops, p, dtype, host_steps) for ops, dtype, _, host_steps in unit_steps(p, n, tokens, dt))


def _sequence(copy_gemm: StepCost, gemm: StepCost, reuse, reload: bool) -> StepCost:
    w_copy, w_gemm = sequence_weights(reuse, reload)
    return copy_gemm.scaled(w_copy) + gemm.scaled(w_gemm)


def sequence_cost(p: Params, n: int, tokens: int, dt: Dtypes, reuse, reload: bool) -> StepCost:
    """Cost of a whole reload (r x (copy + GEMM)) or reuse (copy + r x GEMM) sequence; `reuse` may be an array."""
    return _sequence(*_units(p, n, tokens, dt), reuse, reload)


def reload_vs_reuse(p: Params, n: int, tokens: int, dt: Dtypes, reuse) -> dict:
    reuse = np.asarray(reuse, dtype=float)
    copy_gemm, gemm = _units(p, n, tokens, dt)
    reload, keep = _sequence(copy_gemm, gemm, reuse, True), _sequence(copy_gemm, gemm, reuse, False)
    return {
        "reuse": reuse.tolist(),
        "energy_reload_j": reload.energy_j.tolist(),
        "energy_reuse_j": keep.energy_j.tolist(),
        "time_reload_s": reload.time_s.tolist(),
        "time_reuse_s": keep.time_s.tolist(),
        "energy_saving": (1 - keep.energy_j / reload.energy_j).tolist(),
        "copy_energy_j": float(copy_gemm.energy_j - gemm.energy_j),
        "gemm_energy_j": float(gemm.energy_j),
        "copy_time_s": float(copy_gemm.time_s - gemm.time_s),
        "gemm_time_s": float(gemm.time_s),
        "gemm_bound": gemm.bound,
    }
