"""The measurement window on a simulated counter that steps every 100 ms, like NVML's."""

import time

import pytest

from shivam.validate.meter import EnergyCounter, Measurement, MeterError, SimulatedCounter, Window, idle_power, measure


class VirtualClock:
    """Time that moves only when the workload runs (plus 1 us per reading, so polling loops progress)."""

    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        self.t += 1e-6
        return self.t

    def work(self, seconds, tokens=1.0):
        def call():
            self.t += seconds
            return tokens

        return call


@pytest.mark.parametrize("call_s", [0.007, 0.037, 0.0005])
def test_inline_window_error_is_bounded_by_one_call_over_the_span(call_s):
    # read between calls, the closing edge is seen up to one call late: relative error <= call / span
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=200.0, period_s=0.1).counter()
    win = counter.window(clock.work(call_s), min_periods=20)
    assert win.counter_span_s >= 2.0 and win.duration_s >= 2.0 - call_s
    assert win.energy_j / win.calls == pytest.approx(
        200.0 * call_s, rel=call_s / 2.0 + 2e-6 / call_s
    )  # + the virtual 1 us per reading
    assert win.duration_s / win.calls == pytest.approx(call_s, rel=1e-4 + 2e-6 / call_s)


@pytest.mark.parametrize("call_s", [0.0007, 0.007, 0.023])
def test_threaded_window_on_a_100ms_counter(call_s):
    # the real set-up: the counter polled on a thread, steps every 100 ms, 20 periods per window
    counter = SimulatedCounter(power_w=250.0, period_s=0.1).counter()
    counter.threaded = True

    def call():
        time.sleep(call_s)
        return 1.0

    win = counter.window(call, min_periods=20)
    assert win.counter_steps >= 20 and win.counter_span_s >= 1.99
    assert win.power_w == pytest.approx(250.0, rel=0.02)  # edges timestamped within a few ms (busy CI) of 2 s
    assert win.energy_j == pytest.approx(250.0 * win.duration_s, rel=0.02)


def test_long_calls_still_need_min_calls():
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=100.0).counter()
    win = counter.window(clock.work(0.3), min_periods=20, min_calls=20)
    assert win.calls >= 20 and win.counter_span_s >= 5.9
    assert win.energy_j / win.calls == pytest.approx(30.0, rel=1e-3)


def test_power_trace_follows_a_power_change():
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=lambda t: 100.0 if t < 1.5 else 300.0).counter()
    win = counter.window(clock.work(0.01), min_periods=30)
    powers = [p for _, p in win.power_trace]
    assert min(powers) == pytest.approx(100.0, rel=0.01) and max(powers) == pytest.approx(300.0, rel=0.01)


def test_a_stuck_counter_is_refused():
    clock = VirtualClock()
    counter = EnergyCounter(read_mj=lambda: 5.0, clock=clock)
    with pytest.raises(MeterError, match="did not change"):
        counter.window(clock.work(0.01))


def test_spread_and_tokens_by_hand():
    wins = [
        Window(
            energy_j=e, duration_s=1.0, calls=10, counter_steps=20, counter_energy_j=e, counter_span_s=1.0, tokens=20.0
        )
        for e in (1.0, 1.02, 0.98)
    ]
    s = Measurement(wins).summary()
    assert s["energy_per_call_j"] == pytest.approx(0.1)
    assert s["energy_spread"] == pytest.approx(0.04 / 1.0)
    assert s["energy_per_token_j"] == pytest.approx(3.0 / 60)


def test_measure_runs_warmup_and_repeats():
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=150.0).counter()
    m = measure(counter, clock.work(0.005), repeats=3, min_periods=20)
    assert len(m.windows) == 3
    assert m.summary()["energy_spread"] < 0.01


def test_idle_power_reads_the_constant():
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=83.0).counter()
    # idle_power sleeps for real between readings; on a virtual clock that only costs wall time
    counter.clock = clock
    orig_sleep = time.sleep
    try:
        time.sleep = lambda s: setattr(clock, "t", clock.t + s)
        assert idle_power(counter, 1.0) == pytest.approx(83.0, rel=1e-3)
    finally:
        time.sleep = orig_sleep


