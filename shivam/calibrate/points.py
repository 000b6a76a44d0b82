"""Measurement points: the one workload definition that both the validator runs and the simulator predicts.

A Point names a workload (a forward step, a speculative iteration, a transformers generate() call, a stage-I
reload/reuse sequence) with every shape that matters. `predict_point` costs it with shivam's model; the engines in
shivam.validate.engines build and run the same thing on a GPU. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import fields
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field, model_serializer

from shivam.errors import ShivamError
from shivam.sim.hostcopy import sequence_weights, unit_steps
from shivam.sim.roofline import (
    StepCost,
    StepInputs,
    StepSet,
    energy_features,
    energy_not_fitted,
    held,
    host_wait,
    phase_cap_factors,
    phases_held,
    power_capped,
    step_cost,
)
from shivam.sim.scenario import Scenario
from shivam.sim.speculative import tokens_per_iteration
from shivam.specs import Dtypes, Params
from shivam.specs.engine import load_engine
from shivam.specs.model import load_model


class Point(BaseModel, frozen=True):
    suite: str
    engine: str = "graph"  # a bundled engine profile (shivam engines)
    kind: Literal["step", "spec", "generate", "stage1", "prefill"]
    model: str | None = None
    draft: str | None = None
    batch: int = Field(1, ge=1, le=1_000_000)
    new_tokens: int = Field(1, ge=1, le=1_000_000)  # step: tokens per sequence in the forward (1 decode, k+1 verify)
    context: int = Field(512, ge=0, le=10_000_000)  # step/spec: tokens already in the KV cache
    k: int = Field(0, ge=0, le=64)
    alpha: float | None = Field(None, ge=0, le=1)
    prompt: int = Field(0, ge=0, le=10_000_000)  # generate
    gen: int = Field(0, ge=0, le=10_000_000)  # generate
    weights_dtype: str = "bf16"
    act_dtype: str | None = None
    kv_dtype: str = "bf16"
    size: int = Field(0, ge=0, le=65_536)  # stage1: n of the n x n weights
    tokens: int = Field(0, ge=0, le=1_000_000)  # stage1: activation rows
    reuse: int = Field(0, ge=0, le=100_000)  # stage1
    reload: bool = False  # stage1
    seed: int = 0
    # spec: a ragged batch, each sequence's context (batch = their count; context is ignored)
    contexts: tuple[int, ...] | None = None

    @model_serializer(mode="wrap")
    def _dump(self, handler):
        """A field added after points were recorded is left out at its default, so that recorded points (and their
        ids) read the same."""
        out = handler(self)
        if out.get("contexts", 0) is None:
            del out["contexts"]
        return out

    def check(self) -> None:
        """Refuse a point the model cannot run: a dtype it does not know, a context beyond its models' positions."""
        self.dtypes  # noqa: B018 - raises on an unknown dtype
        load_engine(self.engine)  # raises on an unknown engine
        if self.kind == "stage1":
            if self.size < 1 or self.tokens < 1 or self.reuse < 1:
                raise ShivamError(f"{self.label()}: a stage1 point needs size, tokens and reuse of at least 1")
            return
        if not self.model:
            raise ShivamError(f"a {self.kind} point names no model")
        if self.kind == "spec" and (self.draft is None or self.alpha is None):
            raise ShivamError(f"{self.label()}: a spec point needs a draft and an alpha")
        if self.kind == "generate" and self.gen < 1:
            raise ShivamError(f"{self.label()}: a generate point needs gen of at least 1")
        if self.kind == "prefill" and self.prompt < 1:
            raise ShivamError(f"{self.label()}: a prefill point needs a prompt of at least 1 token")
        if self.contexts is not None and (self.kind != "spec" or len(self.contexts) != self.batch):
            raise ShivamError(
                f"{self.label()}: per-sequence contexts are for spec points, one per sequence of the batch"
            )
        context = max(self.contexts) if self.contexts else self.context
        tokens = {
            "step": self.context + self.new_tokens,
            "spec": context + self.k + 1,
            "generate": self.prompt + self.gen,
            "prefill": self.prompt,
        }[self.kind]
        for ref in (self.model, self.draft) if self.draft else (self.model,):
            m = load_model(ref)
            if tokens > m.max_context:
                raise ShivamError(
                    f"{self.label()}: {tokens:,} tokens exceed {m.name}'s max_position_embeddings {m.max_context:,}"
                )

    @property
    def id(self) -> str:
        """Stable identity for resuming: the same point always has the same id."""
        blob = json.dumps(self.model_dump(), sort_keys=True)
        return hashlib.sha1(blob.encode()).hexdigest()[:16]

    @property
    def dtypes(self) -> Dtypes:
        return Dtypes.of(self.weights_dtype, self.act_dtype, self.kv_dtype)

    def label(self) -> str:
        if self.kind == "step":
            dt = (
                ""
                if self.weights_dtype == "bf16" and not self.act_dtype
                else f" {self.weights_dtype}/{self.act_dtype or self.weights_dtype}"
            )
            return f"{self.model} step n={self.new_tokens} b={self.batch} c={self.context}{dt}"
        if self.kind == "spec":
            c = f"c={min(self.contexts)}-{max(self.contexts)}" if self.contexts else f"c={self.context}"
            return f"{self.model}+{self.draft} k={self.k} a={self.alpha} b={self.batch} {c}"
        if self.kind == "prefill":
            return f"{self.model} prefill {self.prompt} b={self.batch}"
        if self.kind == "generate":
            return f"hf generate {self.model}{'+' + self.draft if self.draft else ''} {self.prompt}+{self.gen}"
        return f"stage1 {'reload' if self.reload else 'reuse'} r={self.reuse} n={self.size}"


