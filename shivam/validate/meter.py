"""Energy measurement windows over a cumulative energy counter (NVML's total-energy counter on NVIDIA GPUs).

The counter steps about every 100 ms, each step carrying a whole period's energy (as measured on
the H200), so a window is only meaningful over many periods. A window:
  1. synchronizes the device and waits for a counter edge: the opening edge;
  2. runs the workload call after call (each call ends synchronized) until at least `min_periods` further edges
     and `min_calls` calls have passed;
  3. takes the power over the span between the opening and the last edge (counter difference / edge span) and
     multiplies it by the calls' host time: the calls' energy. A call cut by the closing edge biases nothing.
Energy per call = that energy / calls; time per call = host time / calls.

The counter is polled on a thread for real GPUs (an NVML read can take milliseconds, which between calls would
stretch every call), inline for simulated counters. The counter source is injected (`read_mj`, `clock`, `sync`),
so the logic is tested on a simulated counter that steps every 100 ms.
"""

from __future__ import annotations

import dataclasses
import math
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field


class MeterError(RuntimeError):
    pass


@dataclass
class Window:
    energy_j: float  # energy attributed to the calls: edge-span power x the calls' host time
    duration_s: float  # host time from the first call's start to the last call's end
    calls: int
    counter_steps: int
    counter_energy_j: float = 0.0  # counter difference between the opening and the last edge
    counter_span_s: float = 0.0  # time between those edges
    tokens: float = 0.0
    memory_energy_j: float | None = None
    power_trace: list[tuple[float, float]] = field(default_factory=list)  # (s since opening edge, W)
    flags: list[str] = field(default_factory=list)
    host_probe_s: float | None = None  # host_probe() timed right after the window

    @property
    def power_w(self) -> float:
        return self.counter_energy_j / self.counter_span_s if self.counter_span_s > 0 else 0.0


class _InlineEdges:
    """Reads the counter when asked: for simulated counters, whose reads cost nothing."""

    def __init__(self, counter: EnergyCounter):
        self.c = counter
        self.n, self.e, self.t = 0, counter.read_mj(), counter.clock()
        self.edges: list[tuple[float, float, float | None]] = []  # (time, mJ, memory-domain W)

    def _poll(self) -> None:
        e = self.c.read_mj()
        if e != self.e:
            self.n, self.e, self.t = self.n + 1, e, self.c.clock()
            self.edges.append((self.t, self.e, self.c.memory_power_w() if self.c.memory_power_w else None))

    def latest(self) -> tuple[int, float, float]:
        self._poll()
        return self.n, self.t, self.e

    def close(self) -> None:
        pass


# How often the polling thread reads the counter. Each wake takes the GIL from the measured loop, so fewer wakes
# disturb host-bound loops less; 2 ms still times each edge to within 0.1 % of a 2 s span. (The 5-34 % window
# spread of eager generate() on the H200 is the host's own: validation/hf_jitter.py sees it with no meter at all.)
POLL_INTERVAL_S = 0.002


class _ThreadEdges(_InlineEdges):
    """Polls the counter on a thread (NVML reads release the GIL). Seen on the H200 host: with NVML reads between
    calls a graphed decode step measured 7.5 ms against a 5.25 ms replay."""

    def __init__(self, counter: EnergyCounter, interval_s: float = POLL_INTERVAL_S):
        super().__init__(counter)
        self._lock, self._stop = threading.Lock(), threading.Event()
        self._interval = interval_s
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            e = self.c.read_mj()
            if e != self.e:
                t = self.c.clock()
                mem = self.c.memory_power_w() if self.c.memory_power_w else None
                with self._lock:
                    self.n, self.e, self.t = self.n + 1, e, t
                    self.edges.append((t, e, mem))
            time.sleep(self._interval)

    def latest(self) -> tuple[int, float, float]:
        with self._lock:
            return self.n, self.t, self.e

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


