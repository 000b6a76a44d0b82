"""The serving regime: batched speculation, the crossover batch, prefill, the power limit and request metrics, each
against a hand calculation or a brute-force check."""

import dataclasses
import math

import numpy as np
import pytest
from conftest import run_cli

import shivam
from shivam.calibrate.points import Point, predict_point
from shivam.sim.roofline import power_limited, step_cost
from shivam.sim.speculative import tokens_per_iteration, tokens_per_iteration_beta, tokens_per_iteration_mixture
from shivam.sim.workload import acceptance_ops, prefill_ops
from shivam.specs import Dtypes, load_gpu, load_model, make_params
from shivam.validate.suites import SERVING_BATCHES, ragged_contexts, suite_points


def test_batched_speculation_yields_b_tau_tokens_per_iteration():
    r = shivam.predict(model="llama-3.1-8b", draft="llama-3.2-1b", gpu="h200", engine="ref", k=[3], alpha=0.7, batch=16)
    spec = r.rows[1]
    assert spec["tokens_per_iteration"] == pytest.approx((1 - 0.7**4) / (1 - 0.7))
    scn = r.scenario
    c = scn.contexts()
    draft, verify, sync = scn.iteration(3, c)
    per_token = ((draft + verify + sync).time_s / (16 * spec["tokens_per_iteration"])).mean()
    assert spec["time_per_token_s"] == pytest.approx(per_token, rel=1e-12)
    # the verify step processes 16 x 4 tokens and reads each sequence's own KV cache
    one = dataclasses.replace(scn, batch=1).verify_step(3, 1000.0)
    many = scn.verify_step(3, 1000.0)
    assert float(many.kv_bytes - one.kv_bytes) == pytest.approx(15 * float(one.kv_bytes - 0), rel=0.02)


def test_per_position_acceptance_at_batch():
    r = shivam.predict(model="mistral-7b", draft="llama-68m", gpu="h200", k=[3], acceptance=[0.9, 0.8, 0.7], batch=8)
    assert r.rows[1]["tokens_per_iteration"] == pytest.approx(1 + 0.9 + 0.9 * 0.8 + 0.9 * 0.8 * 0.7)


def _beta_pdf(x, a, b):
    return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)))


@pytest.mark.parametrize("mean,conc,k", [(0.8, 5.0, 4), (0.6, 2.0, 8), (0.9, 20.0, 2)])
def test_beta_acceptance_equals_numerical_integration_and_differs_from_the_mean(mean, conc, k):
    a, b = mean * conc, (1 - mean) * conc
    x = np.linspace(1e-7, 1 - 1e-7, 400_001)
    w = _beta_pdf(x, a, b)
    numeric = np.trapezoid(w * tokens_per_iteration(x, k), x) / np.trapezoid(w, x)
    closed = float(tokens_per_iteration_beta(mean, conc, k))
    assert closed == pytest.approx(numeric, rel=2e-4)
    assert (
        closed - float(tokens_per_iteration(mean, k)) > 1e-3
    )  # Jensen: tau is convex in alpha, E[tau] > tau(E[alpha])


def test_mixture_acceptance_is_the_weighted_mean_of_tau():
    got = float(tokens_per_iteration_mixture([0.95, 0.3], [1, 3], 4))
    want = 0.25 * (1 - 0.95**5) / 0.05 + 0.75 * (1 - 0.3**5) / 0.7
    assert got == pytest.approx(want)
    assert got > float(tokens_per_iteration(0.25 * 0.95 + 0.75 * 0.3, 4))
    with pytest.raises(shivam.ShivamError):
        tokens_per_iteration_mixture([0.5], [1, 2], 4)


def test_alpha_concentration_raises_tau_in_predictions():
    kw = dict(model="mistral-7b", draft="llama-68m", gpu="h200", k=[4], alpha=0.8, batch=8)
    spread = shivam.predict(**kw, alpha_concentration=4.0).rows[1]
    plain = shivam.predict(**kw).rows[1]
    assert spread["tokens_per_iteration"] == pytest.approx(float(tokens_per_iteration_beta(0.8, 4.0, 4)))
    assert spread["tokens_per_iteration"] > plain["tokens_per_iteration"]  # convexity of tau in alpha


