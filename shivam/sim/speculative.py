"""Speculative decoding arithmetic (Leviathan et al. 2023; Chen et al. 2023).

One iteration = k draft steps (draft model, 1 token each) + one verify step (target model, k+1 tokens) + one host
synchronization that accepts or rejects the drafted tokens. It yields tau tokens per sequence:
    i.i.d. acceptance a:        tau = (1 - a^(k+1)) / (1 - a)          (k+1 when a = 1; includes the bonus token)
    per-position a_1..a_k:      tau = 1 + sum_{i=1..k} prod_{j<=i} a_j
k = 0 is standard decoding: one decode step and one synchronization per token, tau = 1.

In a batch, every sequence accepts independently, so an iteration of b sequences yields b x E[tau] tokens. When the
acceptance rate differs between sequences (prompts of different difficulty), E[tau] is the mean of tau over the
distribution of alpha, which is not tau of the mean alpha: tau is convex in alpha, so for k >= 2 a spread of
acceptance over the sequences yields more than tau(mean) (Jensen):
    alpha ~ Beta(m c, (1 - m) c):   E[tau] = sum_{j=0..k} E[alpha^j],  E[alpha^j] = prod_{i<j} (m c + i) / (c + i)
    alpha from a discrete mix:      E[tau] = sum_i w_i tau(alpha_i)
(m the mean acceptance rate, c the concentration: a large c puts every sequence at m).
"""

from __future__ import annotations

import numpy as np

from shivam.errors import ShivamError
from shivam.sim.roofline import StepCost

# Windows whose predicted energy (or time) per token is within this fraction of the least are a tie, and the smallest
# of them is the best k. Were the model exact, the pick would cost at most 0.5 % over the least, half the 1 % regret
# the best-k check allows (shivam.calibrate.evaluate.BEST_K_REGRET), leaving the other half to the model's error;
# near a flat optimum the smaller window drafts less for a difference the model cannot resolve, and loses less when
# acceptance falls below the assumed rate (the best window shrinks with alpha).
NEAR_TIE = 0.005


def best_window(ks, per_token, near_tie: float = NEAR_TIE) -> int:
    """The best k: the smallest window whose figure per token (energy or time, one per k of `ks`) is within
    `near_tie` of the least."""
    values = np.asarray(per_token, dtype=float)
    finite = np.isfinite(values)
    if not finite.any():
        return list(ks)[0]
    least = values[finite].min()
    return min(k for k, v, ok in zip(ks, values, finite) if ok and v <= least + near_tie * abs(least))


def tokens_per_iteration(alpha, k):
    """Expected tokens per iteration for i.i.d. acceptance probability alpha and window k (broadcasts)."""
    a = np.asarray(alpha, dtype=float)
    k = np.asarray(k, dtype=float)
    safe = np.where(np.isclose(a, 1.0), 0.5, a)
    return np.where(np.isclose(a, 1.0), k + 1.0, (1.0 - safe ** (k + 1.0)) / (1.0 - safe))


def tokens_per_iteration_positional(acceptance, k: int) -> float:
    """Expected tokens per iteration when draft position i is accepted with probability acceptance[i-1], given that
    every earlier position was accepted."""
    acc = np.asarray(acceptance, dtype=float)
    if k > len(acc):
        raise ShivamError(
            f"the per-position acceptance vector has {len(acc)} values but k goes up to {k}; give at least {k} values"
        )
    return float(1.0 + np.cumprod(acc[:k]).sum())


def per_token(draft: StepCost, verify: StepCost, sync: StepCost, tokens_per_iter) -> StepCost:
    """Cost per generated token of an iteration: (k draft steps + verify + sync) / tokens.

    `draft` must already hold all k draft steps; `tokens_per_iter` counts tokens for the whole batch."""
    return (draft + verify + sync).scaled(1.0 / tokens_per_iter)


def alpha_for_tokens(tau_needed, k, tol: float = 1e-9):
    """Inverse of tokens_per_iteration in alpha (monotonic from 1 at a=0 to k+1 at a=1), by bisection so that it
    broadcasts. NaN where tau_needed is unreachable (> k+1) and 0 where it is already met (<= 1)."""
    tau_needed, k = np.broadcast_arrays(np.asarray(tau_needed, float), np.asarray(k, float))
    lo, hi = np.zeros_like(tau_needed), np.ones_like(tau_needed)
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        low = tokens_per_iteration(mid, k) < tau_needed
        lo, hi = np.where(low, mid, lo), np.where(low, hi, mid)
        if np.all(hi - lo < tol):
            break
    out = 0.5 * (lo + hi)
    out = np.where(tau_needed <= 1.0, 0.0, out)
    return np.where(tau_needed > k + 1.0 + 1e-12, np.nan, out)


def tokens_per_iteration_beta(mean, concentration, k):
    """E[tau] when each sequence's acceptance rate is drawn from a Beta distribution of this mean and concentration
    (a = mean x concentration, b = (1 - mean) x concentration): the sum over j = 0..k of the Beta's moments
    E[alpha^j] = prod_{i<j} (a + i) / (a + b + i). Broadcasts over mean and k."""
    m = np.asarray(mean, dtype=float)
    k = np.asarray(k)
    a, c = m * concentration, float(concentration)
    m, k = np.broadcast_arrays(m, k)
    a = np.broadcast_to(a, m.shape)
    total, moment = np.ones(m.shape), np.ones(m.shape)
    for j in range(1, int(np.max(k)) + 1 if k.size else 1):
        moment = moment * (a + j - 1) / (c + j - 1)
        total = total + np.where(k >= j, moment, 0.0)
    return total


def tokens_per_iteration_mixture(alphas, weights, k):
    """E[tau] when a fraction weights[i] of the sequences accepts at alphas[i] (weights are normalized)."""
    w = np.asarray(weights, dtype=float)
    if w.ndim != 1 or len(w) != len(alphas) or np.any(w < 0) or w.sum() <= 0:
        raise ShivamError("an acceptance mixture needs one non-negative weight per alpha, not all zero")
    w = w / w.sum()
    return sum(wi * tokens_per_iteration(a, k) for a, wi in zip(alphas, w))
