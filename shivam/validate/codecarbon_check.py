"""CodeCarbon as an optional cross-check: one extra window per point, timed by shivam's meter and by CodeCarbon's
OfflineEmissionsTracker at once (no network), reported side by side in joules.

CodeCarbon samples power every `measure_power_secs` and integrates it; the paper measured with it. Where the two
disagree, shivam's counter-based window is the primary figure.
"""

from __future__ import annotations

import logging
import time

from shivam.errors import ShivamError

J_PER_KWH = 3.6e6


def require_codecarbon():
    try:
        from codecarbon import OfflineEmissionsTracker
    except ImportError:
        raise ShivamError("--codecarbon needs the codecarbon package: pip install codecarbon") from None
    logging.getLogger("codecarbon").setLevel(logging.ERROR)
    return OfflineEmissionsTracker


def codecarbon_window(counter, call, min_periods: int, gpu_index: int | None) -> dict:
    tracker_cls = require_codecarbon()
    kwargs = dict(
        country_iso_code="USA", measure_power_secs=1, save_to_file=False, log_level="error", tracking_mode="machine"
    )
    if gpu_index is not None:
        kwargs["gpu_ids"] = [gpu_index]
    tracker = tracker_cls(**kwargs)
    t0 = time.perf_counter()
    tracker.start()
    win = counter.window(call, min_periods)
    tracker.stop()
    wall = time.perf_counter() - t0
    data = tracker.final_emissions_data
    gpu_j = float(getattr(data, "gpu_energy", 0.0) or 0.0) * J_PER_KWH
    return {
        "shivam_power_w": win.power_w,
        "shivam_energy_per_call_j": win.energy_j / win.calls,
        "codecarbon_gpu_energy_j": gpu_j,
        "codecarbon_total_energy_j": float(data.energy_consumed) * J_PER_KWH,
        "codecarbon_wall_s": wall,
        "codecarbon_gpu_power_w": gpu_j / wall if wall > 0 else 0.0,
        "codecarbon_energy_per_call_j": gpu_j / win.calls if win.calls else 0.0,
        "note": "codecarbon_gpu_energy_j is 0 where CodeCarbon found no GPU (it then reports CPU and RAM only)",
    }
