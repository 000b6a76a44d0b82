"""The engines that run a Point on a device (torch is imported here and only here).

graph: a decoder built from the same ModelSpec the simulator uses, with a static KV cache; each forward step
       (n new tokens at context c) is captured once in a CUDA graph and replayed. On the CPU it runs eagerly, so its
       logic is tested without a GPU.
hf:    transformers' generate(), eager, with a DynamicCache, as the paper ran it; assisted generation for
       speculative decoding when a draft is given.
hf-static: the same generate() with cache_implementation="static", which transformers compiles and graphs itself.
ref:   the reference engine (shivam.validate.ref): the graph engine's weights, Triton kernels between the GEMMs.
Weights are random (energy depends on shapes, not values) unless a local safetensors checkpoint is given.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from shivam.errors import ShivamError
from shivam.specs.model import ModelSpec, resolve_model

TORCH_DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def rope_tables(head_dim: int, positions: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of rotary embedding (base 10000) for every position, [positions, head_dim], the halves repeated
    (rotate-half convention, as Llama's)."""
    inv = 1.0 / (10000 ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    ang = torch.arange(positions, device=device, dtype=torch.float32)[:, None] * inv[None, :]
    ang = torch.cat([ang, ang], dim=-1)
    return ang.cos().to(dtype), ang.sin().to(dtype)


def learned_positions(table: torch.Tensor, family: str, c: int, n: int) -> torch.Tensor:
    """The learned position embeddings of positions c..c+n-1 (OPT's table starts at an offset of 2), [1, n, d]."""
    return table[c + 2 if family == "opt" else c :][:n][None]


def causal_mask(n: int, c: int, device) -> torch.Tensor | None:
    """The boolean mask of n new tokens over c cached ones, causal within the new (None for one new token)."""
    return torch.ones(n, c + n, dtype=torch.bool, device=device).tril(diagonal=c) if n > 1 else None


def norm(x: torch.Tensor, params, kind: str) -> torch.Tensor:
    """The model's norm (layernorm with bias, else RMS norm) with its (weight, bias) parameters."""
    weight, bias = params
    if kind == "layernorm":
        return F.layer_norm(x, (x.shape[-1],), weight, bias)
    return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-5)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, c: int, n: int) -> torch.Tensor:
    """Rotary embedding (rotate-half) of x [batch, heads, n, head_dim] at positions c..c+n-1."""
    cos, sin = cos[c : c + n][None, None], sin[c : c + n][None, None]
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


class Fp8Linear:
    """fp8 (e4m3) weights and activations through torch._scaled_mm, per-tensor scales of 1 (random data stays in
    range): the arithmetic and bytes of an fp8 matmul, which is what energy depends on."""

    def __init__(self, weight: torch.Tensor):
        self.w = weight.to(torch.float8_e4m3fn)  # [out, in]; .t() gives the column-major operand _scaled_mm wants
        self.one = torch.ones((), device=weight.device, dtype=torch.float32)

    def __call__(self, x: torch.Tensor, bias=None) -> torch.Tensor:
        shape = x.shape
        x8 = x.reshape(-1, shape[-1]).to(torch.float8_e4m3fn)
        pad = (-x8.shape[0]) % 16  # cuBLASLt fp8 wants rows in multiples of 16
        if pad:
            x8 = torch.cat([x8, x8.new_zeros(pad, x8.shape[1])])
        y = torch._scaled_mm(x8, self.w.t(), scale_a=self.one, scale_b=self.one, out_dtype=torch.bfloat16)
        y = y[: x8.shape[0] - pad].reshape(*shape[:-1], -1)
        return y + bias if bias is not None else y


