"""`shivam validate`: set up the meter, the environment record and the idle baselines, then run the campaign."""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path

from shivam.errors import ShivamError
from shivam.hardware import gpu_id_for
from shivam.parsing import parse_floats, parse_positive_int
from shivam.validate.points import Point
from shivam.validate.suites import suite_points

def _points(args) -> list[Point]:
    if args.points_file:
        return [Point(**p) for p in json.loads(Path(args.points_file).read_text())]
    pts = [p for name in args.suite.split(",") for p in suite_points(name.strip())]
    if args.engine:
        pts = [p for p in pts if p.engine == args.engine]
    if args.limit:
        pts = pts[: parse_positive_int(args.limit, "--limit")]
    if not pts:
        raise ShivamError("no points selected: check --suite and --engine")
    return pts


def validate(args) -> int:
    points = _points(args)
    repeats = parse_positive_int(args.repeats, "--repeats")
    min_periods = parse_positive_int(args.min_periods, "--min-periods")
    max_spread = parse_floats(args.max_spread, "--max-spread", 0, 1)[0]
    extensions = parse_positive_int(args.extensions, "--extensions", 0)
    command = "shivam " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ShivamError("the validator needs torch; install the extra: pip install 'shivam[validate]'") from None
    from shivam.validate.runner import ResultsFile, Workbench, print_summary, run_campaign

    if args.codecarbon:
        from shivam.validate.crosscheck import require_codecarbon

        require_codecarbon()  # refuse at the start, not after the first point

    if args.simulate_meter:
        from shivam.validate.meter import SimulatedCounter

        counter = SimulatedCounter(power_w=100.0).counter()
        device, gpu_id, snapshot, idle = "cpu", None, (lambda: {}), None
        env = {"record": "environment", "command": command, "simulated_meter": True, "device": "cpu"}
        out_dir = Path(args.out or "validation/results/simulated")
    else:
        import torch

        from shivam.validate import nvml
        from shivam.validate.meter import idle_power

        index = parse_positive_int(args.gpu_index, "--gpu-index", 0)
        device = f"cuda:{index}"
        gpu_sync = lambda: torch.cuda.synchronize(index)  # noqa: E731
        counter = nvml.counter(index, gpu_sync)  # NVML needs no CUDA context; says so in one line if no GPU
        env = nvml.environment(index, command)
        gpu_id = gpu_id_for(env["gpu"])
        # idle before this process touches CUDA at all, then with a context held
        idle = {"no_context_w": idle_power(counter, 3.0)}
        if not torch.cuda.is_available():
            raise ShivamError("NVML sees a GPU but torch has no CUDA; install a CUDA build of torch")
        torch.zeros(1, device=device)
        torch.cuda.synchronize(index)
        idle["with_context_w"] = idle_power(counter, 3.0)
        snapshot = lambda: nvml.snapshot(index)  # noqa: E731
        out_dir = Path(args.out or f"validation/results/{gpu_id or 'gpu'}")
    name = "points" if args.points_file else args.suite.replace(",", "_")
    results = ResultsFile(out_dir / f"{name}.jsonl")
    results.append(env)
    if idle:
        results.append({"record": "idle", **idle, "note": "board power over >= 3 s of counter periods"})
    bench = Workbench(device, args.weights)
    written = run_campaign(points, results, counter, bench, gpu_id, snapshot, repeats, min_periods,
                           idle if args.subtract_idle else None, progress=True,
                           codecarbon_gpu=(None if args.simulate_meter else index) if args.codecarbon else False,
                           max_spread=max_spread, extensions=extensions)
    all_points = [r for r in results.records() if r.get("record") == "point"]
    print_summary(all_points)
    failed = sum(r["status"] != "ok" for r in written)
    print(f"{len(written)} points measured this run ({failed} failed), {len(all_points)} in {results.path}")
    return 0
