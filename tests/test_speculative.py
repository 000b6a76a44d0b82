"""Speculative-decoding arithmetic against Leviathan et al. (2023) and hand calculations."""

import numpy as np
import pytest

from shivam.sim.roofline import StepCost
from shivam.sim.scenario import Scenario, prediction
from shivam.sim.speculative import alpha_for_tokens, per_token, tokens_per_iteration, tokens_per_iteration_positional
from shivam.specs import load_gpu, make_params
from shivam.specs.model import load_model


def fake_step(time, energy):
    names = StepCost.__dataclass_fields__
    kw = {n: 0.0 for n in names}
    kw.update(time_s=time, busy_s=time, e_static=energy)
    return StepCost(**kw)


def test_tokens_per_iteration_closed_form():
    # (1 - 0.8^6) / 0.2 = 3.68928
    assert tokens_per_iteration(0.8, 5) == pytest.approx(3.68928)
    assert tokens_per_iteration(1.0, 4) == 5
    assert tokens_per_iteration(0.0, 4) == 1
    assert tokens_per_iteration(0.5, 0) == 1


def test_positional_vector_matches_iid_and_hand_sum():
    assert tokens_per_iteration_positional([0.5, 0.5], 2) == pytest.approx(1 + 0.5 + 0.25)
    assert tokens_per_iteration_positional([0.8] * 5, 5) == pytest.approx(float(tokens_per_iteration(0.8, 5)))
    assert tokens_per_iteration_positional([0.9, 0.1, 0.9], 3) == pytest.approx(1 + 0.9 + 0.09 + 0.081)


def test_leviathan_table1_speedup_with_free_draft_and_no_verify_overhead():
    # Leviathan et al. 2023: with cost coefficient c = 0 the walltime improvement is (1 - a^(k+1)) / (1 - a);
    # alpha 0.8, k 5 -> 3.69.
    decode = fake_step(1.0, 1.0)
    k, alpha = 5, 0.8
    free_draft = fake_step(0.0, 0.0)
    no_sync = fake_step(0.0, 0.0)
    spec = per_token(free_draft, decode, no_sync, tokens_per_iteration(alpha, k))
    base = per_token(free_draft, decode, no_sync, 1.0)
    assert round(float(base.time_s / spec.time_s), 2) == 3.69


def test_leviathan_speedup_with_draft_cost_coefficient():
    # improvement = (1 - a^(k+1)) / ((1 - a)(c k + 1)); a=0.7, k=3, c=0.1 -> 2.533 / 1.3
    c, k, a = 0.1, 3, 0.7
    spec = per_token(fake_step(c * k, 0), fake_step(1.0, 0), fake_step(0, 0), tokens_per_iteration(a, k))
    assert 1.0 / float(spec.time_s) == pytest.approx((1 - a ** (k + 1)) / ((1 - a) * (c * k + 1)))


def test_alpha_for_tokens_inverts():
    for a, k in [(0.3, 2), (0.8, 5), (0.95, 8)]:
        assert alpha_for_tokens(tokens_per_iteration(a, k), k) == pytest.approx(a, abs=1e-7)
    assert np.isnan(alpha_for_tokens(7.0, 5))  # more than k+1 tokens per iteration is impossible


@pytest.fixture(scope="module")
def mistral_h200():
    return Scenario(
        target=load_model("mistral-7b"),
        draft=load_model("opt-125m"),
        params=make_params(load_gpu("h200")),
        prompt=128,
        gen=128,
    )


def test_k0_is_the_baseline(mistral_h200):
    res = prediction(mistral_h200, [1, 4], [0.8])
    base = res["rows"][0]
    assert base["k"] == 0 and base["speedup"] == 1.0 and base["energy_ratio"] == 1.0
    assert base["tokens_per_iteration"] == 1.0


def test_best_k_is_the_argmin_of_each_metric(mistral_h200):
    res = prediction(mistral_h200, range(1, 9), [0.6, 0.9])
    for alpha in (0.6, 0.9):
        rows = [r for r in res["rows"] if r["alpha"] == alpha]
        assert [r["k"] for r in rows if r["best_energy"]] == [min(rows, key=lambda r: r["energy_per_token_j"])["k"]]
        assert [r["k"] for r in rows if r["best_latency"]] == [min(rows, key=lambda r: r["time_per_token_s"])["k"]]
    best = res["best"]
    assert best["0.9"]["best_k_energy"] >= best["0.6"]["best_k_energy"]  # better drafts justify longer windows


def test_energy_breakdown_adds_up(mistral_h200):
    for row in prediction(mistral_h200, [0, 3], [0.7])["rows"]:
        assert sum(row["breakdown_j"].values()) == pytest.approx(row["energy_per_token_j"])
        assert row["floor_energy_per_token_j"] < row["breakdown_j"]["memory"]


def test_generation_average_equals_mean_over_contexts(mistral_h200):
    # costs are affine in context, so the 16-slice average must equal the cost at the mean context
    res = prediction(mistral_h200, [0], [0.5])
    mid = mistral_h200.prompt + mistral_h200.gen / 2
    single = per_token(*mistral_h200.iteration(0, mid), 1.0)
    assert res["rows"][0]["time_per_token_s"] == pytest.approx(float(single.time_s), rel=1e-3)


def test_required_alpha_reproduces_the_target_ratio(mistral_h200):
    res = prediction(mistral_h200, [4], [0.5], target_ratio=2.0)
    a = res["required_alpha"]["4"]
    check = prediction(mistral_h200, [4], [a])
    assert check["rows"][1]["energy_ratio"] == pytest.approx(2.0, rel=1e-3)


def test_near_ties_go_to_the_smaller_window():
    from shivam.sim.speculative import NEAR_TIE, best_window

    assert NEAR_TIE == 0.005
    ks = [0, 2, 4, 8]
    # k = 4 is least; k = 2 is 0.4 % above it: a tie, and the smaller window wins
    assert best_window(ks, [1.5, 1.004, 1.0, 1.2]) == 2
    # 0.6 % above: no tie
    assert best_window(ks, [1.5, 1.006, 1.0, 1.2]) == 4
    assert best_window(ks, [1.5, 1.004, 1.0, 1.2], near_tie=0.0) == 4
    assert best_window([0, 1], [1.0, 1.0]) == 0


def test_a_best_k_at_the_end_of_the_scan_is_flagged():
    import shivam

    # Mistral-7B on an L4 with an 80 % draft: energy per token still falls at k = 8 (docs: README's example)
    short = shivam.predict(model="mistral-7b", gpu="l4", k=range(1, 9), alpha=0.8)
    assert short.best_k() == 8 and any("largest k scanned (8)" in w for w in short.warnings)
    longer = shivam.predict(model="mistral-7b", gpu="l4", k=range(1, 21), alpha=0.8)
    assert 8 < longer.best_k() < 20 and not any("largest k scanned" in w for w in longer.warnings)
