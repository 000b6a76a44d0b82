"""`shivam calibrate`: measure this GPU with a suite that identifies every fitted parameter, fit, and install the
calibration for this card; or (--card) measure only this card's energy scale against its GPU model's calibration.

Every measured point is appended to a results file in the user's data directory as it completes, so an interrupted
calibration resumes and nothing measured is lost; the calibration goes to <data>/calibrations/ (or -o FILE), where
`shivam predict` finds it (shivam.specs.calibration.find_calibration).
"""

from __future__ import annotations

import datetime
import hashlib
import math
from pathlib import Path

import numpy as np

from shivam.calibrate import fit_results
from shivam.calibrate.band import quick_band
from shivam.calibrate.fit import ENERGY_PARAMS, KV_POINTS, TIME_PARAMS
from shivam.calibrate.points import Point, PointSet, point_cost
from shivam.errors import ShivamError
from shivam.sim.scenario import Scenario
from shivam.sim.workload import kv_cache_bytes, weight_bytes
from shivam.specs import (
    GPU,
    Calibration,
    Dtypes,
    gpu_id_for,
    load_engine,
    load_gpu,
    load_model,
    make_params,
    resolve_params,
)
from shivam.specs.calibration import (
    Card,
    bundled_calibration,
    default_engine,
    load_calibration,
    local_card_uuids,
    user_calibrations,
    user_calibrations_dir,
)
from shivam.userfiles import write_text
from shivam.validate.campaign import DECODER_ENGINES, on_engine, open_meter, results_file

# held in every calibration, as in the bundled H200 recipe: the host sync of a speculative iteration, collinear with
# the per-step overhead; power while kernels run, collinear with energy per byte when nearly every step is
# memory-bound; how much longer calls at the power limit run, which needs many of them. The KV cache's energy per byte
# is fitted from the suite's decode steps over caches larger than the weights (held where none fits the GPU).
PRIORS = {"per_iteration_s": 0.0, "active_power_w": 0.0, "limit_stretch_exponent": 0.0}
# (batch, context) of the KV-bound steps, by cache size: the first whose KV cache is a given multiple of the weights
KV_SHAPES = (
    (16, 1024),
    (32, 1024),
    (16, 2048),
    (32, 2048),
    (64, 1024),
    (16, 4096),
    (64, 2048),
    (32, 4096),
    (128, 2048),
    (64, 4096),
    (128, 4096),
)
# largest first: the memory-bound anchor is the largest that fits; the rest separate per-kernel, per-step and
# per-byte costs (sizes 68M to 7B, 2 to 32 layers)
LARGE = ("mistral-7b", "llama-2-7b", "opt-6.7b", "gemma-2b", "tinyllama-1.1b")
MID = ("opt-1.3b", "tinyllama-1.1b", "qwen2-0.5b")
SMALL = ("opt-125m", "llama-68m")
DRAFT = "opt-125m"
SIMULATED = ("llama-68m", "opt-125m")  # what the CPU runs against the simulated counter (tests)


def fits(gpu: GPU, model: str, dtypes: Dtypes, batch: int, tokens: int) -> bool:
    """Whether a model's weights and KV cache for batch x tokens fit in 90 % of the GPU's memory (the engine's
    workspace and the allocator take the rest)."""
    scn = Scenario(target=load_model(model), params=make_params(gpu), dtypes=dtypes, batch=batch, prompt=tokens, gen=1)
    return scn.memory_needed(0) <= 0.9 * gpu.capacity_bytes


def kv_bound(gpu: GPU, model: str, dtypes: Dtypes, times: float, new_tokens: int = 1) -> tuple[int, int] | None:
    """The smallest (batch, context) of KV_SHAPES whose KV cache holds `times` the model's weights, within the
    model's positions, and that fits the GPU: a decode step there streams mostly cache, so its energy tells e_kv from
    e_dram."""
    m = load_model(model)
    weights = weight_bytes(m, dtypes)
    for b, c in KV_SHAPES:
        if kv_cache_bytes(m, dtypes, b, c) >= times * weights and c + new_tokens <= m.max_context:
            return (b, c) if fits(gpu, model, dtypes, b, c + new_tokens) else None
    return None


