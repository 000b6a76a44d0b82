"""The measurement suites, named after the paper's stages. Each is a list of Points (shivam.calibrate.points)."""

from __future__ import annotations

from shivam.calibrate.points import Point
from shivam.errors import ShivamError

ALPHAS = (0.6, 0.8, 0.9)


def _spec_sweep(suite, target, draft, ks, alphas, context=512):
    pts = [Point(suite=suite, kind="spec", model=target, draft=draft, k=0, alpha=0.0, context=context)]
    pts += [
        Point(suite=suite, kind="spec", model=target, draft=draft, k=k, alpha=a, context=context)
        for a in alphas
        for k in ks
    ]
    return pts


def _steps(suite, model, ns=(1,), contexts=(512,), batches=(1,), **kw):
    return [
        Point(suite=suite, kind="step", model=model, new_tokens=n, context=c, batch=b, **kw)
        for b in batches
        for c in contexts
        for n in ns
    ]


def _stage1(suite, reuses, size=4096, tokens=4096):
    return [
        Point(suite=suite, kind="stage1", size=size, tokens=tokens, reuse=r, reload=rl)
        for r in reuses
        for rl in (True, False)
    ]


# the serving suites (docs/validation.md, "When does speculative decoding save energy?"), measured on the ref engine
SERVING_PAIRS = (("llama-3.1-8b", "llama-3.2-1b"), ("mistral-7b", "llama-68m"), ("opt-1.3b", "opt-125m"))
SERVING_BATCHES = (1, 4, 8, 16, 24, 32, 48, 64, 96, 128)
SERVING_KS = (2, 4, 8)
SERVING_ALPHA = 0.8  # acceptance is drawn on the host: the per-iteration costs do not depend on it
PREFILL_MODELS = ("llama-3.1-8b", "mistral-7b", "llama-3.2-1b", "qwen2-0.5b", "gemma-2b")
PREFILL_PROMPTS = (128, 512, 2048, 8192)