class Decoder:
    """A transformer decoder with a static KV cache, shaped by a ModelSpec (dense families; MoE is not built)."""

    def __init__(
        self,
        spec: ModelSpec,
        batch: int,
        max_context: int,
        weights_dtype: str = "bf16",
        kv_dtype: str = "bf16",
        device: str | torch.device = "cuda",
        seed: int = 0,
    ):
        if spec.experts > 1:
            raise ShivamError(f"{spec.name}: the graph engine does not build mixture-of-experts models")
        self.spec, self.batch, self.max_context = spec, batch, max_context
        self.device = torch.device(device)
        self.fp8 = weights_dtype == "fp8"
        if not self.fp8 and weights_dtype not in TORCH_DTYPES:
            raise ShivamError(f"the graph engine runs fp32, fp16, bf16 or fp8 weights, not {weights_dtype}")
        self.dtype = torch.bfloat16 if self.fp8 else TORCH_DTYPES[weights_dtype]
        if self.device.type == "cpu":
            self.dtype = torch.float32  # CPU runs check logic, not speed
        kv_torch = TORCH_DTYPES.get(kv_dtype, self.dtype) if self.device.type != "cpu" else torch.float32
        gen = torch.Generator(device=self.device).manual_seed(seed)
        s = spec

        def w(*shape, scale=0.02):
            # random normal weights (never zeros: zeros can run faster than real data)
            return (torch.randn(*shape, generator=gen, device=self.device, dtype=torch.float32) * scale).to(self.dtype)

        def lin(d_in, d_out, bias):
            weight = w(d_out, d_in)
            return (Fp8Linear(weight) if self.fp8 else weight), (w(d_out) if bias else None)

        self.embed = w(s.vocab, s.embed_dim)
        self.lm_head = self.embed if s.tied_embeddings else w(s.vocab, s.embed_dim)
        self.positions = w(s.learned_positions, s.hidden) if s.learned_positions else None
        self.proj = [w(l.d_out, l.d_in) for l in s.embedding_linears()]
        self.layers = []
        for _ in range(s.layers):
            # q, k, v fused into one matmul, and gate + up into another, as fast decoders do (fewer launches;
            # the same bytes and FLOPs, which is what shivam.sim.workload counts)
            attn, mlp = s.attention_linears(), s.expert_linears()
            layer = {
                "n1": self._norm_params(w),
                "n2": self._norm_params(w),
                "qkv": lin(s.hidden, sum(l.d_out for l in attn[:3]), attn[0].bias),
                "o_proj": lin(attn[3].d_in, s.hidden, attn[3].bias),
                "up": lin(s.hidden, sum(l.d_out for l in mlp[:-1]), mlp[0].bias),
                "down": lin(mlp[-1].d_in, s.hidden, mlp[-1].bias),
            }
            self.layers.append(layer)
        self.final_norm = self._norm_params(w) if s.final_norm else None
        cache_shape = (s.layers, batch, s.kv_heads, max_context, s.head_dim)
        # random keys and values, as the weights (zeros can move and cost less than real data); every step reads
        # what earlier steps would have written
        self.k_cache = torch.empty(cache_shape, device=self.device, dtype=kv_torch)
        self.v_cache = torch.empty(cache_shape, device=self.device, dtype=kv_torch)
        for cache in (self.k_cache, self.v_cache):
            for layer in cache:  # a layer at a time: no float32 copy of the whole cache
                layer.normal_(generator=gen)
        if not s.learned_positions:
            self.cos, self.sin = rope_tables(s.head_dim, max_context, self.device, self.dtype)
        self._graphs: dict = {}

    def _norm_params(self, w):
        ones = torch.ones(self.spec.hidden, device=self.device, dtype=self.dtype) + w(self.spec.hidden, scale=0.01)
        return (ones, w(self.spec.hidden)) if self.spec.norm == "layernorm" else (ones, None)

    def _norm(self, x, params):
        return norm(x, params, self.spec.norm)

    @staticmethod
    def _linear(x, wb):
        weight, bias = wb
        return weight(x, bias) if isinstance(weight, Fp8Linear) else F.linear(x, weight, bias)

    def _rope(self, x, c, n):
        return rope(x, self.cos, self.sin, c, n)

    def forward(self, tokens: torch.Tensor, c: int) -> torch.Tensor:
        """tokens [batch, n] at positions c..c+n-1; returns greedy next tokens [batch, n]."""
        return self.logits(tokens, c).argmax(dim=-1)

    def logits(self, tokens: torch.Tensor, c: int) -> torch.Tensor:
        """The fp32 logits [batch, n, vocab] of tokens [batch, n] at positions c..c+n-1. c is a Python int, so each
        (n, c) is a static shape: attention reads exactly c+n cached positions, as the workload counts."""
        s, (b, n) = self.spec, tokens.shape
        x = F.embedding(tokens, self.embed)
        if self.proj:
            x = F.linear(x, self.proj[0])
        if self.positions is not None:
            x = x + learned_positions(self.positions, s.family, c, n)
        mask = causal_mask(n, c, self.device)
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        for i, layer in enumerate(self.layers):
            qkv = self._linear(self._norm(x, layer["n1"]), layer["qkv"])
            qk = qkv[..., : q_dim + kv_dim].view(b, n, s.heads + s.kv_heads, s.head_dim).transpose(1, 2)
            if self.positions is None:
                qk = self._rope(qk, c, n)  # q and k rotated together: one set of launches
            q, k = qk[:, : s.heads], qk[:, s.heads :]
            v = qkv[..., q_dim + kv_dim :].view(b, n, s.kv_heads, s.head_dim).transpose(1, 2)
            self.k_cache[i, :, :, c : c + n] = k
            self.v_cache[i, :, :, c : c + n] = v
            keys = self.k_cache[i, :, :, : c + n].to(q.dtype)
            values = self.v_cache[i, :, :, : c + n].to(q.dtype)
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=s.kv_heads != s.heads)
            x = x + self._linear(att.transpose(1, 2).reshape(b, n, q_dim), layer["o_proj"])
            up = self._linear(self._norm(x, layer["n2"]), layer["up"])
            if s.gated_mlp:
                gate, up = up.chunk(2, dim=-1)
                up = F.silu(gate) * up
            else:
                up = F.relu(up)
            x = x + self._linear(up, layer["down"])
        if self.final_norm is not None:
            x = self._norm(x, self.final_norm)
        if len(self.proj) > 1:
            x = F.linear(x, self.proj[1])
        return F.linear(x, self.lm_head).float()

    def step_fn(self, tokens: torch.Tensor, c: int, out: torch.Tensor | None = None, out_vocab: int | None = None):
        """A function that runs forward(tokens, c) and writes the last token into `out` (for chaining draft steps),
        replayed from a CUDA graph on a GPU. `out_vocab` folds tokens into a smaller vocabulary: a draft with another
        tokenizer (OPT-125M for Mistral-7B, as in the paper) must hand the target ids it can embed."""

        def run():
            result = self.forward(tokens, c)
            if out is not None:
                last = result[:, -1:]
                out.copy_(last.remainder(out_vocab) if out_vocab else last)
            return result

        return self.graphed((tokens.data_ptr(), tokens.shape, c, None if out is None else out.data_ptr()), run)

    def chain_fn(self, buf: torch.Tensor, c: int, k: int, out_vocab: int | None = None):
        """k chained steps: step i reads buf[:, i] at context c + i and writes its token into buf[:, i + 1]. One graph
        per step here; the reference engine captures the whole chain in one."""
        steps = [
            self.step_fn(buf[:, i : i + 1], c + i, out=buf[:, i + 1 : i + 2], out_vocab=out_vocab) for i in range(k)
        ]

        def run():
            for step in steps:
                step()

        return run

    def graphed(self, key, run):
        """`run` captured once in a CUDA graph (after two warm-up runs) and replayed; `run` itself off the GPU."""
        return graphed(self._graphs, self.device, key, run)