def scenario(point: Point, params: Params) -> Scenario:
    return Scenario(
        target=load_model(point.model),
        params=params,
        dtypes=point.dtypes,
        draft=load_model(point.draft) if point.draft else None,
        batch=point.batch,
        prompt=point.prompt or _context(point),
        gen=max(point.gen, 1),
        prompts=tuple(point.contexts) if point.contexts else None,  # a ragged batch: each sequence's context
    )


def _context(point: Point) -> float:
    """The context a point's steps run at: a ragged batch's mean (every count is affine in context)."""
    return sum(point.contexts) / len(point.contexts) if point.contexts else point.context


def point_steps(point: Point, params: Params) -> tuple[list[tuple[float, StepInputs]], float, StepInputs | None]:
    """The steps one measured call of this point runs, with how many times each runs, the host syncs it waits for,
    and the step whose bound names the point's. The same calls the engines time: a step is one forward + host
    readback; a spec call is one iteration (k draft steps, verify of k+1, sync); a generate call is prefill + gen-1
    synced decode steps; stage1 is the whole reload or reuse sequence."""
    if point.kind == "stage1":
        copy_gemm, gemm = unit_steps(params, point.size, point.tokens, point.dtypes)
        w_copy, w_gemm = sequence_weights(point.reuse, point.reload)
        return [(float(w_copy), copy_gemm), (float(w_gemm), gemm)], 0.0, None
    scn = scenario(point, params)
    if point.kind == "step":
        verify = scn.step_inputs(scn.target, point.new_tokens, point.context)
        return [(1.0, verify)], 0.0, verify
    if point.kind == "prefill":  # one step per chunk of the engine's, at batch b, context 0: Scenario.prefill's
        steps = [(1.0, step) for _, step in scn.prefill_inputs(scn.target, point.batch, point.prompt)]
        return steps, 0.0, steps[0][1]
    if point.kind == "spec":
        c = _context(point)
        verify = scn.step_inputs(scn.target, point.k + 1, c)
        if point.k == 0:
            return [(1.0, verify)], 1.0, verify
        # k draft steps at contexts c..c+k-1: costs are affine in context, so k at the mean context are exact
        draft = scn.step_inputs(scn.draft, 1, c + (point.k - 1) / 2)
        return [(1.0, verify), (float(point.k), draft)], 1.0, verify
    # generate: prefill of the prompt, then gen-1 decode steps at contexts prompt .. prompt+gen-2, each synced
    prefill = scn.step_inputs(scn.target, point.prompt, 0)
    decode = scn.step_inputs(scn.target, 1, point.prompt + np.arange(point.gen - 1))
    return [(1.0, prefill), (1.0, decode)], float(point.gen - 1), scn.step_inputs(scn.target, 1, point.prompt)


