"""The results-file format, in one place: what `shivam validate` appends and what fit, check and report read.

A results file is JSONL, append-only: an "environment" record at each start of a campaign, "idle" records, then one
"point" record per measured point (status "ok" or "failed"), each flushed and fsynced as soon as it is complete. A
killed run leaves at most one half-written last line, which readers skip and the next append removes.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from shivam.calibrate.points import Point
from shivam.errors import ShivamError
from shivam.specs import gpu_id_for
from shivam.userfiles import read_text, validation_message

_FIX = "give JSONL files written by `shivam validate`"


def read_records(path: str | Path) -> list[dict]:
    """Every record of a results file (read-only: a half-written last line is skipped, not repaired)."""
    out = []
    for line in read_text(path, "results file", _FIX).splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # blank, the half-written line of a killed run, or not a record at all
        if isinstance(record, dict):
            out.append(record)
    return out


class ResultsFile:
    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._repair()

    def _repair(self):
        """Drop a half-written last line (a kill during a write) so the next append starts on a fresh line."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            self.path.write_bytes(data[: data.rfind(b"\n") + 1])

    def records(self) -> list[dict]:
        return read_records(self.path) if self.path.exists() else []

    def done_ids(self) -> set[str]:
        return {r["id"] for r in self.records() if r.get("record") == "point"}

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, default=float) + "\n")
            f.flush()
            os.fsync(f.fileno())


@dataclass
class Measured:
    point: Point
    time_s: float  # per call
    energy_j: float  # per call
    tokens: float  # per call, as measured (drawn acceptance for spec points)
    group: str  # for leave-one-model-out
    card: str = ""  # the GPU card (NVML UUID) or, where none was recorded, the campaign that measured the point
    # relative spread of the energy (time) per call over the point's windows: 0 where not recorded (older files),
    # None where the meter could not measure it (a window's median of 0)
    energy_spread: float | None = 0.0
    time_spread: float | None = 0.0
    source: str = ""  # the results file it was read from

    @classmethod
    def from_record(cls, r: dict, card: str = "", source: str = "results file") -> Measured:
        try:
            p = Point.model_validate(r.get("point"))
        except ValidationError as exc:
            raise ShivamError(validation_message(exc, f"{source}: point record {r.get('id', '?')}", fix=_FIX)) from None
        m = r.get("measured")
        keys = ("time_per_call_s", "energy_per_call_j")

        def number(x) -> bool:
            return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

        tokens = m.get("tokens_per_call", 0.0) if isinstance(m, dict) else None
        if (
            not isinstance(m, dict)
            or not all(number(m.get(k)) and m[k] > 0 for k in keys)
            or not (number(tokens) and tokens >= 0)
        ):
            raise ShivamError(
                f"{source}: point record {r.get('id', '?')} has no finite positive measured time_per_call_s "
                f"and energy_per_call_j (and tokens_per_call, if any, a number >= 0); {_FIX}"
            )
        try:
            p.check()
        except ShivamError as exc:
            raise ShivamError(f"{source}: point record {r.get('id', '?')}: {exc}; {_FIX}") from None
        group = p.model if p.kind != "stage1" else "stage1"
        return cls(
            p,
            float(m["time_per_call_s"]),
            float(m["energy_per_call_j"]),
            float(m.get("tokens_per_call", 0.0)),
            group,
            card,
            _spread(m.get("energy_spread")),
            _spread(m.get("time_spread")),
            source,
        )


def _spread(x) -> float | None:
    if x is None:
        return 0.0
    return float(x) if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x >= 0 else None


def load_records(paths: list[str]) -> list[dict]:
    """Every record of the given results files, in order."""
    return [r for path in paths for r in read_records(path)]


def load_results(paths: list[str], engine: str | None = None) -> tuple[list[Measured], str | None]:
    """Measured points (status ok) from JSONL files, and the GPU id their environment records name."""
    out, gpu = [], None
    for path in paths:
        card = f"{Path(path).name} (no environment record)"
        for r in load_records([path]):
            if r.get("record") == "environment":
                # one environment record per campaign (a resumed run adds one): the points after it ran on its card
                card = r.get("gpu_uuid") or f"{Path(path).name} campaign of {str(r.get('date', '?'))[:16]}"
                if isinstance(r.get("gpu"), str):
                    this = gpu_id_for(r["gpu"])
                    if gpu is not None and this is not None and this != gpu:
                        raise ShivamError(
                            f"{path}: measured on {this}, the other results on {gpu}; check or fit the "
                            f"results of one GPU at a time"
                        )
                    gpu = gpu or this
            if r.get("record") == "point" and r.get("status") == "ok":
                m = Measured.from_record(r, card, str(path))
                if engine is None or m.point.engine == engine:
                    out.append(m)
    if not out:
        raise ShivamError(
            f"no measured points{' of the ' + engine + ' engine' if engine else ''} in {', '.join(paths)}"
        )
    return out, gpu


def printed_measurements(log: str | Path, probe: str | Path, card: str, engine: str | None = None) -> list[Measured]:
    """The points of a probe file as `shivam validate` printed them (its table: point, ms and J per call, the median
    of windows), for a run whose results file was lost: each row matched to its probe point by label; failed points
    (FAILED in the table) are left out, as load_results leaves out failed records. The table rounds to 4-5
    significant figures and has no tokens per call, spreads or environment record."""
    fix = "give the output of `shivam validate --points-file PROBE` and that probe file"
    try:
        records = json.loads(read_text(probe, "probe file", "give a points file"))
        points = {p.label(): p for p in (Point.model_validate(r) for r in records)}
    except (json.JSONDecodeError, TypeError, ValidationError):
        raise ShivamError(f"probe file {str(probe)!r} is not a list of points; give a points file") from None
    out, seen = [], set()
    for line in read_text(log, "printed table", fix).splitlines():
        cells = [c.strip() for c in line.strip().strip("│").split("│")]
        if not (line.startswith("│ ") and len(cells) >= 3 and cells[0] in points) or cells[1] == "FAILED":
            continue
        p = points[cells[0]]
        if p.label() in seen:
            raise ShivamError(f"{log}: point {p.label()} is printed twice; {fix}, one run's table")
        seen.add(p.label())
        try:
            time_s, energy_j = float(cells[1]) / 1e3, float(cells[2])
        except ValueError:
            time_s = energy_j = math.nan
        if not (math.isfinite(time_s) and math.isfinite(energy_j) and time_s > 0 and energy_j > 0):
            raise ShivamError(
                f"{log}: point {p.label()} has no positive ms and J per call ({cells[1]!r}, {cells[2]!r}); {fix}"
            )
        p.check()
        if engine is None or p.engine == engine:
            out.append(Measured(p, time_s, energy_j, 0.0, p.model, card))
    if not out:
        raise ShivamError(f"{log}: no measured point of {probe} in the table; {fix}")
    return out