def replay_seconds(fn, reps: int = 50) -> float:
    """Seconds per replay of fn captured in a CUDA graph: CUDA events over `reps` replays, the median of 5 runs (for
    launch-setting searches and probes; energy comparisons go through the meter's windows)."""
    graph = torch.cuda.CUDAGraph()
    fn()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        fn()
    graph.replay()
    times = []
    for _ in range(5):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(reps):
            graph.replay()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / reps * 1e-3)
    return sorted(times)[2]


def graphed(graphs: dict, device: torch.device, key, run):
    """`run` captured once per `key` in a CUDA graph (after two warm-up runs on a side stream) kept in `graphs`, and
    a function replaying it; `run` itself off the GPU."""
    if device.type != "cuda":
        return run
    if key not in graphs:
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            for _ in range(2):
                run()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            result = run()
        # `run` is kept with its graph: the tensors it closes over (the step's input tokens, say) are the graph's
        # inputs, which must outlive it (freed, their memory would be reused and replays would read garbage)
        graphs[key] = (graph, result, run)
    graph, result, _ = graphs[key]

    def replay():
        graph.replay()
        return result

    return replay


def step_call(dec, n: int, c: int, seed: int = 0):
    """One forward of n tokens at context c, then the host reads the tokens back (as a decoding loop must). `dec` is
    any decoder with spec, batch, max_context, device and step_fn (Decoder, RefDecoder, TensorParallelDecoder)."""
    if c + n > dec.max_context:
        raise ShivamError(f"context {c} + {n} exceeds the decoder's cache of {dec.max_context}")
    g = torch.Generator(device="cpu").manual_seed(seed)
    tokens = torch.randint(0, dec.spec.vocab, (dec.batch, n), generator=g).to(dec.device)
    fn = dec.step_fn(tokens, c)

    def call() -> float:
        fn().cpu()
        return float(dec.batch * n)

    return call