def test_crossover_equals_a_brute_force_scan():
    kw = dict(model="llama-3.1-8b", draft="llama-3.2-1b", gpu="h200", engine="ref", k=[2, 8], alpha=[0.6, 0.9])
    batches = list(range(1, 161, 3))
    found = shivam.crossover(batch=batches, **kw)["crossover"]
    for a in (0.6, 0.9):
        for k in (2, 8):
            energy = latency = None
            for b in batches:  # one prediction per batch, first batch where speculation loses
                row = next(r for r in shivam.predict(**{**kw, "k": [k], "alpha": a}, batch=b).rows if r["k"] == k)
                if energy is None and row["energy_ratio"] < 1:
                    energy = b
                if latency is None and row["speedup"] < 1:
                    latency = b
            assert found[f"{a:g}"][str(k)] == {"energy": energy, "latency": latency}
    assert found["0.6"]["2"]["energy"] is not None and found["0.6"]["2"]["energy"] > 16  # saves at small batch


def test_prefill_flops_equal_the_hand_count():
    m, P, b = load_model("llama-3.1-8b"), 2048, 2
    p = make_params(load_gpu("h200"), "ref")
    steps = prefill_ops(m, b, P, Dtypes.of("bf16"), p.kernels)
    assert [n for n, _ in steps] == [P]  # ref: no chunking, one step
    ops = steps[0][1]
    matmul = sum(op.repeat * float(np.sum(op.flops)) for op in ops if op.kind == "matmul")
    attention = sum(op.repeat * float(np.sum(op.flops)) for op in ops if op.name == "attention")
    linear_params = m.param_count() - 2 * m.vocab * m.hidden - m.layers * 2 * m.hidden - m.hidden  # no embed, norms
    assert matmul == pytest.approx(2 * b * P * (linear_params + m.vocab * m.hidden))  # logits of every position
    keys = P * (P + 1) / 2  # causal: query i attends to i keys
    assert attention == pytest.approx(m.layers * b * (4 * m.heads * m.head_dim + 5 * m.heads) * keys)


def test_chunked_prefill_attends_to_the_same_keys():
    m = load_model("mistral-7b")
    p = make_params(load_gpu("h200"), "ref")
    chunked = p.kernels.model_copy(update={"prefill": p.kernels.prefill.model_copy(update={"chunk_tokens": 512})})
    whole = prefill_ops(m, 1, 1300, Dtypes.of("bf16"), p.kernels)
    parts = prefill_ops(m, 1, 1300, Dtypes.of("bf16"), chunked)
    assert [n for n, _ in parts] == [512, 276]

    def attn(steps):
        return sum(float(np.sum(op.flops)) for _, ops in steps for op in ops if op.name == "attention")

    assert attn(parts) == pytest.approx(attn(whole))


def test_the_power_limit_stretches_time_until_power_equals_it():
    p = make_params(load_gpu("h200"), "ref")
    m = load_model("llama-3.1-8b")
    ops = prefill_ops(m, 8, 2048, Dtypes.of("bf16"), p.kernels)[0][1]
    raw = step_cost(ops, p, "bf16").total()
    power = float(raw.energy_j / raw.time_s)  # a compute-bound prefill
    assert power > 2 * p.static_power_w
    p = p.model_copy(update={"power_limit_w": 0.8 * power})  # a board limit below what it would draw
    held = power_limited(raw, p)
    assert float(held.energy_j / held.time_s) == pytest.approx(p.power_limit_w)
    # by hand: the SM clock scale s at which the step draws the limit, its compute-bound time stretched by 1/s, the
    # SMs' dynamic energy (arithmetic, active power, latency-floor blocks) by s^2, static power over the longer time
    from scipy.optimize import brentq

    t, e, tc = float(raw.time_s), float(raw.energy_j), float(raw.compute_bound_s)
    sm = float(raw.e_compute + raw.e_active + raw.e_floor)

    def over(s):
        stretch = tc * (1 / s - 1)
        return e - sm * (1 - s**2) + p.static_power_w * stretch - p.power_limit_w * (t + stretch)

    s_hand = brentq(over, 0.2, 1.0)
    assert 0.2 < s_hand < 1
    assert float(held.time_s) == pytest.approx(t + tc * (1 / s_hand - 1), rel=1e-6)
    assert float(held.energy_j) < e  # lower clocks, lower voltage: less energy, not only a longer time
    decode = step_cost(prefill_ops(m, 1, 1, Dtypes.of("bf16"), p.kernels)[0][1], p, "bf16").total()
    assert float(power_limited(decode, p).time_s) == float(decode.time_s)  # below the limit: unchanged


