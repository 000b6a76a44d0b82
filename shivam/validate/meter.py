"""Energy measurement windows over a cumulative energy counter (NVML's total-energy counter on NVIDIA GPUs).

The counter steps about every 100 ms, each step carrying a whole period's energy (h200-facts.md), so a window is
only meaningful over many periods. A window here:
  1. synchronizes the device, then waits for a counter edge, so it starts where a period starts;
  2. runs the workload call after call (each call ends synchronized) until at least `min_periods` periods passed;
  3. keeps running calls until the counter steps again, so it also ends on an edge.
Energy = counter difference between the two edges; time = host clock between them. The last call may run past the
closing edge by at most one call, so calls must be short next to the window (the error is <= 1 call in N).

The counter source is injected (`read_mj`, `clock`, `sync`), so the logic is tested on a simulated counter.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import threading
import time
from dataclasses import dataclass, field
from typing import Callable


class MeterError(RuntimeError):
    pass


@dataclass
class Window:
    energy_j: float
    duration_s: float
    calls: int
    counter_steps: int
    tokens: float = 0.0
    memory_energy_j: float | None = None
    power_trace: list[tuple[float, float]] = field(default_factory=list)  # (s since start, W) for reports
    flags: list[str] = field(default_factory=list)

    @property
    def power_w(self) -> float:
        return self.energy_j / self.duration_s


@dataclass
class EnergyCounter:
    """A cumulative energy counter in millijoules, with the clock and device sync it is read against."""

    read_mj: Callable[[], float]
    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] = lambda: None
    period_s: float = 0.1
    memory_power_w: Callable[[], float | None] | None = None

    def wait_edge(self, timeout_s: float = 2.0) -> tuple[float, float]:
        """Poll until the counter changes; return (energy mJ, time) at the edge."""
        start_e, start_t = self.read_mj(), self.clock()
        while True:
            e = self.read_mj()
            t = self.clock()
            if e != start_e:
                return e, t
            if t - start_t > timeout_s:
                raise MeterError(f"the energy counter did not change in {timeout_s:.1f} s")

    def window(self, call: Callable[[], float], min_periods: int = 20, min_calls: int = 20,
               max_calls: int = 10_000_000) -> Window:
        """Run `call` (which returns tokens produced, and ends synchronized) over an edge-aligned window."""
        self.sync()
        e0, t0 = self.wait_edge()
        last_e, steps, calls, tokens = e0, 0, 0, 0.0
        trace, last_t = [], t0
        mem_samples = []
        min_duration = min_periods * self.period_s
        last_read = t0
        while True:
            tokens += call()
            calls += 1
            t = self.clock()
            # reading the counter costs host time; between edges a read every 10 ms is enough, near the end read
            # after every call so the window closes on the first edge past min_duration
            if (t - t0 < min_duration or calls < min_calls) and t - last_read < 0.01:
                continue
            e, last_read = self.read_mj(), t
            if e != last_e:
                steps += 1
                if t - last_t > 0:
                    trace.append((t - t0, (e - last_e) * 1e-3 / max(t - last_t, 1e-9)))
                last_e, last_t = e, t
                if self.memory_power_w is not None:
                    mem = self.memory_power_w()
                    if mem is not None:
                        mem_samples.append(mem)
                if t - t0 >= min_duration and calls >= min_calls:
                    break
            if calls >= max_calls:
                raise MeterError(f"window reached {max_calls} calls without {min_periods} counter periods")
        duration = last_t - t0
        win = Window(energy_j=(last_e - e0) * 1e-3, duration_s=duration, calls=calls, counter_steps=steps,
                     tokens=tokens, power_trace=trace)
        if mem_samples:
            win.memory_energy_j = statistics.fmean(mem_samples) * duration
        if steps < min_periods:
            win.flags.append(f"only {steps} counter steps")
        if calls < min_calls:
            win.flags.append(f"only {calls} calls: the closing edge may cut a call")
        if win.energy_j <= 0:
            win.flags.append("counter read no energy")
        return win


@dataclass
class Measurement:
    windows: list[Window]

    def per_call(self, attr: str) -> list[float]:
        return [getattr(w, attr) / w.calls for w in self.windows]

    def summary(self) -> dict:
        e = [w.energy_j / w.calls for w in self.windows]
        t = [w.duration_s / w.calls for w in self.windows]
        tok = [w.tokens / w.calls for w in self.windows]
        med_e, med_t = statistics.median(e), statistics.median(t)
        out = {"energy_per_call_j": med_e, "time_per_call_s": med_t, "tokens_per_call": statistics.fmean(tok),
               "energy_spread": (max(e) - min(e)) / med_e if med_e > 0 else math.inf,
               "time_spread": (max(t) - min(t)) / med_t if med_t > 0 else math.inf,
               "window_s": [w.duration_s for w in self.windows], "calls": [w.calls for w in self.windows],
               "counter_steps": [w.counter_steps for w in self.windows],
               "power_w": statistics.median(w.power_w for w in self.windows),
               "flags": sorted({f for w in self.windows for f in w.flags}),
               "power_trace": self.windows[0].power_trace}
        total_tokens = sum(w.tokens for w in self.windows)
        if total_tokens > 0:
            out["energy_per_token_j"] = sum(w.energy_j for w in self.windows) / total_tokens
            out["time_per_token_s"] = sum(w.duration_s for w in self.windows) / total_tokens
            per_tok = [w.energy_j / w.tokens for w in self.windows if w.tokens]
            out["energy_per_token_spread"] = (max(per_tok) - min(per_tok)) / statistics.median(per_tok)
        mem = [w.memory_energy_j / w.calls for w in self.windows if w.memory_energy_j is not None]
        if mem:
            out["memory_energy_per_call_j"] = statistics.median(mem)
        return out


def measure(counter: EnergyCounter, call: Callable[[], float], repeats: int = 3, min_periods: int = 20,
            warmup_calls: int = 3, min_calls: int = 20) -> Measurement:
    for _ in range(warmup_calls):
        call()
    return Measurement([counter.window(call, min_periods, min_calls) for _ in range(repeats)])


class SimulatedCounter:
    """A counter like NVML's: cumulative energy that steps every `period_s`, each step carrying the whole period's
    energy at `power_w(t)` (a constant or a function of time since start). For tests and CPU dry runs."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter, power_w=100.0, period_s: float = 0.1):
        self.clock, self.period_s = clock, period_s
        self.power = power_w if callable(power_w) else (lambda t: power_w)
        self.t_start = clock()
        self._periods, self._mj = 0, 0.0

    def read_mj(self) -> float:
        periods = int((self.clock() - self.t_start) / self.period_s)
        while self._periods < periods:  # accumulate each completed period at its midpoint power
            self._mj += self.power((self._periods + 0.5) * self.period_s) * self.period_s * 1e3
            self._periods += 1
        return self._mj

    def counter(self, sync=lambda: None) -> EnergyCounter:
        return EnergyCounter(read_mj=self.read_mj, clock=self.clock, sync=sync, period_s=self.period_s)


def idle_power(counter: EnergyCounter, seconds: float = 3.0) -> float:
    """Board power while nothing runs, over edge-aligned counter periods."""
    periods = max(2, int(round(seconds / counter.period_s)))
    # no device sync: synchronizing would create the CUDA context whose absence the first reading measures
    counter = dataclasses.replace(counter, sync=lambda: None, memory_power_w=None)
    win = counter.window(lambda: (time.sleep(counter.period_s / 20), 0.0)[1], min_periods=periods, min_calls=1)
    return win.power_w


class PolledEnergy:
    """Fallback for GPUs without an energy counter: integrates instantaneous power polled on a thread.

    Presents the same read_mj interface, stepping every `interval_s`."""

    def __init__(self, read_power_w: Callable[[], float], interval_s: float = 0.02):
        self._read, self._interval = read_power_w, interval_s
        self._mj, self._lock = 0.0, threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self):
        last = time.perf_counter()
        while not self._stop.wait(self._interval):
            now = time.perf_counter()
            p = self._read()
            with self._lock:
                self._mj += p * (now - last) * 1e3
            last = now

    def read_mj(self) -> float:
        with self._lock:
            return self._mj

    def close(self):
        self._stop.set()