# a KV-bound step the model puts above this fraction of the board's power limit is not taken: at the limit a step's
# energy is the limit times its time (shivam.sim.roofline.power_cap_factor), which no energy per byte moves
LIMIT_HEADROOM = 0.95


def below_power_limit(points: list[Point], gpu: GPU, engine: str) -> list[bool] | None:
    """Per point, whether its predicted power before the board's limit holds it stays below LIMIT_HEADROOM of the
    limit, under the bundled calibration of this GPU and engine; None where there is none to tell (datasheet figures
    put the H200 reference engine's KV-bound decode of a 7B model at batch 128 at 320-470 W; it draws 700 W). A
    faster engine draws more: that step runs at the H200's limit on the reference engine, not on the graph engine."""
    if not points or gpu.power_limit_w is None:
        return [True] * len(points)
    path = bundled_calibration(gpu.id, load_engine(engine).engine)
    if path is None:
        return None
    params = make_params(gpu, engine, load_calibration(path), str(path))
    cost = PointSet(points, params).uncapped(params)
    power = (np.asarray(cost.energy_j) - np.asarray(cost.e_idle)) / np.asarray(cost.time_s)
    return [bool(w < LIMIT_HEADROOM * gpu.power_limit_w) for w in np.atleast_1d(power)]


def engine_priors(engine: str) -> dict[str, float]:
    """What `shivam calibrate` holds for an engine: PRIORS and the engine profile's own calibration_priors. Refuses an
    engine that does not run decode steps (the calibration suite's points)."""
    prof = load_engine(engine)
    if prof.engine not in DECODER_ENGINES:
        raise ShivamError(
            f"shivam calibrate measures decode and verify steps, which the {prof.engine} engine does not run: use "
            f"--engine {' or '.join(DECODER_ENGINES)} (the hf engines are fitted from `shivam validate --suite hf`)"
        )
    own = prof.calibration_priors.values if prof.calibration_priors else {}
    unknown = sorted(set(own) - set(TIME_PARAMS) - set(ENERGY_PARAMS))
    if unknown:
        raise ShivamError(f"engine {prof.engine}: calibration_priors names no fitted parameter: {', '.join(unknown)}")
    return {**PRIORS, **own}


def gpu_priors(engine: str, gpu_id: str | None) -> dict[str, float]:
    """engine_priors, where the GPU model has a bundled calibration of the engine with the profile's per_gpu_model
    priors taken from it: facts of the kernel on that GPU model (each resident split-KV program's power), which one
    card's suite cannot separate from its static power but several cards' suites fitted together can (the H100
    SXM's five: 0.192 +- 0.011 W per program, against the H200's 0.206)."""
    priors = engine_priors(engine)
    profile = load_engine(engine)
    own = profile.calibration_priors
    path = bundled_calibration(gpu_id, profile.engine) if gpu_id and own else None
    if path is None:
        return priors
    fitted = load_calibration(path).parameters
    return {**priors, **{k: float(fitted[k]) for k in own.per_gpu_model if isinstance(fitted.get(k), (int, float))}}


def calibration_engine(gpu: GPU) -> str:
    """The engine `shivam calibrate` measures when none is named: the reference engine (split-KV attention, the
    engine `predict` takes where a calibration has it) on a GPU with bf16 whose thread blocks may take the shared
    memory of its widest tiles (the ref profile's max_shared_bytes: Hopper); the graph engine (PyTorch and SDPA
    alone, no kernel of its own) elsewhere, where some of the reference engine's launches would not fit (an A100's
    163 KB, Ada's 99 KB) or its bf16 tiles not run (a T4), or where the GPU file does not say."""
    need = load_engine("ref").kernels.masked_attention.split_kv.max_shared_bytes or 0
    room = (gpu.shared_memory_per_block_kb or 0) * 1024
    return "ref" if "bf16" in gpu.peak_tflops and room >= need else "graph"