def test_request_metrics_add_the_prefill():
    r = shivam.predict(
        model="llama-3.1-8b", draft="llama-3.2-1b", gpu="h200", engine="ref", k=[4], alpha=0.8, prompt=2000, gen=300
    )
    base, spec = r.rows
    scn = r.scenario
    pre = scn.prefill()
    assert base["prefill_time_s"] == base["ttft_s"] == pytest.approx(float(pre.time_s))
    assert base["energy_per_request_j"] == pytest.approx(float(pre.energy_j) + 299 * base["energy_per_token_j"])
    assert base["energy_per_output_token_j"] == pytest.approx(base["energy_per_request_j"] / 300)
    assert base["time_per_request_s"] == pytest.approx(base["ttft_s"] + 299 * base["tpot_s"])
    both = pre + scn.prefill(scn.draft)  # the draft's own prefill counts with speculation
    assert spec["prefill_energy_j"] == pytest.approx(float(both.energy_j))
    assert spec["itl_s"] == pytest.approx(spec["tpot_s"] * spec["tokens_per_iteration"])
    assert base["energy_per_output_token_j"] > base["energy_per_token_j"]


def test_rejection_sampling_costs_its_pass_over_the_vocabulary():
    kw = dict(model="llama-3.1-8b", draft="llama-3.2-1b", gpu="h200", engine="ref", k=[4], alpha=0.8, batch=32)
    greedy, rejection = shivam.predict(**kw), shivam.predict(**kw, sampling="rejection")
    assert greedy.rows[0]["energy_per_token_j"] == rejection.rows[0]["energy_per_token_j"]  # k = 0: nothing to verify
    assert rejection.rows[1]["energy_per_token_j"] > greedy.rows[1]["energy_per_token_j"]
    p = greedy.scenario.params
    (op,) = acceptance_ops(128256, 32, 4, p.kernels)
    assert float(op.act_bytes) == 32 * 9 * 128256 * p.kernels.logit_bytes  # target at 5 positions, draft at 4


def test_ragged_batch_costs_its_mean_context_and_checks_its_longest():
    r = shivam.predict(model="llama-3.1-8b", gpu="h200", engine="ref", k=0, prompts=[256, 1024, 4096], gen=64)
    scn = r.scenario
    assert scn.batch == 3 and scn.prompt == pytest.approx(1792)
    kv = scn.verify_step(0, scn.prompt).kv_bytes
    per_seq = sum(scn.target.kv_bytes_per_token(2) * (c + 1) for c in (256, 1024, 4096))
    writes = 3 * scn.target.kv_bytes_per_token(2)
    assert float(kv) == pytest.approx(per_seq + writes)
    with pytest.raises(shivam.ShivamError, match="max_position_embeddings"):
        shivam.predict(model="opt-1.3b", gpu="h200", k=0, prompts=[100, 2040], gen=64)


def test_default_predictions_carry_the_request_fields_and_stay_the_same():
    r = shivam.predict(model="mistral-7b", gpu="l4", k=4, alpha=0.8)
    assert {"prefill_time_s", "energy_per_request_j", "time_per_request_s", "energy_per_output_token_j"} <= set(
        r.rows[0]
    )


@pytest.mark.parametrize(
    "args,needle",
    [
        (["--batch", "1..1000000000"], "--batch"),
        (["--batch", "1..1e9"], "--batch"),
        (["--batch", "1..2000"], "--batch"),
        (["--prompts", "100,200", "--batch", "4"], "--prompts"),
        (["--alpha-concentration", "-1"], "--alpha-concentration"),
        (["--sampling", "nucleus"], "--sampling"),
    ],
)
def test_bad_serving_inputs_are_one_line(args, needle):
    res = run_cli("predict", "--model", "mistral-7b", "--gpu", "h200", "--k", "4", "--alpha", "0.8", *args)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_crossover_command_prints_the_table_and_refuses_one_batch():
    res = run_cli("crossover", "--model", "opt-1.3b", "--draft", "opt-125m", "--gpu", "h200", "--batch", "1,16,64")
    assert res.returncode == 0 and "k=4" in res.stdout and "E " in res.stdout
    res = run_cli("crossover", "--model", "opt-1.3b", "--draft", "opt-125m", "--gpu", "h200", "--batch", "8")
    assert res.returncode == 2 and "range" in res.stderr


