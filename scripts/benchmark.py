"""Speed benchmark (prints figures; nothing asserted):
1. cold wall time of `shivam predict --model mistral-7b --gpu l4 --k 1..8` (goal: median < 0.5 s on 2 cores);
2. throughput of the vectorized (k, alpha, context) grid (goal: >= 1,000,000 points per second);
3. cold wall time of `shivam crossover` and of `shivam predict --batch 1..256` in each output format (goal: < 1 s).

Run: .venv/bin/python scripts/benchmark.py
"""

import statistics
import subprocess
import sys
import time

import numpy as np

from shivam.sim.scenario import Scenario
from shivam.sim.speculative import tokens_per_iteration
from shivam.specs import load_gpu, make_params
from shivam.specs.model import load_model

SERVING = ["--model", "llama-3.1-8b", "--draft", "llama-3.2-1b", "--gpu", "h200"]
SERVING_COMMANDS = {  # the serving regime's scans: 256 batch sizes (predict's default k 1..8 x 4 alphas: 9,216 rows)
    "crossover": ["crossover", *SERVING],
    "predict --batch 1..256": ["predict", *SERVING, "--batch", "1..256"],
    "predict --batch 1..256 --format json": ["predict", *SERVING, "--batch", "1..256", "--format", "json"],
    "predict --batch 1..256 --format csv": ["predict", *SERVING, "--batch", "1..256", "--format", "csv"],
}


def cold_predict(runs: int = 9, args=("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "1..8")) -> list[float]:
    cmd = [sys.executable, "-m", "shivam", *args]
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return times


def grid_throughput(repeats: int = 5) -> tuple[int, float]:
    scn = Scenario(
        target=load_model("mistral-7b"),
        draft=load_model("opt-125m"),
        params=make_params(load_gpu("l4")),
        prompt=128,
        gen=2048,
    )
    ks = np.arange(0, 17)
    alphas = np.linspace(0.0, 1.0, 101)
    contexts = np.linspace(128, 4096, 1000)
    taus = tokens_per_iteration(alphas[None, :], ks[:, None])
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = scn.grid(ks, taus, contexts)
        _ = out["energy_per_token_j"].sum()
        best = min(best, time.perf_counter() - t0)
    return ks.size * alphas.size * contexts.size, best


if __name__ == "__main__":
    times = cold_predict()
    print(
        f"cold `shivam predict --model mistral-7b --gpu l4 --k 1..8`: median {statistics.median(times):.3f} s, "
        f"min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs (goal: median < 0.5 s)"
    )
    n, t = grid_throughput()
    print(
        f"vectorized grid: {n:,} (k, alpha, context) points in {t * 1e3:.1f} ms = {n / t:,.0f} points/s "
        f"(goal: >= 1,000,000/s)"
    )
    for name, args in SERVING_COMMANDS.items():
        times = cold_predict(5, args)
        print(f"cold `shivam {name}`: median {statistics.median(times):.3f} s, max {max(times):.3f} s (goal: < 1 s)")