def _on_engine(points: list[Point], engine: str) -> list[Point]:
    """The suite's points on `engine` (a name or a profile file): stage I's plain GEMMs run on graph only."""
    return on_engine(points, load_engine(engine).engine)


def calibration_points(gpu: GPU, quick: bool = True, simulated: bool = False, engine: str = "graph") -> list[Point]:
    """The calibration suite for this GPU: models that fit its memory, in its 16-bit dtype (fp16 without bf16).

    Each fitted parameter has points that move it: bytes (the largest model's decode), FLOPs and their overlap with
    bytes (verify widths 5-129, batch 8-32), KV bytes (contexts 128-4096), per-kernel and per-step costs (models of
    2 to 32 layers), the masked attention kernel (several new tokens, over 512 and 4,096 cached tokens, and at batch
    16: its rate per block and its fixed time per block), the KV cache's energy per byte (decode over caches larger
    than the weights, kv_bound), PCIe (stage I). The rest are held at priors."""
    dt = gpu.default_dtype()
    dtypes = Dtypes.of(dt)
    kw = {"weights_dtype": dt, "kv_dtype": dt}
    suite = "calibrate-quick" if quick else "calibrate"

    def step(model, n=1, c=512, b=1):
        return Point(suite=suite, kind="step", model=model, new_tokens=n, context=c, batch=b, **kw)

    if simulated:
        small, tiny = SIMULATED[1], SIMULATED[0]
        pts = [step(tiny, n) for n in (1, 5, 17)] + [step(tiny, c=c) for c in (64, 256)] + [step(tiny, b=4)]
        return _on_engine(pts + [step(small), step(small, 5)], engine)
    # the anchor's largest shapes: batch 32 at context 512, one sequence at 4,096 tokens
    large = next((m for m in LARGE if fits(gpu, m, dtypes, 32, 513) and fits(gpu, m, dtypes, 1, 4097)), None)
    if large is None:
        raise ShivamError(
            f"{gpu.name}: no model of the calibration suite fits its {gpu.memory.capacity_gb:g} GB "
            f"(the smallest, {LARGE[-1]}, needs more at batch 32); use a larger GPU"
        )
    mid = [m for m in MID if m != large][: 1 if quick else 2]
    pts = [step(large, n) for n in (1, 5, 33, 129)] + [step(large, c=c) for c in (128, 4096)] + [step(large, 5, 4096)]
    pts += [step(large, b=b) for b in (8, 32)]
    pts += [p for m in mid for p in (step(m), step(m, 5), step(m, 5, b=16))] + [step(m) for m in SMALL]
    # KV-bound steps (their times: streaming the cache, and the anchor's wide verify over it): the anchor at 1.25x
    # and 3x its weights in cache, one verify among them, then the mid and small models (on a GPU too small for the
    # anchor's), KV_POINTS of them; and more of the mid and small models' until KV_POINTS of them are predicted
    # below the board's power limit (fewer and the fit holds e_kv: at the limit energy per byte moves nothing)
    kv = [(large, 1, 1.25), (large, 5, 1.25), (large, 1, 3.0)]
    kv += [(m, n, t) for n, t in ((1, 1.5), (1, 4.0), (5, 1.5)) for m in (*mid, SMALL[0])]
    candidates: list[Point] = []
    for model, n, times in kv:
        shape = kv_bound(gpu, model, dtypes, times, n)
        p = None if shape is None else step(model, n, c=shape[1], b=shape[0])
        candidates += [p] if p is not None and p not in candidates else []
    candidates = _on_engine(candidates, engine)
    below = below_power_limit(candidates, gpu, engine)
    if below is None:  # no calibration to tell which run at the limit: every candidate (at most nine)
        chosen = candidates
    else:
        chosen, uncapped = candidates[:KV_POINTS], sum(below[:KV_POINTS])
        for p, ok in zip(candidates[KV_POINTS:], below[KV_POINTS:]):
            if ok and uncapped < KV_POINTS:
                chosen, uncapped = [*chosen, p], uncapped + 1
    pts += chosen
    spec = [
        Point(suite=suite, kind="spec", model=large, draft=DRAFT, k=k, alpha=0.0 if k == 0 else 0.8, **kw)
        for k in (0, 4)
    ]
    stage1 = [
        Point(suite=suite, kind="stage1", size=4096, tokens=4096, reuse=r, reload=rl, weights_dtype=dt)
        for r in (1, 10)
        for rl in (True, False)
    ]
    if not quick:
        others = [
            m
            for m in ("llama-2-7b", "opt-6.7b", "gemma-2b", "qwen2-0.5b", "phi-3-mini")
            if m != large and fits(gpu, m, dtypes, 16, 1024)
        ]
        pts += [step(m, n) for m in others for n in (1, 9, 33)] + [step(m, b=16) for m in others]
        pts += [step(large, c=c) for c in (1024, 2048)] + [step(large, b=b) for b in (2, 4, 16)]
        spec += [Point(suite=suite, kind="spec", model=large, draft=DRAFT, k=k, alpha=0.8, **kw) for k in (2, 6)]
    return _on_engine(pts + spec + stage1, engine)