def test_serving_suites_are_well_formed():
    batch, prefill = suite_points("batch"), suite_points("prefill")
    for p in batch + prefill:
        p.check()
    assert {p.engine for p in batch + prefill} == {"ref"}
    assert {p.batch for p in batch if not p.contexts} == set(SERVING_BATCHES)
    ragged = [p for p in batch if p.contexts]
    assert ragged and min(min(p.contexts) for p in ragged) == 256 and max(max(p.contexts) for p in ragged) == 4096
    assert len({p.id for p in batch + prefill}) == len(batch + prefill)
    assert len(prefill) == 5 * 2 * 4
    assert ragged_contexts(3) == (256, 1024, 4096)
    params = make_params(load_gpu("h200"), "ref")
    pred = predict_point(prefill[0], params)
    assert pred["tokens"] == prefill[0].prompt * prefill[0].batch


def test_point_ids_of_recorded_points_do_not_move():
    import hashlib
    import json

    p = Point(suite="quick", kind="step", model="mistral-7b")
    dump = p.model_dump()
    assert "contexts" not in dump and "contexts" in Point(**dump, contexts=(5,)).model_dump()
    assert p.id == hashlib.sha1(json.dumps(dump, sort_keys=True).encode()).hexdigest()[:16]


def test_a_ragged_batch_of_equal_prompts_decodes_as_the_plain_batch():
    # four sequences of 128 prompt tokens are a batch of 4: the per-token rows must say so (batch 4), not batch 1
    import shivam

    ragged = shivam.predict(model="mistral-7b", gpu="h200", k=[0, 4], alpha=0.8, prompts=[128] * 4)
    plain = shivam.predict(model="mistral-7b", gpu="h200", k=[0, 4], alpha=0.8, batch=4, prompt=128)
    assert [r["batch"] for r in ragged.rows] == [4, 4]
    for a, b in zip(ragged.rows, plain.rows):
        assert a["energy_per_token_j"] == pytest.approx(b["energy_per_token_j"], rel=1e-9)
        assert a["time_per_token_s"] == pytest.approx(b["time_per_token_s"], rel=1e-9)
    with pytest.raises(shivam.ShivamError, match="4 sequences but --batch is 8"):
        shivam.predict(model="mistral-7b", gpu="h200", prompts=[128] * 4, batch=8)


def test_refusals_of_runs_that_cannot_be(cli):
    res = cli("validate", "--suite", "batch", "--engine", "graph", "--simulate-meter", "--limit", "1")
    assert res.returncode == 2 and "too large" in res.stderr and "Traceback" not in res.stderr
    res = cli("validate", "--suite", "engine", "--simulate-meter")
    assert res.returncode == 2 and "no simulated run" in res.stderr
    res = cli("crossover", "--model", "mistral-7b", "--draft", "llama-68m", "--gpu", "h200", "--prompts", "1,2")
    assert res.returncode == 2 and "shivam predict --prompts" in res.stderr


