"""Predictions for a scenario: a target model (and draft) on a GPU with an engine, batch, prompt and generation length.

`Scenario.grid` costs a whole (k, acceptance, context) grid in one vectorized pass, and with `Scenario.scan` a
leading axis of batch sizes too; `predictions` averages it over the generation (the context grows from the prompt to
prompt + generated tokens) and builds the rows `shivam predict` prints, one set per batch size.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np

from shivam.errors import ShivamError
from shivam.sim.roofline import (
    StepCost,
    StepInputs,
    held,
    host_wait,
    phase_cap_factors,
    power_capped,
    power_held,
    power_limited,
    step_cost,
    tensor_parallel_cost,
)
from shivam.sim.speculative import (
    alpha_for_tokens,
    best_window,
    per_token,
    tokens_per_iteration,
    tokens_per_iteration_beta,
    tokens_per_iteration_positional,
)
from shivam.sim.workload import (
    HEAD_OPS,
    acceptance_ops,
    activation_bytes,
    eager_dispatches,
    kv_cache_bytes,
    prefill_ops,
    step_ops,
    tensor_parallel_transfers,
    weight_bytes,
)
from shivam.specs import Dtypes, Params
from shivam.specs.model import ModelSpec

BREAKDOWN = (
    "e_static",
    "e_active",
    "e_floor",
    "e_fallback",
    "e_memory",
    "e_compute",
    "e_overhead",
    "e_pcie",
    "e_link",
    "e_idle",
)


@dataclass(frozen=True)
class Scenario:
    target: ModelSpec
    params: Params
    dtypes: Dtypes = field(default_factory=Dtypes)
    draft: ModelSpec | None = None
    # sequences decoded together; a scan over several sizes holds them as an array shaped (B, 1, 1, 1) (scan())
    batch: int | np.ndarray = 1
    prompt: int = 128
    gen: int = 128
    tp: int = 1  # tensor-parallel GPUs the target is split over
    draft_tp: int = 1  # of those, the GPUs the draft is split over (the others wait at static power)
    # how drafted tokens are verified: "greedy" (argmax comparison, costed by the sample operator) or "rejection"
    # (rejection sampling over the vocabulary at every verified position: workload.acceptance_ops)
    sampling: str = "greedy"
    # a ragged batch: each sequence's prompt length (batch = their count; decode steps run at their mean context,
    # which is exact for every count, each affine in context, and at the longest one's, which sets how long each
    # wave of a latency-bound attention kernel lasts: workload.step_ops)
    prompts: tuple[int, ...] | None = None
    # clock every step down to the board's power limit (power_limited); without it an iteration or a prefill above
    # the limit is held there, running longer at its power (iteration(): roofline.phase_cap_factors; prefill():
    # roofline.power_held)
    power_limit_steps: bool = False

    def scan(self, batches) -> Scenario:
        """The scenario at several batch sizes at once: every cost gains a leading axis of them (grid: (B, K, A, C);
        prefill: (B, 1, 1)). Whether each batch fits in memory is for the caller to check (memory_needed)."""
        if self.prompts is not None:
            raise ShivamError("a ragged batch (prompts) fixes the batch size: it cannot be scanned")
        return dataclasses.replace(self, batch=np.asarray(batches, dtype=int).reshape(-1, 1, 1, 1))

    # --- the three kinds of step ---------------------------------------------------------------------------
    def step_inputs(self, model: ModelSpec, new_tokens, context, gpus: int = 1) -> StepInputs:
        """The operators of a forward step of `model` (of one GPU's shard, split over `gpus`) and what the roofline
        needs besides them."""
        p = self.params
        # an eager engine's host cost follows the operators it dispatches, not the kernels of the workload
        eager = eager_dispatches(model, p.eager_dispatches) if p.dispatch_counts == "eager" else None
        longest = None
        if self.prompts is not None:  # every sequence advances together: the longest stays this far above the mean
            longest = np.asarray(context) + max(self.prompts) - sum(self.prompts) / len(self.prompts)
        ops = step_ops(model, self.batch, new_tokens, context, self.dtypes, p.kernels, gpus, longest)
        return StepInputs(ops, self.dtypes.compute, eager)

    def _step(self, model: ModelSpec, new_tokens, context, gpus: int = 1, idle_gpus: int = 0, extra_ops=()) -> StepCost:
        ops, dtype, eager, host_steps = self.step_inputs(model, new_tokens, context, gpus)
        cost = step_cost(ops + list(extra_ops), self.params, dtype, host_steps, dispatches=eager)
        if self.power_limit_steps:
            cost = power_limited(cost, self.params)
        if gpus == 1 and idle_gpus == 0:
            return cost
        transfers = tensor_parallel_transfers(model, self.batch, new_tokens, self.dtypes, self.params.kernels, gpus)
        return tensor_parallel_cost(cost, transfers, self.params, gpus, idle_gpus)

    def verify_step(self, k, context) -> StepCost:
        """Target forward over k+1 tokens (k=0: a plain decode step), split over tp GPUs; with rejection sampling,
        the sampler's pass over the vocabulary at every verified position."""
        extra = ()
        if self.sampling == "rejection":
            extra = acceptance_ops(self.target.vocab, self.batch, k, self.params.kernels)
        return self._step(self.target, np.asarray(k) + 1, context, self.tp, extra_ops=extra)

    def prefill(self, model: ModelSpec | None = None, energy_scale: float = 1.0) -> StepCost:
        """The prefill of every prompt of the batch by `model` (default the target; the draft on draft_tp GPUs while
        the others wait), one scalar cost: the engine's prefill steps (workload.prefill_ops: causal attention, its
        chunking and logits), their energy (times energy_scale, a card's factor) capped together at the board's power
        limit on the GPUs that run them (as an iteration's), or, with power_limit_steps, each clocked down to it. A
        ragged batch prefills its prompts one sequence at a time."""
        model = self.target if model is None else model
        gpus, idle = (self.tp, 0) if model is self.target else (self.draft_tp, self.tp - self.draft_tp)
        p = self.params
        batch, prompts = (1, self.prompts) if self.prompts is not None else (self.batch, (self.prompt,))
        total = host_wait(p, 0.0)
        per_batch = -1 if np.ndim(batch) else None  # a scan sums each batch size's steps (their last axis) apart
        for prompt in prompts:
            if prompt == 0:
                continue
            for n, step in self.prefill_inputs(model, batch, prompt, gpus):
                cost = step_cost(step.ops, p, step.compute_dtype, step.host_steps, dispatches=step.dispatches)
                if self.power_limit_steps:
                    cost = power_limited(cost, p)
                if gpus > 1 or idle:
                    head_only = step.host_steps == 0
                    transfers = (
                        [] if head_only else tensor_parallel_transfers(model, batch, n, self.dtypes, p.kernels, gpus)
                    )
                    cost = tensor_parallel_cost(cost, transfers, p, gpus, idle)
                total = total + cost.total(axis=per_batch)
        return power_held(power_capped(total, energy_scale), p, gpus)

    def prefill_inputs(self, model: ModelSpec, batch: int, prompt, gpus: int = 1) -> list[tuple[int, StepInputs]]:
        """The engine's prefill steps of `prompt` tokens at `batch` (workload.prefill_ops: causal attention, its
        chunking and logits), as (new tokens, step inputs); a step of the last position's logits alone (an engine
        that computes only those) adds no per-step host cost."""
        p = self.params
        eager = eager_dispatches(model, p.eager_dispatches) if p.dispatch_counts == "eager" else None
        out = []
        for n, ops in prefill_ops(model, batch, int(prompt), self.dtypes, p.kernels, gpus):
            head_only = all(op.name in HEAD_OPS for op in ops)
            out.append((n, StepInputs(ops, self.dtypes.compute, None if head_only else eager, 0 if head_only else 1)))
        return out

    def draft_step(self, context) -> StepCost:
        """Draft forward over one token, split over draft_tp GPUs while the target's other tp - draft_tp wait."""
        if self.draft is None:
            raise ShivamError("speculative decoding needs a draft model: pass --draft (e.g. --draft opt-125m)")
        return self._step(self.draft, 1, context, self.draft_tp, self.tp - self.draft_tp)

    def iteration(self, k, context) -> tuple[StepCost, StepCost, StepCost]:
        """(k draft steps, one verify step, one host sync), their energy capped together at the board's power limit
        (the board averages its power over many iterations, each iteration's verify against its drafts and sync as
        the limiter's window sees them: shivam.sim.roofline.phase_cap_factors; under tensor
        parallelism the tp GPUs' limits are pooled, though a draft on fewer GPUs loads them unevenly). Draft steps
        run at contexts c..c+k-1; costs are affine in context, so their mean context c + (k-1)/2 gives their exact
        total."""
        k = np.asarray(k, dtype=float)
        verify = self.verify_step(k.astype(int) if k.ndim == 0 else k, context)
        if self.draft is None:
            if np.any(k > 0):
                self.draft_step(context)  # raises the clear error
            draft = verify.scaled(0.0)
        else:
            draft = self.draft_step(context + np.maximum(k - 1, 0) / 2).scaled(k)
        sync = host_wait(self.params, self.params.per_iteration_s, self.tp)
        verify_factor, rest_factor = phase_cap_factors(verify, draft + sync, self.params, self.tp)
        return (
            held(draft, rest_factor, self.params),
            held(verify, verify_factor, self.params),
            held(sync, rest_factor, self.params),
        )

    def contexts(self, points: int = 16) -> np.ndarray:
        """Midpoints of `points` equal slices of the generation: the context each slice's tokens see on average."""
        m = max(1, min(points, self.gen))
        return self.prompt + self.gen * (np.arange(m) + 0.5) / m

    def grid(self, ks, taus, contexts) -> dict[str, np.ndarray]:
        """Per-token time, energy and breakdown on a (k, acceptance, context) grid.

        ks: shape (K,); taus: tokens per iteration per sequence, shape (K, A); contexts: shape (C,)."""
        ks = np.asarray(ks, dtype=float)[:, None, None]
        c = np.asarray(contexts, dtype=float)[None, None, :]
        draft, verify, sync = self.iteration(ks, c)
        tok = per_token(draft, verify, sync, self.batch * np.asarray(taus, dtype=float)[:, :, None])
        out = {
            "time_per_token_s": tok.time_s,
            "energy_per_token_j": tok.energy_j,
            "floor_energy_per_token_j": tok.dram_bytes * self.params.dram_floor_j_per_byte,
        }
        for name in BREAKDOWN:
            out[name] = getattr(tok, name)
        return out

    # --- capacity ------------------------------------------------------------------------------------------
    def memory_needed(self, k_max: int) -> float:
        """Bytes the most loaded GPU holds: its shard of the target's weights and KV cache, the largest buffers of a
        verify step of k_max + 1 tokens, and the draft's weights and KV cache (its shard; the first GPU holds a draft
        that is not split, beside its shard of the target)."""
        tokens = self.prompt + self.gen + k_max + 1
        dt, tp = self.dtypes, self.tp
        need = (
            weight_bytes(self.target, dt, tp)
            + kv_cache_bytes(self.target, dt, self.batch, tokens, tp)
            + activation_bytes(self.target, dt, self.batch * (k_max + 1), self.params.kernels, tp)
        )
        if self.draft is not None and k_max > 0:
            d = self.draft_tp
            need += weight_bytes(self.draft, dt, d) + kv_cache_bytes(self.draft, dt, self.batch, tokens, d)
        return need


def acceptance_taus(ks, alphas=None, positional=None, concentration=None) -> tuple[list[str], np.ndarray]:
    """Labels and tokens-per-iteration per sequence (K, A) for scalar alphas or one per-position acceptance vector;
    with a concentration, each alpha is the mean of a Beta distribution of the sequences' acceptance rates."""
    ks = list(ks)
    if positional is not None:
        taus = np.array([[tokens_per_iteration_positional(positional, k)] for k in ks])
        return ["[" + ",".join(f"{a:g}" for a in positional) + "]"], taus
    alphas = list(alphas)
    a, k = np.array(alphas)[None, :], np.array(ks)[:, None]
    taus = tokens_per_iteration(a, k) if concentration is None else tokens_per_iteration_beta(a, concentration, k)
    return [f"{a:g}" for a in alphas], taus


def request_metrics(batch: int, gen: int, k: int, tau: float, time_per_token_s: float, energy_per_token_j: float,
                    prefill: dict) -> dict:  # fmt: skip
    """A request's figures (per sequence of the batch), named as vLLM's benchmarks name them: the prefill
    produces the first output token (TTFT = the batch's prefill, the draft's too when speculating), then gen - 1
    decoded tokens at TPOT each; ITL is the time between two deliveries of tokens (one iteration, tau tokens per
    sequence); energy per output token includes the prefill, as ML.ENERGY reports it. `prefill` holds the batch's
    prefill time and energy, the target's and (None without a draft) the draft's: {"target": (s, J), "draft": ...}."""
    (t_pre, e_pre), draft = prefill["target"], prefill["draft"]
    if k and draft is not None:
        t_pre, e_pre = t_pre + draft[0], e_pre + draft[1]
    e_pre = e_pre / batch
    tpot = batch * time_per_token_s  # one sequence's tokens arrive b times slower than the batch's
    e_req = e_pre + (gen - 1) * energy_per_token_j
    return {
        "prefill_time_s": t_pre,
        "prefill_energy_j": e_pre,
        "ttft_s": t_pre,
        "tpot_s": tpot,
        "itl_s": tpot * tau,
        "time_per_request_s": t_pre + (gen - 1) * tpot,
        "energy_per_request_j": e_req,
        "energy_per_output_token_j": e_req / gen,
    }


def prediction(
    scn: Scenario, ks, alphas=None, positional=None, target_ratio: float | None = None, concentration=None
) -> dict:
    """Rows for k = 0 (baseline) and each requested k, for each acceptance, averaged over the generation."""
    return predictions(scn, [scn.batch], ks, alphas, positional, concentration, target_ratio)[0]


def predictions(
    scn: Scenario, batches, ks, alphas=None, positional=None, concentration=None, target_ratio: float | None = None
) -> list[dict]:
    """prediction's rows at each of `batches`, costed in one vectorized pass over them (Scenario.scan; the
    scenario's own batch is not used); with target_ratio, the first batch's result holds required_alpha."""
    ks = sorted({0, *ks})
    labels, taus = acceptance_taus(ks, alphas, positional, concentration)
    batches = [int(b) for b in batches]
    many = scn.scan(batches) if scn.prompts is None else scn  # a ragged batch is one batch of its own size

    def per_batch(values):  # a figure of the scan as one value per batch size
        return np.broadcast_to(np.ravel(values), (len(batches),))

    pre = {"target": many.prefill(), "draft": many.prefill(many.draft) if many.draft is not None else None}
    pre = {name: None if c is None else (per_batch(c.time_s), per_batch(c.energy_j)) for name, c in pre.items()}
    contexts = scn.contexts()
    g = {name: arr.mean(axis=-1) for name, arr in many.grid(ks, taus, contexts).items()}
    g = {name: np.broadcast_to(arr, (len(batches), *arr.shape[-2:])) for name, arr in g.items()}  # (B, K, A)
    mid = float(np.mean(contexts))
    bounds_verify = {k: per_batch(many.verify_step(k, mid).bound) for k in ks}
    draft_bound = per_batch(many.draft_step(mid).bound) if many.draft is not None else None
    out = []
    for j, b in enumerate(batches):
        t, e = g["time_per_token_s"][j], g["energy_per_token_j"][j]
        prefill = {name: None if v is None else (float(v[0][j]), float(v[1][j])) for name, v in pre.items()}
        rows, best = [], {}
        for a, label in enumerate(labels):
            e_k, t_k = e[:, a], t[:, a]
            best_e, best_t = best_window(ks, e_k), best_window(ks, t_k)
            best[label] = {"best_k_energy": best_e, "best_k_latency": best_t}
            for i, k in enumerate(ks):
                rows.append(
                    {
                        "k": k,
                        "alpha": label if positional is not None else float(label),
                        "tokens_per_iteration": float(taus[i, a]),
                        "time_per_token_s": float(t_k[i]),
                        "energy_per_token_j": float(e_k[i]),
                        "speedup": float(t_k[0] / t_k[i]),
                        "energy_ratio": float(e_k[0] / e_k[i]),
                        "energy_saving": float(1 - e_k[i] / e_k[0]),
                        "floor_energy_per_token_j": float(g["floor_energy_per_token_j"][j][i, a]),
                        "breakdown_j": {name[2:]: float(g[name][j][i, a]) for name in BREAKDOWN},
                        "verify_bound": str(bounds_verify[k][j]),
                        "draft_bound": str(draft_bound[j]) if k and draft_bound is not None else None,
                        "best_energy": k == best_e,
                        "best_latency": k == best_t,
                        **request_metrics(b, scn.gen, k, float(taus[i, a]), float(t_k[i]), float(e_k[i]), prefill),
                    }
                )
        out.append({"rows": rows, "best": best, "contexts_averaged": [float(c) for c in contexts]})
    if target_ratio is not None:
        first = scn if scn.prompts is not None else dataclasses.replace(scn, batch=batches[0])
        out[0]["required_alpha"] = required_alpha(first, [k for k in ks if k > 0], target_ratio)
    return out


def required_alpha(scn: Scenario, ks, ratio: float) -> dict:
    """The i.i.d. acceptance rate at which speculative decoding at each k spends `ratio` times less energy per token
    than standard decoding. Energy per token is E_iter(k) / (batch * tau(alpha)); E_iter hardly depends on alpha, so
    tau_needed = ratio * E_iter(k) / (batch * E_baseline), inverted for alpha. None where no alpha <= 1 reaches it."""
    c = scn.contexts()
    e0 = per_token(*scn.iteration(0, c), scn.batch).energy_j.mean()
    out = {}
    for k in ks:
        e_iter = sum(s.energy_j for s in scn.iteration(k, c)).mean()
        a = float(alpha_for_tokens(ratio * e_iter / (scn.batch * e0), k))
        out[str(k)] = None if np.isnan(a) else a
    return out