def _gpu_of(meter, gpu: str | None) -> GPU:
    if gpu is not None:
        return load_gpu(gpu)
    if meter.gpu_id is None:
        raise ShivamError(
            f"{meter.env.get('gpu', 'this GPU')} is not a bundled GPU: write a GPU file in the bundled "
            f"schema (`shivam gpus --schema`) and pass it as --gpu FILE"
        )
    return load_gpu(meter.gpu_id)


def _card(env: dict, gpu_name: str) -> Card:
    """The card an environment record (the meter's, or a results file's) names; the GPU's name where it names none."""
    return Card(
        uuid=env.get("gpu_uuid") or "simulated",
        name=env.get("gpu") or gpu_name,
        power_limit_w=env.get("power_limit_w"),
        max_sm_clock_mhz=env.get("max_sm_clock_mhz"),
        driver=env.get("driver"),
    )


MAX_INSTALLED_ERROR = 0.10  # a fit worse than this in median is not installed where predict would pick it up


def _refuse_simulated_install(simulate_meter: bool, output: str | None) -> None:
    if simulate_meter and output is None:
        raise ShivamError(
            "--simulate-meter measures no real GPU: give -o FILE, so that nothing is installed where "
            "predict would use it"
        )


def _engine_suffix(engine: str) -> str:
    """The measurements file's mark of a non-default engine."""
    name = load_engine(engine).engine
    return "" if name == "graph" else f"-{name}"


def _suite_key(points: list[Point]) -> str:
    """A short key of the suite's points: a run resumes the file of the same suite only (a file of an older suite
    may hold points this one no longer asks for, or that the validator now refuses)."""
    return hashlib.sha1("".join(sorted(p.id for p in points)).encode()).hexdigest()[:8]


def _card_key(card: Card) -> str:
    """A short, file-name-safe key of a card: the first 8 hex digits of its NVML UUID."""
    key = card.uuid.removeprefix("GPU-")[:8]
    return "".join(ch for ch in key if ch.isalnum()) or "card"


def _measure(points: list[Point], meter, folder: Path, name: str, repeats: int, min_periods: int, extensions: int):
    from shivam.validate.runner import Workbench, run_campaign

    results = results_file(folder, name, meter)
    run_campaign(
        points,
        results,
        meter.counter,
        Workbench(meter.device),
        meter.gpu_id,
        meter.snapshot,
        repeats,
        min_periods,
        extensions=extensions,
    )
    failed = [r for r in results.records() if r.get("record") == "point" and r.get("status") != "ok"]
    return results.path, failed


def _installed_path(gpu: str, engine: str, card: Card) -> Path:
    return user_calibrations_dir() / f"{gpu}-{engine}-{_card_key(card)}.json"


def _install(cal: Calibration, output: str | None, card: Card) -> Path:
    path = Path(output) if output else _installed_path(cal.gpu, cal.engine, card)
    write_text(path, cal.model_dump_json(indent=1) + "\n", "-o")
    return path