def limiter_phase(point: Point, step: int) -> int:
    """Which of the two phases the power limiter holds apart (roofline.phase_cap_factors) the point's step `step`
    (its index in point_steps; -1: its host syncs) belongs to: a speculative iteration's verify (its first step) is
    phase 0, its drafts and syncs phase 1 (Scenario.iteration); any other call is one phase, 0."""
    return int(point.kind == "spec" and step != 0)


def point_cost(point: Point, params: Params, energy_scale: float = 1.0) -> tuple[StepCost, float, str]:
    """(cost of one measured call, expected tokens per call, bound of its main step). The call is held at the board's
    power limit as Scenario holds an iteration (its verify against its drafts and sync: phase_cap_factors) and a
    prefill (as a whole); energy_scale (a card's factor) scales what the card draws before the hold, since the limit
    holds whatever the card."""
    if point.kind == "prefill":
        scn = scenario(point, params)
        cost = dataclasses.replace(scn, prompt=point.prompt).prefill(energy_scale=energy_scale)
        return cost, float(point.batch * point.prompt), cost.bound
    steps, syncs, main = point_steps(point, params)
    # held as the power limiter sees the call (limiter_phase)
    phases = [host_wait(params, 0.0), host_wait(params, 0.0)]
    phases[limiter_phase(point, -1)] = host_wait(params, syncs * params.per_iteration_s)
    for i, (w, (ops, dtype, eager, host_steps)) in enumerate(steps):
        if w:
            cost = step_cost(ops, params, dtype, host_steps, dispatches=eager).total().scaled(w)
            phases[limiter_phase(point, i)] += cost
    first, rest = phases_held(*(power_capped(c, energy_scale) for c in phases), params)
    total = first + rest
    if main is None:
        return total, 0.0, total.bound
    bound = step_cost(main.ops, params, main.compute_dtype, main.host_steps, dispatches=main.dispatches).bound
    if point.kind == "step":
        tokens = float(point.batch * point.new_tokens)
    elif point.kind == "spec":
        tokens = point.batch * float(tokens_per_iteration(point.alpha, point.k))
    else:
        tokens = float(point.batch * point.gen)
    return total, tokens, bound