def test_the_fits_vectorized_costs_cap_energy_at_the_power_limit_as_point_cost_does():
    # the fit costs every point in one pass (PointSet); a prefill that would draw more than the board's limit is capped
    # there exactly as in point_cost, so that fitting prefill points fits the model that predicts
    from shivam.calibrate.points import Point, PointSet, point_cost
    from shivam.specs import resolve_params

    p = resolve_params(load_gpu("h200"), "ref")
    ops = prefill_ops(load_model("llama-3.1-8b"), 8, 2048, Dtypes.of("bf16"), p.kernels)[0][1]
    raw = step_cost(ops, p, "bf16").total()
    # a board limit 10 % below what this prefill draws uncapped, so that it is capped whatever the calibration says
    p = p.model_copy(update={"power_limit_w": 0.9 * float(raw.energy_j / raw.time_s)})
    pts = [
        Point(suite="t", engine="ref", kind="prefill", model="llama-3.1-8b", batch=8, prompt=2048, context=0),
        Point(suite="t", engine="ref", kind="prefill", model="qwen2-0.5b", batch=1, prompt=128, context=0),
        Point(
            suite="t", engine="ref", kind="spec", model="llama-3.1-8b", draft="llama-3.2-1b", batch=32, k=4, alpha=0.8
        ),
        Point(suite="t", engine="ref", kind="step", model="mistral-7b", new_tokens=9, batch=4, context=1024),
    ]
    together = PointSet(pts, p).costs(p)
    for i, point in enumerate(pts):
        alone = point_cost(point, p)[0]
        assert together.time_s[i] == pytest.approx(float(alone.time_s), rel=1e-12)
        assert together.energy_j[i] == pytest.approx(float(alone.energy_j), rel=1e-12)
    assert together.energy_j[0] == pytest.approx(p.power_limit_w * together.time_s[0], rel=1e-12)  # at the limit
    # by hand: held, it runs longer by (unheld power / limit)^limit_stretch_exponent, and draws the limit over that
    unheld = PointSet(pts, p).uncapped(p)
    power = unheld.energy_j[0] / unheld.time_s[0]
    stretch = (power / p.power_limit_w) ** p.limit_stretch_exponent
    assert together.time_s[0] == pytest.approx(unheld.time_s[0] * stretch, rel=1e-12)
    assert together.energy_j[0] < unheld.energy_j[0]


def test_an_iteration_is_capped_at_the_power_limit_as_a_whole():
    # with no limiter window known, the board averages power over many iterations: draft steps, verify and sync share
    # one factor that brings the iteration to the limit, while each step's time stays (docs/model.md, section 4b)
    from shivam.sim.scenario import Scenario

    p = make_params(load_gpu("h200"), "ref").model_copy(update={"power_window_s": None})
    args = dict(target=load_model("llama-3.1-8b"), draft=load_model("llama-3.2-1b"), batch=64)
    free = Scenario(params=p.model_copy(update={"power_limit_w": None}), **args).iteration(4, 1024)
    t, e = sum(float(c.time_s) for c in free), sum(float(c.energy_j) for c in free)
    limit = 0.9 * e / t
    capped = Scenario(params=p.model_copy(update={"power_limit_w": limit}), **args).iteration(4, 1024)
    assert sum(float(c.energy_j) for c in capped) == pytest.approx(limit * t, rel=1e-12)
    for a, b in zip(free, capped):
        assert float(b.time_s) == float(a.time_s)
        assert float(b.energy_j) == pytest.approx(0.9 * float(a.energy_j), rel=1e-12)
    below = Scenario(params=p.model_copy(update={"power_limit_w": 1.1 * e / t}), **args).iteration(4, 1024)
    assert [float(c.energy_j) for c in below] == [float(c.energy_j) for c in free]


@pytest.mark.parametrize(
    "kw",
    [
        dict(model="llama-3.1-8b", draft="llama-3.2-1b", gpu="h200", engine="ref", prompt=512, gen=64),
        dict(model="mixtral-8x7b", draft="mistral-7b", gpu="h100-sxm", tp=4, sampling="rejection", power_limit=True),
        dict(model="opt-1.3b", draft="opt-125m", gpu="t4", weights_dtype="fp16", act_dtype="fp16", kv_dtype="fp16"),
        dict(model="mistral-7b", draft="llama-68m", gpu="h200", engine="graph", alpha_concentration=4.0),
    ],
)
def test_a_batch_scan_costs_each_batch_as_a_scenario_of_that_batch_alone(kw):
    """predict over several batch sizes costs them in one vectorized pass (Scenario.scan); each row must equal the
    scalar scenario's own grid at that batch (Scenario.grid with an int batch, averaged over the generation) and the
    prediction of that batch alone."""
    from shivam.sim.scenario import acceptance_taus

    batches, ks, alphas = [1, 7, 48], [0, 2, 5], [0.6, 0.9]
    scan = shivam.predict(k=ks, alpha=alphas, batch=batches, **kw)
    labels, taus = acceptance_taus(ks, alphas, concentration=kw.get("alpha_concentration"))
    for b in batches:
        alone = shivam.predict(k=ks, alpha=alphas, batch=b, **kw)
        scn = dataclasses.replace(alone.scenario, batch=b)
        grid = scn.grid(ks, taus, scn.contexts())
        rows = [r for r in scan.rows if r["batch"] == b]
        assert len(rows) == len(alone.rows) == len(ks) * len(alphas)
        for row, single in zip(rows, alone.rows):
            i, a = ks.index(row["k"]), labels.index(f"{row['alpha']:g}")
            for key in ("energy_per_token_j", "time_per_token_s"):
                assert row[key] == pytest.approx(float(grid[key][i, a].mean()), rel=1e-12)
            for key in ("energy_per_request_j", "prefill_time_s", "ttft_s", "energy_ratio", "verify_bound"):
                assert row[key] == (single[key] if key == "verify_bound" else pytest.approx(single[key], rel=1e-12))
        assert scan.best_by_batch[str(b)] == alone.best