CARD_NOTE = "shivam calibrate --card"  # how a --card calibration's note begins


def _refuse_replacing_own_fit(gpu: str, engine: str, card: Card, output: str | None) -> None:
    """--card installs where this card's own calibration (`shivam calibrate`) would be: refuse, before measuring,
    to replace a fit of this card's own measurements with its GPU model's calibration scaled."""
    path = _installed_path(gpu, engine, card)
    if output is None and path.is_file() and not load_calibration(path).note.startswith(CARD_NOTE):
        raise ShivamError(
            f"this card has its own {engine} calibration ({path}), which --card would replace with the GPU model's "
            f"scaled: remove it first, or pass -o FILE"
        )


def calibrate(
    quick: bool = True,
    output: str | None = None,
    gpu: str | None = None,
    gpu_index: int = 0,
    engine: str | None = None,
    simulate_meter: bool = False,
    repeats: int = 3,
    min_periods: int = 20,
    extensions: int = 1,
    command: str = "",
) -> dict:
    """Measure this GPU, fit, install. Returns what was done: the files, the fitted and held parameters, the
    residuals and the 90 % band. engine None: calibration_engine's choice for this GPU."""

    _refuse_simulated_install(simulate_meter, output)
    # before anything is measured: an engine that cannot be calibrated is refused
    if engine is not None:
        engine_priors(engine)
    meter = open_meter(gpu_index, simulate_meter, command)
    spec = _gpu_of(meter, gpu)
    engine = engine or calibration_engine(spec)
    priors = gpu_priors(engine, spec.id)
    card = _card(meter.env, spec.name)
    points = calibration_points(spec, quick, simulated=simulate_meter, engine=engine)
    folder = user_calibrations_dir().parent / "measurements"
    name = f"{spec.id}-{_card_key(card)}-{'quick' if quick else 'full'}{_engine_suffix(engine)}-{_suite_key(points)}"
    path, failed = _measure(points, meter, folder, name, repeats, min_periods, extensions)
    if failed:
        raise ShivamError(
            f"{len(failed)} calibration points failed ({failed[0]['label']}: "
            f"{str(failed[0].get('error', ''))[:80]}); the measurements are kept in {path}: fix the "
            f"cause and run the same command again to resume"
        )
    how = f"shivam calibrate{' --quick' * quick} on {card.name} {card.uuid}"
    return _fit_and_install(path, engine, gpu or spec.id, priors, card, quick, output, how)


def refit(measurements: str, output: str | None = None, gpu: str | None = None) -> dict:
    """Fit a calibration again from the measurements `shivam calibrate` kept (its data directory's measurements
    folder, or a committed copy), with this version's fit and no GPU: a calibration written by an older fit, or a run
    that stopped at a failed point on a card no longer at hand. Points that failed are left out and named."""
    from shivam.calibrate.results import read_records

    path = Path(measurements)
    if not path.is_file():
        raise ShivamError(f"{measurements}: no such file; give the measurements file `shivam calibrate` printed")
    records = read_records(path)
    env = next((r for r in records if r.get("record") == "environment"), None)
    points = [r for r in records if r.get("record") == "point" and isinstance(r.get("point"), dict)]
    suites = {r["point"].get("suite") for r in points}
    if env is None or not points or not suites <= {"calibrate", "calibrate-quick"}:
        raise ShivamError(
            f"{measurements}: not the measurements of `shivam calibrate` (calibrate or calibrate-quick points after an "
            f"environment record); fit other results with `shivam fit`"
        )
    engines = {r["point"].get("engine", "graph") for r in points}
    if len(engines) != 1:
        raise ShivamError(f"{measurements}: points of several engines ({', '.join(sorted(engines))}); one per file")
    engine = engines.pop()
    if env.get("simulated_meter") and (output is None or gpu is None):
        raise ShivamError(
            f"{measurements}: measured by the simulated counter, no real GPU: give --gpu (the GPU it stood in for) "
            f"and -o FILE, so that nothing is installed where predict would use it"
        )
    card = _card(env, env.get("gpu") or load_gpu(gpu).name)  # a simulated run names no GPU: --gpu is given
    failed = [r.get("label", "?") for r in points if r.get("status") != "ok"]
    if output is None and (failed or card.uuid not in local_card_uuids()):
        # installed, it would be what predict takes for every card of this GPU model here
        why = f"{len(failed)} of its points failed" if failed else f"its card {card.uuid} is not on this machine"
        raise ShivamError(
            f"{measurements}: {why}, so the refit is not installed where predict would take it; pass -o FILE"
        )
    how = f"shivam calibrate --refit of {path.name} ({card.name} {card.uuid}"
    how += f"; {len(failed)} failed point(s) left out: {', '.join(failed)})" if failed else ")"
    quick = suites == {"calibrate-quick"}
    # gpu None: the GPU the file's environment record names (shivam.calibrate.workflow.results_of_one_gpu)
    gpu_id = gpu or (gpu_id_for(env["gpu"]) if isinstance(env.get("gpu"), str) else None)
    out = _fit_and_install(path, engine, gpu, gpu_priors(engine, gpu_id), card, quick, output, how)
    return {**out, "failed": failed}