def _long_context(target: str, draft: str, want: int = 4096) -> int:
    """4096, or the longest multiple of 256 that a pair's positions hold with a verify step of max(k) + 1 on top."""
    from shivam.specs.model import load_model

    room = min(load_model(m).max_context for m in (target, draft)) - max(SERVING_KS) - 1
    return min(want, room // 256 * 256)


def ragged_contexts(batch: int, lo: int = 256, hi: int = 4096) -> tuple[int, ...]:
    """A ragged batch's contexts, spread evenly in log between lo and hi (batch 1: lo)."""
    if batch == 1:
        return (lo,)
    return tuple(int(round(lo * (hi / lo) ** (i / (batch - 1)))) for i in range(batch))


def _batch_suite() -> list[Point]:
    """Standard and speculative iterations interleaved at every (pair, context, batch): k = 0 then each k at one
    alpha; a few points at other alphas to check tau; a ragged batch of the GQA pair."""

    def iterations(target, draft, b, **where):  # standard decoding, then each window at the suite's alpha
        return [
            Point(suite="batch", engine="ref", kind="spec", model=target, draft=draft, batch=b, k=k,
                  alpha=SERVING_ALPHA if k else 0.0, **where)
            for k in (0, *SERVING_KS)
        ]  # fmt: skip

    pts = []
    for target, draft in SERVING_PAIRS:  # context 1024 for every pair first: the three-pair comparison needs them
        for b in SERVING_BATCHES:
            pts += iterations(target, draft, b, context=1024)
    for target, draft in SERVING_PAIRS:
        for b in SERVING_BATCHES:
            pts += iterations(target, draft, b, context=_long_context(target, draft))
        pts += [
            Point(
                suite="batch", engine="ref", kind="spec", model=target, draft=draft, batch=b, k=4, alpha=a, context=1024
            )
            for a in (0.6, 0.9)
            for b in (1, 32, 128)
        ]
    target, draft = SERVING_PAIRS[0]
    for b in (8, 32, 128):
        contexts = ragged_contexts(b)
        pts += iterations(target, draft, b, contexts=contexts, context=sum(contexts) // b)
    return pts


def _prefill_suite() -> list[Point]:
    """Prefill of each prompt length at batch 1 and 8, the whole prompt in one causal forward at context 0."""
    return [
        Point(suite="prefill", engine="ref", kind="prefill", model=m, batch=b, prompt=n, context=0)
        for m in PREFILL_MODELS
        for b in (1, 8)
        for n in PREFILL_PROMPTS
    ]


def suite_points(name: str) -> list[Point]:
    if name == "batch":
        return _batch_suite()
    if name == "prefill":
        return _prefill_suite()
    if name == "quick":
        # every term the simulator fits: bytes (models of 4 sizes), FLOPs (verify width, batch), context (KV bytes),
        # launch overhead (small draft), host sync (spec loop), PCIe (stage I), and the hf engine's overhead
        return (
            _steps("quick", "mistral-7b", ns=(1, 5, 33, 129))
            + _steps("quick", "mistral-7b", contexts=(128, 4096))
            + _steps("quick", "mistral-7b", batches=(8, 32))
            + _steps("quick", "opt-1.3b", ns=(1, 5))
            + _steps("quick", "opt-125m")
            + _steps("quick", "tinyllama-1.1b")
            + _steps("quick", "llama-2-7b")
            + _steps("quick", "opt-6.7b")
            + _spec_sweep("quick", "mistral-7b", "opt-125m", (2, 4), (0.8,))
            + _spec_sweep("quick", "opt-1.3b", "opt-125m", (4,), (0.8,))
            + _stage1("quick", (1, 10))
            + [
                Point(suite="quick", engine="hf", kind="generate", model=m, prompt=128, gen=g)
                for m, g in (("opt-125m", 32), ("mistral-7b", 8))
            ]
        )
    if name == "stage1":
        return _stage1("stage1", (1, 2, 5, 10, 20, 50, 100), size=4096, tokens=1024)
    if name == "stage2":
        return _spec_sweep("stage2", "opt-1.3b", "opt-125m", range(1, 9), ALPHAS)
    if name == "stage3":
        return _spec_sweep("stage3", "mistral-7b", "opt-125m", range(1, 9), ALPHAS)
    if name == "steps":
        # verify cost vs k+1 for models of every size and both families (so that leaving one model out of the fit
        # still leaves wide steps to identify the compute terms), context length and batch on Mistral-7B
        wide = (1, 9, 33, 129)
        return (
            _steps("steps", "mistral-7b", ns=(1, 2, 3, 5, 9, 17, 33, 65, 129))
            + _steps("steps", "mistral-7b", contexts=(128, 1024, 2048, 8192))
            + _steps("steps", "mistral-7b", batches=(2, 4, 16, 64))
            + [
                p
                for m in (
                    "opt-125m",
                    "opt-1.3b",
                    "tinyllama-1.1b",
                    "llama-2-7b",
                    "opt-6.7b",
                    "gpt2",
                    "qwen2-0.5b",
                    "gemma-2b",
                    "phi-3-mini",
                    "llama-2-13b",
                )
                for p in _steps("steps", m, ns=wide) + _steps("steps", m, batches=(16,))
            ]
            + _steps("steps", "llama-68m")
        )
    if name == "hf":
        # transformers generate(), eager: models of both families and five sizes, two generation lengths each (to
        # separate the prefill from the per-token cost); fits and cross-validates the hf engine's overheads
        return [
            Point(suite="hf", engine="hf", kind="generate", model=m, prompt=128, gen=g)
            for m in ("opt-125m", "qwen2-0.5b", "opt-1.3b", "tinyllama-1.1b", "gemma-2b", "llama-2-7b", "mistral-7b")
            for g in (8, 32)
        ]
    if name == "precision":
        return [
            p
            for m in ("mistral-7b", "llama-2-7b")
            for p in _steps("precision", m, batches=(1, 16), weights_dtype="bf16")
            + _steps("precision", m, batches=(1, 16), weights_dtype="fp8", act_dtype="fp8")
        ]
    raise ShivamError(f"unknown suite {name!r}: use {', '.join(SUITES)} or engine")


SUITES = ("quick", "stage1", "stage2", "stage3", "steps", "precision", "hf", "batch", "prefill")  # suites of points
# and the engine suite (shivam.validate.engine_suite), of side-by-side comparisons rather than points: "engine"