def test_a_long_scan_prints_every_row_as_text_and_its_json_parses():
    import json

    args = ("predict", "--model", "opt-1.3b", "--draft", "opt-125m", "--gpu", "h200", "--batch", "1..64")
    table = run_cli(*args)
    assert table.returncode == 0
    rows = shivam.predict(model="opt-1.3b", draft="opt-125m", gpu="h200", batch=range(1, 65)).rows
    lines = table.stdout.splitlines()
    rules = [i for i, line in enumerate(lines) if line and set(line) == {"-"}]  # title, rule, header, rule, rows, rule
    assert len(rows) > 200 and rules[2] - rules[1] - 1 == len(rows)  # above the rich table's limit: text, every row
    assert lines[rules[1] + 1].split()[:3] == ["1", "0.6", "0"]
    doc = json.loads(run_cli(*args, "--format", "json").stdout)
    assert len(doc["rows"]) == len(rows) and doc["crossover"] and doc["batch"] == list(range(1, 65))


def test_a_batch_scan_of_standard_decoding_alone_has_no_crossover_to_mark():
    res = shivam.predict(model="opt-1.3b", gpu="h200", k=0, batch=[1, 2, 3, 4])
    assert res.crossover == {} and len(res.rows) == 4 * 4  # four batches x four alphas, k = 0 only
    assert all(r["crossover_batch_energy"] is None and r["crossover_batch_latency"] is None for r in res.rows)


def _limiter_by_simulation(p_hot, t_hot, p_cool, t_cool, tau, limit):
    """The hot phase's held power found by integrating the limiter's first-order average y' = (P - y) / tau over
    repeated iterations (exact exponential steps of 1/400 of a phase) and bisecting for the power at which its
    steady-state peak is the limit: an answer independent of the closed form."""

    def peak(power):
        y, top = p_cool, 0.0
        for _ in range(60):  # periods, until the periodic steady state
            for level, length in ((power, t_hot), (p_cool, t_cool)):
                decay = math.exp(-length / 400 / tau)
                for _ in range(400):
                    y = level + (y - level) * decay
                    top = max(top, y)
        return top

    if peak(p_hot) <= limit:
        return p_hot
    lo, hi = p_cool, p_hot
    for _ in range(40):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if peak(mid) <= limit else (lo, mid)
    return lo


