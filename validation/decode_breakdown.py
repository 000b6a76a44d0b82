"""Where the reference engine's batch-1 decode spends the time the weights-only graph does not.

The engine's Mistral-7B decode at batch 1, context 512 runs 1.14-1.17x the weights-only graph (the same GEMMs, no
attention or norms; docs/validation.md, "The reference engine"). This probe says which part of the difference is
kernels running and which is time between them: it captures both steps in CUDA graphs, times their replays (CUDA
events), and profiles the replays (torch.profiler, CUPTI: one record per kernel of the graph), then sums each step's
kernel time by class (GEMM, attention, add_norm, act, other) against the replay's time.

    PYTHONPATH=$PWD python3 validation/decode_breakdown.py [--model mistral-7b] [--context 512] [--batch 1]
        [--new-tokens 1]   # n > 1: a verify step of n new tokens, against the weights-only graph of batch x n rows
        [--pdl]            # the same step again with the engine's Triton kernels under programmatic dependent
                           # launch (shivam.validate.kernels.PDL), captured and timed in the same run; compare the
                           # replay times: under PDL a kernel's profiled time includes its wait on the one before

Prints one line per (step, class): kernels per step, device time per step (µs), mean per kernel; then each step's
kernel-busy time, the profiled span per replay, and the replay time (without the profiler) less the busy time:
near 0 when the kernels run back to back (slightly negative: the profiled kernels run a little slower).
"""

from __future__ import annotations

import argparse
import re
from collections import defaultdict

import torch

from shivam.specs.model import load_model
from shivam.validate import kernels
from shivam.validate.engine_suite import weights_only_run
from shivam.validate.engines import graphed, replay_seconds
from shivam.validate.ref import RefDecoder

CLASSES = (  # kernel name patterns, first match wins
    ("attention", re.compile(r"_attention")),
    ("add_norm", re.compile(r"_add_norm")),
    ("act", re.compile(r"_act\b|_act_")),
    ("gemm", re.compile(r"gemm|gemv|nvjet|cutlass|sm90|splitk|ampere|cublas", re.I)),
)


def kernel_class(name: str) -> str:
    return next((label for label, pattern in CLASSES if pattern.search(name)), "other")


def profile_graph(fn, reps: int) -> tuple[dict[str, list[float]], float, dict[str, int]]:
    """Each class's kernel durations (s) over `reps` replays of fn's CUDA graph, the replays' span per replay, and
    how many times each GEMM kernel (by name) ran."""
    replay = graphed({}, torch.device("cuda"), "probe", fn)
    for _ in range(5):
        replay()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(reps):
            replay()
        torch.cuda.synchronize()
    by_class: dict[str, list[float]] = defaultdict(list)
    gemms: dict[str, int] = defaultdict(int)
    starts, ends = [], []
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA or event.device_time <= 0:
            continue
        if "memcpy" in event.name.lower() or "memset" in event.name.lower():
            continue
        by_class[kernel_class(event.name)].append(event.device_time * 1e-6)
        if kernel_class(event.name) == "gemm":
            gemms[event.name] += 1
        starts.append(event.time_range.start)
        ends.append(event.time_range.end)
    span = (max(ends) - min(starts)) * 1e-6 / reps if starts else float("nan")
    return by_class, span, gemms


def with_pdl(fn, on: bool):
    """fn with the engine's Triton kernels launched under PDL, or not, while it runs (and while a graph captures
    it), whatever SHIVAM_REF_PDL says."""

    def run():
        before, kernels.PDL = kernels.PDL, on
        try:
            return fn()
        finally:
            kernels.PDL = before

    return run


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="mistral-7b")
    ap.add_argument("--context", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--new-tokens", type=int, default=1)
    ap.add_argument("--pdl", action="store_true", help="also the step under programmatic dependent launch")
    args = ap.parse_args()
    n = args.new_tokens
    dec = RefDecoder(load_model(args.model), args.batch, args.context + 64, device="cuda")
    dec.k_cache.normal_()
    dec.v_cache.normal_()
    token = torch.zeros((args.batch, n), dtype=torch.long, device="cuda")
    lens, plan = dec.lens_for(args.context), dec.plan(n, args.context + n)
    weights_only, _ = weights_only_run(dec, args.batch * n)
    step = lambda: dec.ref_logits(token, lens, plan).argmax(dim=-1)  # noqa: E731
    steps = {"weights-only": weights_only, "decode": with_pdl(step, False)}
    if args.pdl:
        steps["decode, PDL"] = with_pdl(step, True)
    replay = {name: replay_seconds(fn) for name, fn in steps.items()}
    w, d = replay["weights-only"], replay["decode"]
    print(f"{args.model} batch {args.batch} context {args.context} new tokens {n}: weights-only {1e3 * w:.3f} ms, "
          f"decode {1e3 * d:.3f} ms ({d / w:.3f}x)")  # fmt: skip
    if args.pdl:
        p = replay["decode, PDL"]
        print(f"  decode under PDL {1e3 * p:.3f} ms ({p / w:.3f}x the weights-only graph, {p / d:.3f}x without PDL)")
    for name, fn in steps.items():
        by_class, span, gemms = profile_graph(fn, args.reps)
        busy = 0.0
        for label in sorted(by_class, key=lambda c: -sum(by_class[c])):
            times = by_class[label]
            per_step, count = sum(times) / args.reps, len(times) / args.reps
            busy += per_step
            print(f"  {name:12s} {label:9s} {count:6.0f} kernels/step {1e6 * per_step:8.1f} us/step "
                  f"{1e6 * per_step / count:6.2f} us each")  # fmt: skip
        print(f"  {name:12s} busy {1e6 * busy:.1f} us, profiled span {1e6 * span:.1f} us, replay "
              f"{1e6 * replay[name]:.1f} us: between kernels {1e6 * (replay[name] - busy):.1f} us")  # fmt: skip
        for kernel, count in sorted(gemms.items(), key=lambda kv: -kv[1]):
            print(f"    {count / args.reps:6.0f} per step  {kernel[:110]}")


if __name__ == "__main__":
    main()