def test_polled_power_fallback_integrates_instant_power():
    from shivam.validate.meter import PolledEnergy

    poller = PolledEnergy(lambda: 50.0, interval_s=0.005)
    t0, e0 = time.perf_counter(), poller.read_mj()
    time.sleep(0.5)
    e1, t1 = poller.read_mj(), time.perf_counter()
    poller.close()
    assert (e1 - e0) * 1e-3 == pytest.approx(50.0 * (t1 - t0), rel=0.1)


def _fake_measure(spreads):
    """A stand-in for meter.measure whose windows disagree by spreads[min_periods] (energy per call 1 J)."""
    from shivam.validate.meter import Measurement, Window

    def measure(counter, call, repeats, min_periods, min_calls):
        s = spreads[min_periods]
        energies = [1.0 - s / 2, 1.0, 1.0 + s / 2][:repeats]
        return Measurement(
            [
                Window(
                    energy_j=e * min_calls,
                    duration_s=0.001 * min_calls,
                    calls=min_calls,
                    counter_steps=min_periods,
                    counter_energy_j=e,
                    counter_span_s=1.0,
                )
                for e in energies
            ]
        )

    return measure


def test_a_spread_point_is_measured_again_with_longer_windows(monkeypatch):
    from shivam.validate import meter, runner

    # 20 periods: windows 10 % apart; 50 periods (2.5x): 1 % apart -> one extension, both attempts kept
    monkeypatch.setattr(meter, "measure", _fake_measure({20: 0.10, 50: 0.01}))
    s = runner.measure_steady(None, None, repeats=3, min_periods=20, min_calls=20, max_spread=0.03, extensions=1)
    assert s["energy_spread"] == pytest.approx(0.01) and s["min_periods"] == 50 and s["calls"] == [50, 50, 50]
    assert [a["energy_spread"] for a in s["attempts"]] == [pytest.approx(0.10)]
    assert "spread above 3 %" not in s["flags"]


def test_a_point_that_stays_spread_is_flagged_not_hidden(monkeypatch):
    from shivam.validate import meter, runner

    monkeypatch.setattr(meter, "measure", _fake_measure({20: 0.10, 50: 0.08}))
    s = runner.measure_steady(None, None, repeats=3, min_periods=20, min_calls=20, max_spread=0.03, extensions=1)
    assert s["energy_spread"] == pytest.approx(0.08) and len(s["attempts"]) == 1
    assert "spread above 3 %" in s["flags"]
    monkeypatch.setattr(meter, "measure", _fake_measure({20: 0.01}))
    steady = runner.measure_steady(None, None, repeats=3, min_periods=20, min_calls=20)
    assert "attempts" not in steady and steady["min_periods"] == 20  # a steady point is measured once


def test_a_point_spread_in_time_alone_is_measured_again(monkeypatch):
    from shivam.validate import meter, runner
    from shivam.validate.meter import Measurement, Window

    # same energy in every window, but the calls took 10 % longer in one (a slow host): time spread 10 %
    def measure(counter, call, repeats, min_periods, min_calls):
        slow = [1.0, 1.0, 1.1] if min_periods == 20 else [1.0, 1.0, 1.01]
        return Measurement(
            [
                Window(
                    energy_j=min_calls,
                    duration_s=0.001 * min_calls * f,
                    calls=min_calls,
                    counter_steps=min_periods,
                    counter_energy_j=1.0,
                    counter_span_s=1.0,
                )
                for f in slow
            ]
        )

    monkeypatch.setattr(meter, "measure", measure)
    s = runner.measure_steady(None, None, repeats=3, min_periods=20, min_calls=20, max_spread=0.03, extensions=1)
    assert s["energy_spread"] == pytest.approx(0.0) and s["min_periods"] == 50
    assert s["attempts"][0]["time_spread"] == pytest.approx(0.10) and s["time_spread"] == pytest.approx(0.01)
    assert "spread above 3 %" not in s["flags"]


