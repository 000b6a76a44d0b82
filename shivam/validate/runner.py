"""A measurement campaign: run a suite's points, append one JSON record per point, resume where it stopped.

Results file (JSONL, append-only): an "environment" record at each start, "idle" records, then one "point" record
per point (status "ok" or "failed"), each flushed and fsynced as soon as it is complete. On restart, every point whose
id is already recorded is skipped, so an interrupted campaign completes with every point recorded exactly once.
"""

from __future__ import annotations

import math
import statistics
import time
import traceback

from shivam.calibrate.points import Point, predict_point
from shivam.calibrate.results import ResultsFile
from shivam.errors import ShivamError
from shivam.specs import load_gpu, make_params


class ContextLost(ShivamError):
    """The CUDA context died (a device-side assert): nothing more can run in this process."""


class Workbench:
    """Builds engines for points and keeps the expensive ones (decoders with their weights) between points."""

    def __init__(self, device: str, weights: str | None = None):
        from shivam.validate import engines

        self.engines, self.device, self.weights = engines, device, weights
        self._decoders: dict = {}
        self._hf: dict = {}

    def decoder(self, model: str, batch: int, need_context: int, p: Point):
        from shivam.specs.model import load_model

        key = (p.engine, model, batch, p.weights_dtype, p.kv_dtype)
        dec = self._decoders.get(key)
        if dec is not None and dec.max_context >= need_context:
            return dec
        # no reference to the decoder being replaced may outlive release(): its weights and cache would stay resident
        # while the new one is built (two 7B decoders' caches do not fit an 80 GB card)
        dec = None
        self.release()
        dec = self.decoder_class(p.engine)(
            load_model(model), batch, max(need_context, 1024), p.weights_dtype, p.kv_dtype, self.device, p.seed
        )
        self._decoders[key] = dec
        return dec

    def decoder_class(self, engine: str):
        """The decoder that runs an engine's step and spec points: the graph engine's, or the reference engine's."""
        if engine == "ref":
            from shivam.validate.ref import RefDecoder

            return RefDecoder
        if engine == "graph":
            return self.engines.Decoder
        raise ShivamError(f"the {engine} engine runs generate points only (step and spec points run graph or ref)")

    def release(self):
        self._decoders.clear()
        self._hf.clear()
        import gc

        gc.collect()
        if self.device.startswith("cuda"):
            import torch

            try:
                torch.cuda.empty_cache()
            except Exception as exc:  # noqa: BLE001 - a device-side assert kills the CUDA context for good
                raise ContextLost(
                    f"the CUDA context was lost ({str(exc).splitlines()[0]}); the results so far are "
                    f"saved: run the same command again to resume"
                ) from None

    def call_for(self, p: Point):
        e = self.engines
        if p.kind == "stage1":
            return e.stage1_call(p.size, p.tokens, p.reuse, p.reload, p.weights_dtype, self.device)
        if p.kind == "generate":
            if p.engine not in ("hf", "hf-static"):
                raise ShivamError(f"generate points run the hf or hf-static engine, not {p.engine}")
            key = (p.model, p.weights_dtype, p.engine)
            if key not in self._hf:
                self.release()
                self._hf[key] = e.hf_model(p.model, p.weights_dtype, self.device, self.weights)
            draft = e.hf_model(p.draft, p.weights_dtype, self.device) if p.draft else None
            static = p.engine == "hf-static"
            return e.generate_call(self._hf[key], p.prompt, p.gen, p.batch, draft, p.k, p.seed, static)
        if p.kind == "step":
            dec = self.decoder(p.model, p.batch, p.context + p.new_tokens, p)
            return e.step_call(dec, p.new_tokens, p.context, p.seed)
        if p.kind == "prefill":  # the whole prompt in one forward at context 0, causal, then the host readback
            dec = self.decoder(p.model, p.batch, p.prompt, p)
            return e.step_call(dec, p.prompt, 0, p.seed)
        # spec: the target and the draft are both resident; a ragged batch runs each sequence at its own context
        context = max(p.contexts) if p.contexts else p.context
        target = self.decoder(p.model, p.batch, context + p.k + 1, p)
        key = (p.engine, p.draft, p.batch, p.weights_dtype, p.kv_dtype)
        if key not in self._decoders or self._decoders[key].max_context < p.context + p.k + 1:
            from shivam.specs.model import load_model

            self._decoders.pop(key, None)
            self._decoders[key] = self.decoder_class(p.engine)(
                load_model(p.draft),
                p.batch,
                max(context + p.k + 1, 1024),
                p.weights_dtype,
                p.kv_dtype,
                self.device,
                p.seed + 1,
            )
        return e.spec_call(target, self._decoders[key], p.k, p.alpha, p.context, p.seed, p.contexts)


def phase_summary(phases: list[dict]) -> dict:
    """The phases of a point's generate() calls (engines.call_phases; every call of the point, warm-up included):
    each phase's median and range over the calls, in seconds. A host-bound call's set-up and loop move apart when
    the host's speed moves, and the set-up (cache allocation, compile guards) is a cost per call, not per token."""
    out: dict = {"calls": len(phases)}
    for name in ("setup_s", "prefill_s", "step_s", "finish_s"):
        values = [ph[name] for ph in phases if ph[name] == ph[name]]  # a one-token call has no steps (nan)
        if values:
            out[name] = statistics.median(values)
            out[name.replace("_s", "_range_s")] = [min(values), max(values)]
    out["steps"] = phases[-1]["steps"]
    return out