class PointSet:
    """Many points costed in one vectorized pass per parameter set (shivam.sim.roofline.StepSet), for the fit.
    Built once from the parameters the data are fitted from; the fit moves only what StepSet re-evaluates."""

    def __init__(self, points: list[Point], params: Params):
        steps, syncs, owner, phase = [], np.zeros(len(points)), [], []
        for i, point in enumerate(points):
            point_steps_, syncs[i], _ = point_steps(point, params)
            for j, (w, inputs) in enumerate(point_steps_):
                if w:
                    steps.append((len(owner), w, inputs))  # each step its own row, summed into its point below
                    owner.append(i)
                    phase.append(limiter_phase(point, j))
        self._set, self._syncs = StepSet(steps, len(owner)), syncs
        self._owner, self._points = np.array(owner, dtype=int), len(points)
        self._phase = np.array(phase, dtype=int)
        self._sync_phase = np.array([limiter_phase(p, -1) for p in points])

    @property
    def has_latency_bound_kernels(self) -> bool:
        """Whether any point runs a kernel held at its thread blocks' latency floor (what attention_cta_Bps sets)."""
        return self._set.has_block_bytes

    @property
    def has_latency_bound_kernels_of_unknown_occupancy(self) -> bool:
        """Whether any such kernel streams at the per-block rate attention_cta_Bps (its occupancy not known)."""
        return self._set.has_block_bytes_of_unknown_occupancy

    @property
    def has_occupancy(self) -> bool:
        """Whether any point runs a kernel whose programs per multiprocessor are known (split-KV waves)."""
        return self._set.has_occupancy

    def phases(self, params: Params) -> tuple[StepCost, StepCost]:
        """Per point, its two phases as point_cost holds them (a spec call's verify, and its drafts and host sync;
        any other call whole in the first), before the board's power limit caps them."""
        steps = self._set.costs(params)
        out = []
        for ph in (0, 1):
            rows = self._phase == ph
            per_point = StepCost(
                **{
                    f.name: np.bincount(
                        self._owner[rows],
                        np.broadcast_to(getattr(steps, f.name), self._owner.shape)[rows],
                        self._points,
                    )
                    for f in fields(steps)
                }
            )
            syncs = np.where(self._sync_phase == ph, self._syncs, 0.0)
            out.append(per_point + host_wait(params, syncs * params.per_iteration_s))
        return out[0], out[1]

    def uncapped(self, params: Params) -> StepCost:
        """Per point, the sum of its steps and host syncs before the board's power limit caps them."""
        first, rest = self.phases(params)
        return first + rest

    def hold_factors(self, params: Params, energy_scale=1.0) -> np.ndarray:
        """Per point, the smaller of its phases' hold factors (shivam.sim.roofline.phase_cap_factors): 1 where the
        board's power limit does not hold it."""
        first, rest = (power_capped(c, energy_scale) for c in self.phases(params))
        return np.minimum(*phase_cap_factors(first, rest, params))

    def costs(self, params: Params, energy_scale=1.0) -> StepCost:
        """Per point, its cost as point_cost gives it (energy_scale: each point's card factor, before the cap)."""
        first, rest = phases_held(*(power_capped(c, energy_scale) for c in self.phases(params)), params)
        return first + rest

    def energy_design(self, params: Params, energy: Params, energy_scale=1.0) -> tuple[dict, np.ndarray, np.ndarray]:
        """The energy fit's linear design at `params` (its times), for energies divided by each point's card factor
        (energy_scale): per point, each energy feature (shivam.sim.roofline.energy_features) and the energy no
        coefficient moves (energy_not_fitted), except at the points whose card, with `energy`'s energy parameters,
        would have the board's power limit hold them: their energy is what the hold gives at `energy`'s
        parameters, over the factor, and the fit leaves them out of its energy solve. (A speculative iteration whose
        verify alone is held still depends on its drafts' coefficients, linearly once the hold is fixed; that is not
        used.) Also that mask of capped points, so the fit can redo the design at the fitted parameters until it
        stops changing."""
        cost = self.uncapped(params)
        phases = [power_capped(c, energy_scale) for c in self.phases(energy)]  # `energy`'s steps, costed once
        factors = phase_cap_factors(*phases, energy)
        capped = np.minimum(*factors) < 1.0
        features = energy_features(cost)
        cols = {n: np.where(capped, 0.0, np.asarray(v, dtype=float)) for n, v in features.items()}
        held_energy = sum(held(c, f, energy).energy_j for c, f in zip(phases, factors)) / energy_scale
        fixed = np.where(capped, held_energy, energy_not_fitted(cost))
        return cols, np.asarray(fixed, dtype=float), capped


def predict_point(point: Point, params: Params) -> dict:
    """Predicted time and energy of one measured call of this point, and the tokens it yields."""
    cost, tokens, bound = point_cost(point, params)
    return {"time_s": float(cost.time_s), "energy_j": float(cost.energy_j), "tokens": tokens, "bound": bound}