def test_each_window_records_the_host_speed_probe():
    clock = VirtualClock()
    counter = SimulatedCounter(clock, power_w=150.0).counter()
    speeds = iter([0.010, 0.010, 0.016])  # the host's CPU 60 % slower after the third window
    s = measure(counter, clock.work(0.01), repeats=3, min_periods=20, probe=lambda: next(speeds)).summary()
    assert s["host_probe_s"] == [0.010, 0.010, 0.016]
    assert s["host_probe_spread"] == pytest.approx(0.6)  # (0.016 - 0.010) / median 0.010


def test_a_spread_point_on_a_host_changing_speed_says_so(monkeypatch):
    from shivam.validate import meter, runner

    def measure_(counter, call, repeats, min_periods, min_calls):
        windows = [
            Window(
                energy_j=min_calls * f,
                duration_s=0.001 * min_calls * f,
                calls=min_calls,
                counter_steps=min_periods,
                counter_energy_j=1.0,
                counter_span_s=1.0,
                host_probe_s=0.01 * f,
            )
            for f in (1.0, 1.0, 1.5)
        ]  # one slow window, and the probe after it slow too
        return Measurement(windows)

    monkeypatch.setattr(meter, "measure", measure_)
    s = runner.measure_steady(None, None, repeats=3, min_periods=20, min_calls=20, max_spread=0.03, extensions=1)
    assert "spread above 3 %" in s["flags"] and "host speed varied 50 % between windows" in s["flags"]


def test_the_last_points_decoder_is_free_before_the_next_is_built(monkeypatch, tmp_path):
    # each point's call holds its decoder, as the engines' calls do; an 80 GB card held two 7B decoders' caches at once
    # when the loop kept the last call alive while the next point's decoder was built: the workbench here refuses to
    # build a decoder while an earlier one is still referenced
    import gc
    import weakref

    from shivam.calibrate.points import Point
    from shivam.calibrate.results import ResultsFile
    from shivam.validate import meter, runner

    monkeypatch.setattr(meter, "measure", _fake_measure({3: 0.0}))

    class Decoder:
        pass

    class Bench:
        def __init__(self):
            self.last = None

        def call_for(self, p):
            gc.collect()
            assert self.last is None or self.last() is None, "the last point's decoder is still alive"
            dec = Decoder()
            self.last = weakref.ref(dec)
            return lambda: (dec, 1.0)[1]

        def release(self):
            pass

    points = [Point(suite="t", kind="step", model="opt-125m", new_tokens=n, context=64) for n in (1, 2, 3)]
    written = runner.run_campaign(
        points, ResultsFile(tmp_path / "r.jsonl"), None, Bench(), None, repeats=1, min_periods=3, progress=False
    )
    assert [r["status"] for r in written] == ["ok", "ok", "ok"]


def test_a_decoder_being_replaced_is_free_before_its_successor_is_built(monkeypatch):
    # a step one token deeper than the decoder's cache rebuilds the decoder; Workbench.decoder held the old one in a
    # local while building the new, so an 80 GB card held two 7B decoders (weights and caches) at once and ran out
    import gc
    import weakref

    from shivam.calibrate.points import Point
    from shivam.validate.runner import Workbench

    alive = []

    class FakeDecoder:
        def __init__(self, spec, batch, max_context, *rest):
            gc.collect()
            assert all(ref() is None for ref in alive), "the decoder being replaced is still referenced"
            self.max_context = max_context
            alive.append(weakref.ref(self))

    bench = Workbench("cpu")
    monkeypatch.setattr(bench, "decoder_class", lambda engine: FakeDecoder)
    shallow = Point(suite="t", kind="step", model="opt-125m", new_tokens=1, context=1024)
    deep = Point(suite="t", kind="step", model="opt-125m", new_tokens=5, context=1024)
    first = bench.decoder(shallow.model, shallow.batch, 1025, shallow)
    assert bench.decoder(shallow.model, shallow.batch, 1025, shallow) is first  # kept while it is deep enough
    del first
    second = bench.decoder(deep.model, deep.batch, 1029, deep)
    assert second.max_context == 1029 and len(alive) == 2
