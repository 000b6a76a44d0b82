"""Stage I of the paper: reload the weights from the host before every GEMM, or load them once and reuse them.

Case A (reload): r times (host-to-device copy of the n x n weights + GEMM). Case B (reuse): one copy + r GEMMs.
Both cases do the same arithmetic; the difference is r-1 PCIe copies (and the DRAM writes they cause).
"""

from __future__ import annotations

import numpy as np

from shivam.hardware import Params
from shivam.roofline import step_cost
from shivam.workload import Dtypes, host_to_device_gemm_ops


def reload_vs_reuse(p: Params, n: int, tokens: int, dt: Dtypes, reuse) -> dict:
    reuse = np.asarray(reuse, dtype=float)
    gemm = step_cost(host_to_device_gemm_ops(n, tokens, dt, reload=False), p, dt.compute, host_steps=0)
    both = step_cost(host_to_device_gemm_ops(n, tokens, dt, reload=True), p, dt.compute, host_steps=0)
    copy_t, copy_e = both.time_s - gemm.time_s, both.energy_j - gemm.energy_j
    e_reload = reuse * both.energy_j
    e_reuse = copy_e + reuse * gemm.energy_j
    t_reload = reuse * both.time_s
    t_reuse = copy_t + reuse * gemm.time_s
    return {"reuse": reuse.tolist(), "energy_reload_j": e_reload.tolist(), "energy_reuse_j": e_reuse.tolist(),
            "time_reload_s": t_reload.tolist(), "time_reuse_s": t_reuse.tolist(),
            "energy_saving": (1 - e_reuse / e_reload).tolist(),
            "copy_energy_j": float(copy_e), "gemm_energy_j": float(gemm.energy_j),
            "copy_time_s": float(copy_t), "gemm_time_s": float(gemm.time_s), "gemm_bound": gemm.bound}