@pytest.mark.parametrize(
    "p_hot, t_hot, p_cool, t_cool, tau",
    [(900.0, 0.0133, 540.0, 0.0128, 0.04), (880.0, 0.0333, 670.0, 0.0194, 0.04), (950.0, 0.0066, 450.0, 0.0103, 0.01)],
)
def test_the_limiter_window_holds_the_hot_phase_as_a_simulated_average_does(p_hot, t_hot, p_cool, t_cool, tau):
    # a speculative iteration as two phases, its verify over the limit and its drafts under it: under a limiter
    # averaging over tau the verify alone is held, at the power where the average peaks at the limit
    from shivam.sim.roofline import host_wait, phase_cap_factors

    base = make_params(load_gpu("h200"), "ref")
    limit = base.power_limit_w

    def phase(power, seconds):  # a cost of this power and time: static power over it and the rest as compute energy
        c = host_wait(base, seconds)
        return dataclasses.replace(c, e_compute=np.asarray((power - base.static_power_w) * seconds))

    hot, cool = phase(p_hot, t_hot), phase(p_cool, t_cool)
    f_hot, f_cool = phase_cap_factors(hot, cool, base.model_copy(update={"power_window_s": tau}))
    expected = _limiter_by_simulation(p_hot, t_hot, p_cool, t_cool, tau, limit)
    assert float(f_cool) == 1.0 and float(f_hot) < 1.0  # every case is held: its averaged peak is over the limit
    assert float(f_hot) * p_hot == pytest.approx(expected, rel=1e-6)
    # the two bounds: a window far longer than the iteration holds its average at the limit; far shorter, each phase
    mean = (p_hot * t_hot + p_cool * t_cool) / (t_hot + t_cool)
    f_long, _ = phase_cap_factors(hot, cool, base.model_copy(update={"power_window_s": 1e3}))
    if mean > limit:
        assert (float(f_long) * p_hot * t_hot + p_cool * t_cool) / (t_hot + t_cool) == pytest.approx(limit, rel=1e-4)
    f_short, _ = phase_cap_factors(hot, cool, base.model_copy(update={"power_window_s": 1e-6}))
    assert float(f_short) * p_hot == pytest.approx(limit, rel=1e-6)
    # swapped order, the same factors; without a window, both phases take the iteration's average factor
    assert phase_cap_factors(cool, hot, base.model_copy(update={"power_window_s": tau}))[1] == pytest.approx(f_hot)
    f_a, f_b = phase_cap_factors(hot, cool, base.model_copy(update={"power_window_s": None}))
    assert float(f_a) == float(f_b) == pytest.approx(min(1.0, limit / mean))


def test_a_cool_phase_over_the_limit_holds_both_phases_there_continuously():
    # drafts that alone draw more than the limit: each phase is held at the limit; just under it, the cool phase runs
    # as it is and the hot one is held at P_cool + (P_lim - P_cool) / f, which meets the same value at P_cool = P_lim
    from shivam.sim.roofline import host_wait, phase_cap_factors

    base = make_params(load_gpu("h200"), "ref").model_copy(update={"power_window_s": 0.04})
    limit = base.power_limit_w

    def phase(power, seconds):
        return dataclasses.replace(
            host_wait(base, seconds), e_compute=np.asarray((power - base.static_power_w) * seconds)
        )

    over = phase_cap_factors(phase(900.0, 0.01), phase(720.0, 0.01), base)
    assert [float(f) for f in over] == pytest.approx([limit / 900.0, limit / 720.0])
    just_under = phase_cap_factors(phase(900.0, 0.01), phase(limit * (1 - 1e-9), 0.01), base)
    assert [float(f) for f in just_under] == pytest.approx([limit / 900.0, 1.0], rel=1e-6)


def test_an_iteration_under_the_limiter_window_holds_its_verify_alone_on_a_grid():
    # Scenario.iteration with the H200's window over a (k, context) grid: the drafts and the sync are never held,
    # the verify is where the averaged power would peak over the limit, and every element equals the scalar call
    from shivam.sim.scenario import Scenario

    p = make_params(load_gpu("h200"), "ref")
    assert p.power_window_s == pytest.approx(0.040)
    args = dict(target=load_model("llama-3.1-8b"), draft=load_model("llama-3.2-1b"), batch=64, params=p)
    free = Scenario(**{**args, "params": p.model_copy(update={"power_limit_w": None})})
    ks, contexts = np.array([[2], [8]]), np.array([[512.0, 1024.0, 2048.0]])
    draft, verify, sync = Scenario(**args).iteration(ks, contexts)
    f_draft, f_verify, _ = free.iteration(ks, contexts)
    assert np.allclose(draft.energy_j, f_draft.energy_j, rtol=1e-12)  # drafts as they are
    assert np.all(verify.energy_j <= f_verify.energy_j * (1 + 1e-12)) and np.any(verify.energy_j < f_verify.energy_j)
    for i, k in enumerate(ks[:, 0]):
        for j, c in enumerate(contexts[0]):
            one = Scenario(**args).iteration(int(k), float(c))
            assert float(one[1].energy_j) == pytest.approx(float(verify.energy_j[i, j]), rel=1e-12)
            assert float(one[1].time_s) == pytest.approx(float(verify.time_s[i, j]), rel=1e-12)
