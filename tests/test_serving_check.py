"""The serving check (shivam.calibrate.serving): ratios of standard to speculative decoding per output token, their
side of 1, and crossover batches, against hand calculations on made-up prediction rows."""

import math

import pytest

from shivam.calibrate.evaluate import best_k_check
from shivam.calibrate.serving import crossover_of, serving_check, speculation_ratios


def row(k, batch, e_meas, e_pred, t_meas=1.0, t_pred=1.0, spread=0.0, alpha="0.8", context=1024):
    return {
        "label": f"t+d k={k} b={batch}",
        "group": "t",
        "draft": "d",
        "kind": "spec",
        "k": k,
        "alpha": "0.0" if k == 0 else alpha,
        "batch": batch,
        "context": context,
        "contexts": None,
        "card": "c",
        "energy_tok_meas": e_meas,
        "energy_tok_pred": e_pred,
        "time_tok_meas": t_meas,
        "time_tok_pred": t_pred,
        "energy_spread": spread,
        "time_spread": spread,
    }


def test_ratio_is_standard_over_speculative_per_token_and_pairs_by_batch():
    rows = [row(0, 1, 2.0, 2.2), row(4, 1, 1.0, 1.0), row(0, 8, 1.0, 1.0), row(4, 8, 0.8, 0.5)]
    ratios = {r["batch"]: r for r in speculation_ratios(rows)}
    assert ratios[1]["energy_ratio_meas"] == pytest.approx(2.0)
    assert ratios[1]["energy_ratio_pred"] == pytest.approx(2.2)
    assert ratios[1]["energy_ratio_err"] == pytest.approx(0.1)
    assert ratios[8]["energy_ratio_meas"] == pytest.approx(1.25) and ratios[8]["energy_ratio_pred"] == pytest.approx(2)


def test_no_baseline_no_ratio():
    assert speculation_ratios([row(4, 1, 1.0, 1.0)]) == []
    assert serving_check([row(4, 1, 1.0, 1.0)]) is None


def test_side_of_one_only_counts_where_the_measured_ratio_is_beyond_twice_its_spread():
    # measured 1.05 with 1 % + 1 % spread (of the ratio, 2.1 %): 5 % > 2 x 2.1 %: away; predicted 0.9: wrong side
    far = speculation_ratios([row(0, 1, 1.05, 0.9, spread=0.01), row(2, 1, 1.0, 1.0, spread=0.01)])[0]
    assert far["energy_right_side"] is False
    # measured 1.03 with 2 % + 2 % spread: within twice the spread of 1, so no side is asked of the prediction
    near = speculation_ratios([row(0, 1, 1.03, 0.9, spread=0.02), row(2, 1, 1.0, 1.0, spread=0.02)])[0]
    assert near["energy_right_side"] is None


def test_crossover_interpolates_in_log_batch():
    # ratio 1.2 at batch 4, 0.8 at 16: halfway in ratio is halfway in log batch, sqrt(4 * 16) = 8
    assert crossover_of([1, 4, 16], [1.5, 1.2, 0.8]) == pytest.approx(8.0)
    assert crossover_of([1, 4, 16], [0.9, 1.1, 0.8]) == "below"
    assert crossover_of([1, 4, 16], [1.5, 1.2, 1.01]) is None
    # exactly 1 at batch 4 then below: the crossing is at 4 itself
    assert crossover_of([1, 4, 16], [1.5, 1.0, 0.5]) == pytest.approx(4.0)


def test_crossover_check_agreement_within_the_tolerance():
    def series(pred_at_16):
        rows = []
        for b, meas, pred in ((1, 0.5, 0.5), (4, 0.8, 0.8), (16, 1.25, 1 / pred_at_16)):
            rows += [row(0, b, 1.0, 1.0), row(2, b, meas, pred)]
        return serving_check(rows)["crossovers"][0]["energy"]

    # measured: 2.0 at b=1 (1/0.5), 1.25 at 4, 0.8 at 16 -> crossing at 4 * 4**(0.25 / 0.45)
    c = series(0.8)
    assert c["measured"] == pytest.approx(4 * 4 ** (0.25 / 0.45)) and c["ok"]
    # predicted ratio stays at 1.05 at batch 16: no predicted crossing, the measured one far inside the range
    c = series(1.05)
    assert c["predicted"] is None and not c["ok"]


def test_crossover_just_past_the_range_is_not_a_miss():
    rows = []
    for b, meas, pred in ((4, 0.8, 0.8), (16, 1.0 / 0.98, 0.99)):  # measured crosses just below 16, predicted never
        rows += [row(0, b, 1.0, 1.0), row(2, b, meas, pred)]
    c = serving_check(rows)["crossovers"][0]["energy"]
    assert isinstance(c["measured"], float) and 12.3 < c["measured"] < 16 and c["predicted"] is None and c["ok"]


def test_summary_by_batch():
    rows = [row(0, 1, 2.0, 2.2), row(4, 1, 1.0, 1.0), row(0, 8, 1.0, 1.0), row(4, 8, 1.0, 0.95)]
    s = serving_check(rows)["summary"]["energy"]
    assert s["by_batch"]["1"]["max"] == pytest.approx(0.1)
    assert s["by_batch"]["8"]["max"] == pytest.approx(1 / 0.95 - 1)
    assert s["errors"]["n"] == 2 and math.isclose(s["errors"]["max"], 0.1)


