"""`shivam validate` as a library call: select the points, set up the meter, the environment record and the idle
baselines, then run the campaign (shivam.validate.runner) into one results file."""

from __future__ import annotations

from pathlib import Path

from pydantic import ValidationError

from shivam.calibrate.points import Point
from shivam.calibrate.results import ResultsFile
from shivam.errors import ShivamError
from shivam.specs import gpu_id_for
from shivam.userfiles import read_json, validation_message
from shivam.validate.suites import suite_points


def select_points(
    suites: list[str], engine: str | None = None, limit: int | None = None, points_file: str | None = None
) -> list[Point]:
    """The points of the named suites (or of a JSON list of points), of one engine, at most `limit` of them."""
    if points_file:
        raw = read_json(points_file, "points file", "give a JSON list of point objects")
        if not isinstance(raw, list):
            raise ShivamError(f"points file {points_file!r} must hold a JSON list of point objects")
        try:
            pts = [Point.model_validate(p) for p in raw]
        except ValidationError as exc:
            raise ShivamError(validation_message(exc, points_file, fix="see shivam/calibrate/points.py")) from None
    else:
        pts = [p for name in suites for p in suite_points(name.strip())]
    if engine:
        pts = [p for p in pts if p.engine == engine]
    if limit is not None:
        pts = pts[:limit]
    if not pts:
        raise ShivamError("no points selected: check --suite and --engine")
    return pts


def run_validation(
    points: list[Point],
    out: str | None = None,
    name: str = "points",
    gpu_index: int = 0,
    repeats: int = 3,
    min_periods: int = 20,
    max_spread: float = 0.03,
    extensions: int = 1,
    weights: str | None = None,
    subtract_idle: bool = False,
    codecarbon: bool = False,
    simulate_meter: bool = False,
    command: str = "",
) -> tuple[Path, list[dict]]:
    """Measure the points; returns the results file and the records written by this run."""
    try:
        import torch
    except ImportError:
        raise ShivamError("the validator needs torch; install the extra: pip install 'shivam[validate]'") from None
    from shivam.validate.runner import Workbench, run_campaign

    if codecarbon:
        from shivam.validate.codecarbon_check import require_codecarbon

        require_codecarbon()  # refuse at the start, not after the first point

    index = gpu_index
    if simulate_meter:
        from shivam.validate.meter import SimulatedCounter

        counter = SimulatedCounter(power_w=100.0).counter()
        device, gpu_id, snapshot, idle = "cpu", None, (lambda: {}), None
        env = {"record": "environment", "command": command, "simulated_meter": True, "device": "cpu"}
        out_dir = Path(out or "validation/results/simulated")
    else:
        from shivam.validate import nvml
        from shivam.validate.meter import idle_power

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
        out_dir = Path(out or f"validation/results/{gpu_id or 'gpu'}")
    if out_dir.exists() and not out_dir.is_dir():
        raise ShivamError(f"--out {str(out_dir)!r} is a file; give a folder for the results")
    results = ResultsFile(out_dir / f"{name}.jsonl")
    results.append(env)
    if idle:
        results.append({"record": "idle", **idle, "note": "board power over >= 3 s of counter periods"})
    bench = Workbench(device, weights)
    written = run_campaign(
        points,
        results,
        counter,
        bench,
        gpu_id,
        snapshot,
        repeats,
        min_periods,
        idle if subtract_idle else None,
        progress=True,
        codecarbon_gpu=(None if simulate_meter else index) if codecarbon else False,
        max_spread=max_spread,
        extensions=extensions,
    )
    return results.path, written