def spec_call(target: Decoder, draft: Decoder, k: int, alpha: float, c: int, seed: int = 0, lens=None):
    """One speculative iteration at context c: k chained draft steps (each feeds its token to the next), one verify
    step of k+1 tokens, one host readback; the accepted count per sequence is drawn from alpha (seeded), since random
    weights give no meaningful acceptance. Returns the tokens produced (accepted + 1 per sequence). `lens`: a ragged
    batch, each sequence's context (the reference engine's decoders only; c is then ignored)."""
    deepest = max(lens) if lens is not None else c
    for dec, need in ((target, deepest + k + 1), (draft, deepest + k)):
        if need > dec.max_context:
            raise ShivamError(f"context {deepest} + {k + 1} exceeds a decoder's cache of {dec.max_context}")
    b = target.batch
    vocab = min(target.spec.vocab, draft.spec.vocab)
    buf = torch.randint(0, vocab, (b, k + 1), device=target.device)
    if lens is not None:
        if not hasattr(target, "ref_logits") or len(lens) != b:
            raise ShivamError("a ragged batch (per-sequence contexts) runs on the ref engine, one context per sequence")
        drafts = draft.chain_fn(buf, c, k, out_vocab=vocab, lens=lens)
        verify = target.step_fn(buf, c, lens=lens)
    else:
        drafts = draft.chain_fn(buf, c, k, out_vocab=vocab)
        verify = target.step_fn(buf, c)
    rng = np.random.default_rng(seed)

    def call() -> float:
        drafts()
        verify().cpu()
        accepted = np.zeros(b, dtype=int)
        alive = np.ones(b, dtype=bool)
        for _ in range(k):  # each position accepted with probability alpha, given all earlier ones were
            alive &= rng.random(b) < alpha
            accepted += alive
        return float((accepted + 1).sum())

    return call


def stage1_call(n: int, tokens: int, reuse: int, reload: bool, dtype: str, device):
    """The paper's stage I: weights created on the host (pageable memory, as the paper did) and copied to the device
    before every GEMM (reload) or once (reuse), then `reuse` GEMMs."""
    dt = TORCH_DTYPES[dtype] if torch.device(device).type == "cuda" else torch.float32
    # pinned host memory: the copy runs at PCIe speed by DMA (pageable memory adds a CPU staging copy whose speed
    # varies run to run: 6-18 % window spread on the H200 host, 2026-11-28)
    host_w = (
        (torch.randn(n, n) * 0.02).to(dt).pin_memory()
        if torch.cuda.is_available()
        else (torch.randn(n, n) * 0.02).to(dt)
    )
    x = (torch.randn(tokens, n, device=device) * 0.02).to(dt)
    dev = torch.device(device)

    def call() -> float:
        w = host_w.to(dev)
        for i in range(reuse):
            if reload and i:
                w = host_w.to(dev)
            _ = x @ w  # the GEMM being measured; its result is not needed
        sync(dev)
        return 0.0

    return call


# --- transformers --------------------------------------------------------------------------------------------------
def hf_model(ref: str, dtype: str, device, weights: str | None = None):
    from transformers import AutoConfig, AutoModelForCausalLM

    dt = TORCH_DTYPES[dtype] if torch.device(device).type == "cuda" else torch.float32
    if weights:
        path = Path(weights)
        if not list(path.glob("*.safetensors")):
            raise ShivamError(
                f"--weights {weights}: no *.safetensors files there; only safetensors checkpoints are loaded"
            )
        return (
            AutoModelForCausalLM.from_pretrained(
                path, dtype=dt, use_safetensors=True, trust_remote_code=False, local_files_only=True
            )
            .to(device)
            .eval()
        )
    _, cfg, _ = resolve_model(ref)
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    config = AutoConfig.for_model(**cfg)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=dt)
    return model.eval()