def test_best_k_compares_cards_on_one_scale():
    # k = 0 on a card drawing 10 % more than typical, k = 4 on a typical one: raw, k = 4 looks 12 % cheaper; on one
    # scale (each divided by its card's factor) standard decoding is the cheaper
    rows = [
        dict(row(0, 1, 1.1, 1.1), card="hot", card_factor=1.1),
        dict(row(4, 1, 1.02, 1.02), card="typical", card_factor=1.0),
    ]
    (b,) = best_k_check(rows)
    assert b["best_k_measured"] == 0 and b["best_k_predicted"] == 0


def test_best_k_counts_the_tokens_expected_at_alpha_not_the_tokens_drawn():
    # the same calls' energy: k = 4 costs 3.36 J per call and brings 3.3616 tokens expected at alpha 0.8
    # ((1 - 0.8^5) / (1 - 0.8)): 0.9995 J per token; k = 5 costs 3.95 J for 3.6893 expected: 1.0707 J per token. A
    # lucky run of draws gave k = 5 4.0 tokens per call, which per token drawn (0.9875 J) would make it look best
    def spec(k, e_meas, e_pred, expected, drawn):
        return dict(
            row(k, 1, e_meas / drawn, e_pred / drawn),
            energy_meas=e_meas,
            energy_pred=e_pred,
            expected_tokens=expected,
            tokens=drawn,
        )

    rows = [spec(0, 2.0, 2.0, 1.0, 1.0), spec(4, 3.36, 3.36, 3.3616, 3.3616), spec(5, 3.95, 3.95, 3.68928, 4.0)]
    (b,) = best_k_check(rows)
    assert b["best_k_measured"] == 4 and b["best_k_predicted"] == 4 and b["energy_gap"] == 0.0


def test_best_k_averages_the_measurements_of_one_k():
    # k = 4 measured twice (1.00 and 1.04: mean 1.02), k = 5 once (1.01): per k, k = 5 is the least; the predicted k = 4
    # then costs 1.02 / 1.01 - 1 = 0.99 % more, within the 1 % bound (a min over rows would call k = 4 best at 1.00)
    rows = [row(0, 1, 2.0, 2.0), row(4, 1, 1.00, 0.90), row(4, 1, 1.04, 0.90), row(5, 1, 1.01, 0.95)]
    (b,) = best_k_check(rows)
    assert b["best_k_measured"] == 5 and b["best_k_predicted"] == 4
    assert b["energy_gap"] == pytest.approx(1.02 / 1.01 - 1) and b["ok"]


def test_best_k_is_per_batch():
    # at batch 1 k=4 is cheapest, at batch 64 standard decoding: one best k per batch, not one over both
    rows = [row(0, 1, 2.0, 2.0), row(4, 1, 1.0, 1.0), row(0, 64, 0.2, 0.2), row(4, 64, 0.3, 0.3)]
    out = {b["batch"]: b for b in best_k_check(rows)}
    assert out[1]["best_k_measured"] == 4 and out[64]["best_k_measured"] == 0
    assert all(b["ok"] for b in out.values())


def test_a_ragged_batch_pairs_with_its_own_baseline_and_cards_make_their_own_series():
    ragged = [
        dict(row(k, 8, e, e), contexts=[256, 512, 1024, 2048, 4096, 256, 512, 1024]) for k, e in ((0, 1.0), (4, 0.5))
    ]
    plain = [row(0, 8, 1.0, 1.0), row(4, 8, 0.8, 0.8)]
    ratios = {r["context"]: r for r in speculation_ratios(ragged + plain)}
    assert ratios["ragged"]["energy_ratio_meas"] == pytest.approx(2.0)  # with its own k = 0, not the plain batch's
    assert ratios[1024]["energy_ratio_meas"] == pytest.approx(1.25)
    # two cards' draws of the ratio at batch 1 (1.05 and 0.98), then 1.1 and 0.9 at 4 and 8: the geometric mean at
    # batch 1 (1.014) stays above 1, so the only crossing is between 4 and 8, not one made by the two cards
    rows = [dict(r, card="c1") for r in (row(0, 1, 1.05, 1.05), row(2, 1, 1.0, 1.0))]
    rows += [dict(r, card="c2") for r in (row(0, 1, 0.98, 0.98), row(2, 1, 1.0, 1.0))]
    rows += [
        dict(r, card="c2") for r in (row(0, 4, 1.1, 1.1), row(2, 4, 1.0, 1.0), row(0, 8, 0.9, 0.9), row(2, 8, 1.0, 1.0))
    ]
    (c,) = serving_check(rows)["crossovers"]
    assert c["batches"] == [1, 4, 8]
    assert c["energy"]["measured"] == pytest.approx(4 * 2 ** (0.1 / 0.2))


def test_an_unmeasured_spread_asks_no_side_of_one():
    r = speculation_ratios([row(0, 1, 1.5, 0.9), dict(row(2, 1, 1.0, 1.0), energy_spread=None)])[0]
    assert r["energy_ratio_spread"] is None and r["energy_right_side"] is None