def _fit_and_install(path, engine: str, gpu: str | None, priors: dict, card: Card, quick: bool, output, how) -> dict:
    outcome = fit_results([str(path)], engine, gpu, priors, card_factors=False, strict="hold", band=True)
    cal = outcome.calibration
    cal.card, cal.created = card, datetime.datetime.now(datetime.timezone.utc).isoformat()
    if quick:  # a few models' cross-validation says little of the points users ask about (calibrate.band)
        cal.band = quick_band(cal.band, load_engine(engine).quick_calibration_band)
    held = {**priors, **outcome.result.held}
    cal.note = f"{how}; held at priors: {', '.join(sorted(held))}"
    worst = max(outcome.energy_errors["median"], outcome.time_errors["median"])
    if worst > MAX_INSTALLED_ERROR and output is None:
        raise ShivamError(
            f"the fit leaves {100 * worst:.0f} % median error: these measurements do not follow the "
            f"model, so the calibration is not installed (measurements kept in {path}); pass -o FILE "
            f"to write it anyway"
        )
    installed = _install(cal, output, card)
    return {
        "calibration": str(installed),
        "engine": load_engine(engine).engine,
        "installed": output is None,
        "measurements": str(path),
        "points": outcome.points,
        "gpu": cal.gpu,
        "card": card.model_dump(),
        "fitted": {n: v for n, v in outcome.result.values.items() if n not in held},
        "held": held,
        "energy_errors": outcome.energy_errors,
        "time_errors": outcome.time_errors,
        "band": cal.band.model_dump() if cal.band else None,
    }


# --- --card: this card's energy scale against its GPU model's calibration -------------------------------------------
# every energy coefficient a card's scale multiplies: the fit's (compute_scale is in j_per_flop, scaled apart) and the
# fallback kernels' measured power
ENERGY_COEFFICIENTS = (*(n for n in ENERGY_PARAMS if n != "compute_scale"), "misaligned_power_w")


def card_points(gpu: GPU, simulated: bool = False, engine: str = "graph") -> list[Point]:
    """Two decode steps of the largest model that fits, batch 1 and 8: enough to scale energy, little to wait for."""
    dt = gpu.default_dtype()
    kw = {"weights_dtype": dt, "kv_dtype": dt}
    if simulated:
        model = SIMULATED[0]
    else:
        model = next((m for m in LARGE if fits(gpu, m, Dtypes.of(dt), 8, 1024)), None)
        if model is None:
            raise ShivamError(f"{gpu.name}: no model of the calibration suite fits its memory; use a larger GPU")
    return _on_engine([Point(suite="card", kind="step", model=model, batch=b, **kw) for b in (1, 8)], engine)