@dataclass
class EnergyCounter:
    """A cumulative energy counter in millijoules, with the clock and device sync it is read against."""

    read_mj: Callable[[], float]
    clock: Callable[[], float] = time.perf_counter
    sync: Callable[[], None] = lambda: None
    period_s: float = 0.1
    memory_power_w: Callable[[], float | None] | None = None
    threaded: bool = False

    def window(
        self,
        call: Callable[[], float],
        min_periods: int = 20,
        min_calls: int = 20,
        max_calls: int = 10_000_000,
        timeout_s: float = 2.0,
    ) -> Window:
        """Run `call` (returns tokens produced, ends synchronized) over an edge-opened window."""
        self.sync()
        edges = _ThreadEdges(self) if self.threaded else _InlineEdges(self)
        try:
            n0, t0, e0 = edges.latest()
            deadline = self.clock() + timeout_s
            while True:  # the opening edge
                n, t0, e0 = edges.latest()
                if n != n0:
                    n0 = n
                    break
                if self.clock() > deadline:
                    raise MeterError(f"the energy counter did not change in {timeout_s:.1f} s")
                if self.threaded:
                    time.sleep(0.0002)
            start, calls, tokens = self.clock(), 0, 0.0
            while True:
                tokens += call()
                calls += 1
                n, t, e = edges.latest()
                # enough counter periods (counted, or spanned when one call outlasts several) and enough calls
                if (n - n0 >= min_periods or t - t0 >= min_periods * self.period_s) and calls >= min_calls:
                    break
                if calls >= max_calls:
                    raise MeterError(f"window reached {max_calls} calls without {min_periods} counter periods")
            end = self.clock()
        finally:
            edges.close()
        span, counter_j = t - t0, (e - e0) * 1e-3
        power = counter_j / span if span > 0 else 0.0
        win = Window(
            energy_j=power * (end - start),
            duration_s=end - start,
            calls=calls,
            counter_steps=n - n0,
            counter_energy_j=counter_j,
            counter_span_s=span,
            tokens=tokens,
        )
        prev_t, prev_e, mem = t0, e0, []
        for te, ee, me in edges.edges:
            if t0 < te <= t:
                win.power_trace.append((te - t0, (ee - prev_e) * 1e-3 / max(te - prev_t, 1e-9)))
                prev_t, prev_e = te, ee
                if me is not None:
                    mem.append(me)
        if mem:
            win.memory_energy_j = statistics.fmean(mem) * (end - start)
        if counter_j <= 0:
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
        out = {
            "energy_per_call_j": med_e,
            "time_per_call_s": med_t,
            "tokens_per_call": statistics.fmean(tok),
            "energy_spread": (max(e) - min(e)) / med_e if med_e > 0 else math.inf,
            "time_spread": (max(t) - min(t)) / med_t if med_t > 0 else math.inf,
            "window_s": [w.duration_s for w in self.windows],
            "calls": [w.calls for w in self.windows],
            "counter_steps": [w.counter_steps for w in self.windows],
            "power_w": statistics.median(w.power_w for w in self.windows),
            "flags": sorted({f for w in self.windows for f in w.flags}),
            "power_trace": self.windows[0].power_trace,
            "power_traces": [w.power_trace for w in self.windows],
        }
        total_tokens = sum(w.tokens for w in self.windows)
        if total_tokens > 0:
            out["energy_per_token_j"] = sum(w.energy_j for w in self.windows) / total_tokens
            out["time_per_token_s"] = sum(w.duration_s for w in self.windows) / total_tokens
            per_tok = [w.energy_j / w.tokens for w in self.windows if w.tokens]
            out["energy_per_token_spread"] = (max(per_tok) - min(per_tok)) / statistics.median(per_tok)
        mem = [w.memory_energy_j / w.calls for w in self.windows if w.memory_energy_j is not None]
        if mem:
            out["memory_energy_per_call_j"] = statistics.median(mem)
        probes = [w.host_probe_s for w in self.windows if w.host_probe_s is not None]
        if probes:
            out["host_probe_s"] = probes
            out["host_probe_spread"] = (max(probes) - min(probes)) / statistics.median(probes)
        return out


def host_probe() -> float:
    """Seconds a fixed pure-Python workload takes (about 10 ms): how fast the host's CPU runs right now. On the H200
    machines measured it took 13 ms most of the time and 20-21 ms next to windows where an eager generate() ran 40-60 %
    slower, with no CPU time stolen that the guest could see (validation/README.md, "Repeat spread")."""
    t = time.perf_counter()
    sum(i * i for i in range(300_000))
    return time.perf_counter() - t


def measure(
    counter: EnergyCounter,
    call: Callable[[], float],
    repeats: int = 3,
    min_periods: int = 20,
    warmup_calls: int = 3,
    min_calls: int = 20,
    probe: Callable[[], float] = host_probe,
) -> Measurement:
    for _ in range(warmup_calls):
        call()
    windows = []
    for _ in range(repeats):
        windows.append(counter.window(call, min_periods, min_calls))
        windows[-1].host_probe_s = probe()  # outside the window: it costs no energy there
    return Measurement(windows)


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