def _first_forward_clock(state: dict):
    """A forward pre-hook keeping the host's clock when the model's first forward of a call (the prefill) starts."""

    def hook(*_):
        if state["first_start"] is None:
            state["first_start"] = time.perf_counter()

    return hook


class TokenClock:
    """A generate() streamer that only keeps the host's clock at each hand-over: generate() hands it the prompt, then
    the tokens of each decoding step (an assisted iteration's accepted tokens at once) after copying them to the
    host, which waits for the step to finish (as generate() does each step anyway, to test whether to stop; the
    streamer adds a copy of the step's tokens). With the prefill's start (a forward pre-hook), the times split a
    call into its phases (call_phases)."""

    def __init__(self):
        self.times: list[float] = []

    def put(self, value) -> None:
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


def call_phases(start: float, first_forward: float | None, times: list[float], stop: float) -> dict[str, float]:
    """One generate() call's host-timed phases: set-up (configuration, cache allocation or reset, input preparation,
    compile guards: until the first forward starts), prefill (the prompt's forward, until its token is on the host),
    step (the mean of the decoding steps or assisted iterations after the first token: TokenClock's hand-overs
    after the prompt's) and finish (after the last token, until the device is idle)."""
    if len(times) < 2 or first_forward is None:
        raise ShivamError(
            f"generate() handed {len(times)} batches of tokens to the streamer"
            f"{' and ran no forward' if first_forward is None else ''}; expected the prompt, a prefill and one per step"
        )
    steps = len(times) - 2
    return {
        "setup_s": first_forward - start,
        "prefill_s": times[1] - first_forward,
        "step_s": (times[-1] - times[1]) / steps if steps else float("nan"),
        "steps": float(steps),
        "finish_s": stop - times[-1],
    }


def generate_call(
    model, prompt: int, gen: int, batch: int, draft_model=None, k: int = 0, seed: int = 0, static: bool = False
):
    """transformers generate() of exactly `gen` new tokens (greedy; assisted when a draft is given); with a static
    cache (`cache_implementation="static"`, which transformers compiles itself) when `static`. Counts the target's
    forward calls, so tokens per iteration = gen / (calls - 1) is measured, not assumed, and times each call's
    phases (call_phases) on the host through a streamer: a call's set-up and prefill apart from its loop."""
    device = next(model.parameters()).device
    g = torch.Generator(device="cpu").manual_seed(seed)
    vocab = (
        model.config.vocab_size if draft_model is None else min(model.config.vocab_size, draft_model.config.vocab_size)
    )
    ids = torch.randint(3, vocab, (batch, prompt), generator=g).to(device)
    if not hasattr(model, "_shivam_forwards"):
        model._shivam_forwards = {"n": 0, "first_start": None}
        model.register_forward_hook(lambda *a: model._shivam_forwards.__setitem__("n", model._shivam_forwards["n"] + 1))
        model.register_forward_pre_hook(_first_forward_clock(model._shivam_forwards))
    calls = model._shivam_forwards
    from transformers import GenerationConfig

    settings = dict(max_new_tokens=gen, min_new_tokens=gen, do_sample=False, pad_token_id=0, eos_token_id=None)
    if static:
        settings["cache_implementation"] = "static"
    if draft_model is not None:
        settings.update(
            num_assistant_tokens=k, num_assistant_tokens_schedule="constant", assistant_confidence_threshold=0.0
        )
    kwargs = dict(generation_config=GenerationConfig(**settings), attention_mask=torch.ones_like(ids))
    if draft_model is not None:
        kwargs["assistant_model"] = draft_model
    stats = {"iterations": 0, "calls": 0, "phases": []}
    clock = TokenClock()
    kwargs["streamer"] = clock

    def call() -> float:
        before = calls["n"]
        clock.times.clear()
        calls["first_start"] = None
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(ids, **kwargs)
        sync(device)
        stats["phases"].append(call_phases(start, calls["first_start"], clock.times, time.perf_counter()))
        stats["iterations"] += calls["n"] - before - 1  # the first forward is the prefill
        stats["calls"] += 1
        return float(batch * (out.shape[1] - prompt))

    call.stats = stats
    return call