def min_calls_for(p: Point) -> int:
    """Calls per window at least. A generate() call lasts 0.1-1 s, so 10 of them already span 1-10 s (and the 20
    counter periods still bound the window from below); 20 for everything else."""
    return 10 if p.kind == "generate" else 20


def _spread(summary: dict) -> float:
    return max(summary["energy_spread"], summary["time_spread"])


def measure_steady(
    counter,
    call,
    repeats: int,
    min_periods: int,
    min_calls: int,
    max_spread: float = 0.03,
    extensions: int = 1,
    grow: float = 2.5,
) -> dict:
    """Measure; while the windows disagree by more than `max_spread` in energy or in time per call, measure again with
    windows `grow` times longer (at most `extensions` times): jitter of the host averages out over longer windows.
    The last attempt is the result; the earlier ones are kept under "attempts" (without their power traces), and a
    point still above `max_spread` is flagged (and said to be the host's when the host speed probe moved too).
    Nothing is dropped or chosen: every attempt is recorded, the longest one is reported."""
    from shivam.validate.meter import measure

    attempts = []
    for i in range(extensions + 1):
        f = grow**i
        summary = measure(
            counter, call, repeats=repeats, min_periods=math.ceil(min_periods * f), min_calls=math.ceil(min_calls * f)
        ).summary()
        summary["min_periods"] = math.ceil(min_periods * f)
        if _spread(summary) <= max_spread or i == extensions:
            break
        attempts.append({k: v for k, v in summary.items() if k not in ("power_trace", "power_traces")})
    if attempts:
        summary["attempts"] = attempts
    if _spread(summary) > max_spread:
        flags = {f"spread above {100 * max_spread:.0f} %"}
        if summary.get("host_probe_spread", 0.0) > max_spread:  # the host's CPU itself changed speed
            flags.add(f"host speed varied {100 * summary['host_probe_spread']:.0f} % between windows")
        summary["flags"] = sorted(set(summary["flags"]) | flags)
    return summary


def run_campaign(
    points: list[Point],
    results: ResultsFile,
    counter,
    bench: Workbench,
    gpu_id: str | None,
    snapshot=lambda: {},
    repeats: int = 3,
    min_periods: int = 20,
    idle_w: dict | None = None,
    progress: bool = True,
    codecarbon_gpu: int | None | bool = False,
    max_spread: float = 0.03,
    extensions: int = 1,
) -> list[dict]:
    """Measure every point not yet in `results`; returns the records written this run."""

    done = results.done_ids()
    todo = [p for p in points if p.id not in done]
    params = {eng: make_params(load_gpu(gpu_id), eng) for eng in {p.engine for p in points}} if gpu_id else None
    written = []
    bar = None
    if progress:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            TextColumn("{task.completed}/{task.total}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            transient=False,
        )
        bar.start()
        task = bar.add_task("measuring", total=len(points), completed=len(points) - len(todo))
    try:
        for p in todo:
            if bar:
                bar.update(task, description=p.label()[:48])
            record = {
                "record": "point",
                "id": p.id,
                "point": p.model_dump(),
                "label": p.label(),
                "started": time.time(),
                "before": snapshot(),
            }
            # the last point's call holds its decoder (weights, KV cache, graphs): drop it before call_for releases
            # the decoders and builds this point's, or both are resident at once
            call = None
            try:
                call = bench.call_for(p)
                measured = measure_steady(counter, call, repeats, min_periods, min_calls_for(p), max_spread, extensions)
                record.update(status="ok", measured=measured, after=snapshot())
                stats = getattr(call, "stats", None)
                if stats and stats["calls"]:
                    record["measured"]["iterations_per_call"] = stats["iterations"] / stats["calls"]
                if stats and stats.get("phases"):
                    record["measured"]["generate_phases"] = phase_summary(stats["phases"])
                if codecarbon_gpu is not False:
                    from shivam.validate.codecarbon_check import codecarbon_window

                    record["codecarbon"] = codecarbon_window(counter, call, min_periods, codecarbon_gpu)
                if idle_w:
                    s = record["measured"]
                    s["energy_per_call_above_idle_j"] = (
                        s["energy_per_call_j"] - idle_w["with_context_w"] * s["time_per_call_s"]
                    )
            except ContextLost:
                raise
            except Exception as exc:  # noqa: BLE001 - a failing point (OOM, say) is recorded and the campaign goes on
                record.update(
                    status="failed",
                    error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500],
                    traceback=traceback.format_exc(limit=3)[-2000:],
                )
                bench.release()
            if params:
                try:
                    record["predicted"] = predict_point(p, params[p.engine])
                except ShivamError as exc:
                    record["predicted"] = {"error": str(exc)}
            record["ended"] = time.time()
            results.append(record)
            written.append(record)
            if bar:
                bar.advance(task)
    finally:
        if bar:
            bar.stop()
    return written
