"""Is the hf engine's window-to-window spread the meter's or the host's? Times transformers generate() in 2 s windows
with no energy meter, under several host settings, and records what the host did during each window: the calls'
own durations, the process's CPU time, a fixed pure-Python workload timed after each window, the vCPU time the
hypervisor stole (/proc/stat), involuntary context switches.

Run on a GPU: python3 validation/hf_jitter.py [model] [gen] [variant,...]   (one JSON line per variant)
variants: plain, gc-off, threads-1, poller (a thread reading NVML power every 2 ms, as the meter's), pin-1 (one CPU)
"""

import gc
import json
import os
import resource
import statistics
import sys
import threading
import time

import torch

from shivam.validate.engines import generate_call, hf_model
from shivam.validate.meter import host_probe  # the meter's own: the vCPU's speed right after each window


def steal_jiffies() -> int:
    with open("/proc/stat") as f:
        fields = f.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) if len(fields) > 8 else 0


def window(call, seconds=2.0) -> dict:
    ru0, steal0, cpu0 = resource.getrusage(resource.RUSAGE_SELF), steal_jiffies(), time.process_time()
    start, times = time.perf_counter(), []
    while time.perf_counter() - start < seconds:
        t = time.perf_counter()
        call()
        times.append(time.perf_counter() - t)
    wall = time.perf_counter() - start
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "ms_per_call": 1e3 * wall / len(times),
        "median_call_ms": 1e3 * statistics.median(times),
        "max_call_ms": 1e3 * max(times),
        "calls": len(times),
        "cpu_per_wall": (time.process_time() - cpu0) / wall,
        "steal_s": (steal_jiffies() - steal0) / os.sysconf("SC_CLK_TCK"),
        "involuntary_switches": ru1.ru_nivcsw - ru0.ru_nivcsw,
        "host_probe_ms": 1e3 * host_probe(),
    }


def poller(stop: threading.Event):
    import pynvml

    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    while not stop.is_set():
        pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        time.sleep(0.002)


def run_variant(call, variant: str, windows: int = 8) -> dict:
    stop, thread = threading.Event(), None
    threads = torch.get_num_threads()
    if variant == "gc-off":
        gc.collect()
        gc.disable()
    elif variant == "threads-1":
        torch.set_num_threads(1)
    elif variant == "poller":
        thread = threading.Thread(target=poller, args=(stop,), daemon=True)
        thread.start()
    elif variant == "pin-1":
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[2]})
    for _ in range(3):
        call()
    ws = [window(call) for _ in range(windows)]
    stop.set()
    gc.enable()
    torch.set_num_threads(threads)
    per_call = [w["ms_per_call"] for w in ws]
    return {
        "variant": variant,
        "spread": (max(per_call) - min(per_call)) / statistics.median(per_call),
        "cpus": len(os.sched_getaffinity(0)),
        "windows": [{k: round(v, 4) for k, v in w.items()} for w in ws],
    }


def main(model="opt-125m", gen=8, variants=("plain",)):
    call = generate_call(hf_model(model, "bf16", "cuda"), 128, gen, 1)
    for _ in range(5):
        call()
    torch.cuda.synchronize()
    for v in variants:
        print(json.dumps({"model": model, "gen": gen, **run_variant(call, v)}), flush=True)


if __name__ == "__main__":
    main(
        sys.argv[1] if len(sys.argv) > 1 else "opt-125m",
        int(sys.argv[2]) if len(sys.argv) > 2 else 8,
        sys.argv[3].split(",") if len(sys.argv) > 3 else ("plain",),
    )
