"""`shivam validate` as a library call: select the points, set up the meter, the environment record and the idle
baselines, then run the campaign (shivam.validate.runner) into one results file."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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
        pts = on_engine(pts, engine)
    if limit is not None:
        pts = pts[:limit]
    if not pts:
        raise ShivamError("no points selected: check --suite and --engine")
    for p in pts:  # before anything runs: a point its models cannot hold fails here, not on the GPU
        try:
            p.check()
        except ShivamError as exc:
            where = f"points file {points_file!r}" if points_file else "suite"
            raise ShivamError(f"{where}: {exc}; fix or drop the point") from None
    return pts


DECODER_ENGINES = ("graph", "ref")  # engines that run step and spec points
GENERATE_ENGINES = ("hf", "hf-static")  # engines that run generate points


def on_engine(points: list[Point], engine: str) -> list[Point]:
    """The points that run on `engine`: those of its class retargeted to it, the rest (other engines' points,
    stage I's plain GEMMs) left out."""
    return [p for p in (retarget(p, engine) for p in points) if p.engine == engine]


def retarget(point: Point, engine: str) -> Point:
    """A suite's point on another engine of the same class: step and spec points on graph or ref, generate points on
    hf or hf-static; any other point keeps its engine (and is then left out by the engine filter)."""
    if point.kind in ("step", "spec", "prefill") and engine in DECODER_ENGINES:
        return point.model_copy(update={"engine": engine})
    if point.kind == "generate" and engine in GENERATE_ENGINES:
        return point.model_copy(update={"engine": engine})
    return point


@dataclass
class Meter:
    """The energy counter of one GPU (or the simulated one) and what the results file records about it."""

    counter: object
    device: str
    gpu_id: str | None  # the bundled GPU id NVML's name maps to, if any
    env: dict
    idle: dict | None
    snapshot: Callable[[], dict]
    index: int | None


def open_meter(
    gpu_index: int = 0, simulate_meter: bool = False, command: str = "", simulated_power_w: float = 100.0
) -> Meter:
    """Set up the meter: NVML's counter of GPU `gpu_index` (one line, exit 2, where there is no GPU, NVML or CUDA),
    the environment record and the idle baselines; or, for tests on the CPU, a simulated 100 ms counter."""
    try:
        import torch
    except ImportError:
        raise ShivamError("the validator needs torch; install the extra: pip install 'shivam[validate]'") from None
    if simulate_meter:
        from shivam.validate.meter import SimulatedCounter

        counter = SimulatedCounter(power_w=simulated_power_w).counter()
        env = {"record": "environment", "command": command, "simulated_meter": True, "device": "cpu"}
        return Meter(counter, "cpu", None, env, None, lambda: {}, None)
    from shivam.validate import nvml
    from shivam.validate.meter import idle_power

    index = gpu_index
    counter = nvml.counter(index, lambda: torch.cuda.synchronize(index))  # NVML needs no CUDA context
    env = nvml.environment(index, command)
    # idle before this process touches CUDA at all, then with a context held
    idle = {"no_context_w": idle_power(counter, 3.0)}
    if not torch.cuda.is_available():
        raise ShivamError("NVML sees a GPU but torch has no CUDA; install a CUDA build of torch")
    device = f"cuda:{index}"
    torch.zeros(1, device=device)
    torch.cuda.synchronize(index)
    idle["with_context_w"] = idle_power(counter, 3.0)
    return Meter(counter, device, gpu_id_for(env["gpu"]), env, idle, lambda: nvml.snapshot(index), index)


def results_file(folder: Path, name: str, meter: Meter) -> ResultsFile:
    """The results file of a campaign, its environment and idle records appended (a resumed run adds its own)."""
    if folder.exists() and not folder.is_dir():
        raise ShivamError(f"--out {str(folder)!r} is a file; give a folder for the results")
    results = ResultsFile(folder / f"{name}.jsonl")
    results.append(meter.env)
    if meter.idle:
        results.append({"record": "idle", **meter.idle, "note": "board power over >= 3 s of counter periods"})
    return results


SIMULATED_MAX_PARAMS = 1.5e9  # a simulated run builds every model on the CPU, in fp32


def refuse_large_models_on_the_cpu(points: list[Point]) -> None:
    """A simulated run (the CPU, fp32 weights) refuses models whose weights would not fit a small machine's memory."""
    from shivam.specs.model import load_model

    for p in points:
        for ref in filter(None, (p.model, p.draft)):
            params = load_model(ref).param_count()
            if params > SIMULATED_MAX_PARAMS:
                raise ShivamError(
                    f"--simulate-meter runs every point on the CPU: {ref} ({params / 1e9:.1f} B parameters) is too "
                    f"large for it; measure on a GPU, or give --points-file with models of at most 1.5 B parameters"
                )


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
    if simulate_meter:
        refuse_large_models_on_the_cpu(points)
    if codecarbon:
        from shivam.validate.codecarbon_check import require_codecarbon

        require_codecarbon()  # refuse at the start, not after the first point
    meter = open_meter(gpu_index, simulate_meter, command)
    from shivam.validate.runner import Workbench, run_campaign

    folder = Path(
        out or ("validation/results/simulated" if simulate_meter else f"validation/results/{meter.gpu_id or 'gpu'}")
    )
    results = results_file(folder, name, meter)
    written = run_campaign(
        points,
        results,
        meter.counter,
        Workbench(meter.device, weights),
        meter.gpu_id,
        meter.snapshot,
        repeats,
        min_periods,
        meter.idle if subtract_idle else None,
        progress=True,
        codecarbon_gpu=meter.index if codecarbon else False,
        max_spread=max_spread,
        extensions=extensions,
    )
    return results.path, written


def run_engine_validation(out: str | None = None, gpu_index: int = 0, command: str = "", rounds: int = 3):
    """The engine suite (shivam.validate.engine_suite) on GPU `gpu_index`: returns the results file and its records."""
    meter = open_meter(gpu_index, False, command)
    from shivam.validate.engine_suite import run_engine_suite

    folder = Path(out or f"validation/results/{meter.gpu_id or 'gpu'}")
    results = results_file(folder, "engine", meter)
    written = run_engine_suite(results, meter.counter, meter.device, rounds)
    return results.path, written