def calibrate_card(
    output: str | None = None,
    gpu: str | None = None,
    gpu_index: int = 0,
    engine: str | None = None,
    simulate_meter: bool = False,
    agree: float = 0.015,
    runs: int = 3,
    min_periods: int = 20,
    command: str = "",
) -> dict:
    """Measure this card's energy scale f against the calibration of its GPU model (two runs that agree within
    `agree`, at most `runs`), and install that calibration with every energy coefficient times f, keyed by this
    card's UUID, power limit and clocks. engine None: the engine `predict` takes on this GPU (specs.default_engine)."""
    from rich.progress import Progress

    from shivam.validate.runner import Workbench, measure_steady, min_calls_for

    _refuse_simulated_install(simulate_meter, output)
    if engine is not None:
        engine_priors(engine)  # refuses an engine that runs no decode steps
    meter = open_meter(gpu_index, simulate_meter, command)
    spec = _gpu_of(meter, gpu)
    if engine is None:
        engine = default_engine(spec.id)
        engine_priors(engine)
    card = _card(meter.env, spec.name)
    name = load_engine(engine).engine
    _refuse_replacing_own_fit(spec.id, name, card, output)
    # the GPU model's calibration: the bundled one, else an installed one that is not of a single card
    model_path = bundled_calibration(spec.id, name) or next(
        (path for path, cal in user_calibrations(spec.id, name) if cal.card is None), None
    )
    if model_path is None:
        raise ShivamError(f"{spec.id} has no calibration of its GPU model to scale: run `shivam calibrate` instead")
    params = resolve_params(spec, engine, str(model_path))
    points = card_points(spec, simulated=simulate_meter, engine=engine)
    bench = Workbench(meter.device)
    calls = [bench.call_for(p) for p in points]
    predicted = sum(float(point_cost(p, params)[0].energy_j) for p in points)
    scales = []

    def settled() -> bool:  # the last two runs agree
        return len(scales) >= 2 and abs(scales[-1] / scales[-2] - 1) <= agree

    with Progress(transient=True) as bar:  # at most a warm-up and `runs` runs of every point
        task = bar.add_task("warm-up", total=1 + runs * len(points))
        measure_steady(meter.counter, calls[0], 1, min_periods, min_calls_for(points[0]), 1.0, 0)
        bar.advance(task)
        for run in range(runs):
            measured = 0.0
            for p, call in zip(points, calls):
                bar.update(task, description=f"run {run + 1}: {p.label()}")
                steady = measure_steady(meter.counter, call, 2, min_periods, min_calls_for(p), 1.0, 0)
                measured += steady["energy_per_call_j"]
                bar.advance(task)
            scales.append(measured / predicted)
            if settled():
                break
    if not settled():
        raise ShivamError(
            f"the card's energy scale did not settle: runs gave {', '.join(f'{s:.3f}' for s in scales)}"
            f" (more than {100 * agree:.1f} % apart); let the GPU idle and run again"
        )
    f = math.sqrt(scales[-1] * scales[-2])
    base = load_calibration(model_path)
    values = dict(base.parameters)
    for coefficient in ENERGY_COEFFICIENTS:
        values[coefficient] = f * float(values.get(coefficient, getattr(params, coefficient)))
    values["j_per_flop"] = {d: f * v for d, v in params.j_per_flop.items()}
    band = base.band
    uncertainty = {n: (f * v if n in ENERGY_COEFFICIENTS else v) for n, v in base.uncertainty.items()}
    cal = Calibration(
        gpu=spec.id,
        engine=params.engine,
        parameters=values,
        uncertainty=uncertainty,
        fitted_from=base.fitted_from,
        recipe=base.recipe,
        band=band,
        card=card,
        created=datetime.datetime.now(datetime.timezone.utc).isoformat(),
        note=(
            f"{CARD_NOTE} on {card.name} {card.uuid}: {model_path.name} with its energy "
            f"coefficients x {f:.4f} (runs {', '.join(f'{s:.4f}' for s in scales)})"
        ),
    )
    installed = _install(cal, output, card)
    return {
        "calibration": str(installed),
        "engine": params.engine,
        "scale": f,
        "runs": scales,
        "base": str(model_path),
        "gpu": spec.id,
        "installed": output is None,
        "card": card.model_dump(),
        "points": [p.label() for p in points],
    }
