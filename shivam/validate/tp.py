"""Tensor-parallel decode and verify steps through torch.distributed (torch is imported here), and the all-reduce alone.

One process per GPU, started by torchrun (`shivam validate --tp N` does it); NCCL on GPUs, gloo on the CPU, where the
same code runs eagerly so that its logic is tested without a GPU (tests/test_tp.py). The split is Megatron's, the one
shivam.sim models (ModelSpec.shard):

    embedding   vocabulary-parallel: each GPU holds ceil(V/N) rows, looks up the tokens it holds, all-reduce
    q, k, v     column-parallel: each GPU computes its H/N query heads and its KV heads (one, replicated, when there
                are fewer KV heads than GPUs), attends over its own KV cache
    o_proj      row-parallel: partial sums, all-reduce (bias added once, after it)
    gate, up    column-parallel: intermediate/N columns each
    down        row-parallel: all-reduce
    LM head     vocabulary-parallel: ceil(V/N) rows each, logits all-gathered
    norms, learned positions, embedding projections: whole on every GPU

Weights are random, built from a ModelSpec like shivam.validate.engines.Decoder's. With `exact_split` (the default on
the CPU) every process draws the whole matrices from one seed and keeps its slice, so that N processes compute the
function one process computes; on GPUs each draws only its slice (a 70B model's whole matrices fit no GPU), which
changes values, not shapes, bytes or FLOPs. Every process is started with NVLink multicast off in NCCL, PyTorch's
symmetric memory and NVSHMEM (NCCL_NVLS_ENABLE=0, TORCH_SYMM_MEM_DISABLE_MULTICAST=1, NVSHMEM_DISABLE_NVLS=1): on a
shared host, a program that uses multicast can put every GPU of the host out of service.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F

from shivam.errors import ShivamError
from shivam.specs.model import ModelSpec, load_model
from shivam.validate.engines import (
    TORCH_DTYPES,
    causal_mask,
    graphed,
    learned_positions,
    norm,
    rope,
    rope_tables,
    step_call,
)

# what every process this module starts (or is started with) sets: no NVLink multicast (NVLS) anywhere
NCCL_ENV = {"NCCL_NVLS_ENABLE": "0", "TORCH_SYMM_MEM_DISABLE_MULTICAST": "1", "NVSHMEM_DISABLE_NVLS": "1"}


def start_process_group(backend: str | None = None) -> tuple[int, int, torch.device]:
    """Joins the process group torchrun (or a test's spawn) set up through MASTER_ADDR/PORT, RANK and WORLD_SIZE:
    (rank, world size, this process's device)."""
    for key, value in NCCL_ENV.items():
        os.environ[key] = value
    backend = backend or ("nccl" if torch.cuda.is_available() else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    rank, world = dist.get_rank(), dist.get_world_size()
    if backend == "nccl":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", rank)))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    return rank, world, device


class TensorParallelDecoder:
    """One process's shard of a transformer decoder split over `world` processes, with a static KV cache of its own
    KV heads. world = 1 is the whole model, with no collective."""

    def __init__(
        self,
        spec: ModelSpec,
        batch: int,
        max_context: int,
        rank: int = 0,
        world: int = 1,
        weights_dtype: str = "bf16",
        device: str | torch.device = "cpu",
        seed: int = 0,
        exact_split: bool | None = None,
    ):
        if spec.experts > 1:
            raise ShivamError(f"{spec.name}: the tensor-parallel engine does not build mixture-of-experts models")
        problem = spec.split_problem(world)
        if problem is not None:
            raise ShivamError(
                f"--tp {world}: {spec.name} does not split over {world} GPUs: {problem}; use another --tp"
            )
        self.spec, self.batch, self.max_context, self.rank, self.world = spec, batch, max_context, rank, world
        self.device = torch.device(device)
        if weights_dtype not in TORCH_DTYPES:
            raise ShivamError(f"the tensor-parallel engine runs fp32, fp16 or bf16 weights, not {weights_dtype}")
        self.dtype = torch.float32 if self.device.type == "cpu" else TORCH_DTYPES[weights_dtype]
        self.exact_split = self.device.type == "cpu" if exact_split is None else exact_split
        self._seed = seed
        self._tensors = 0
        s, shard = spec, spec.shard(world)
        self.shard = shard
        self.heads, self.kv_heads, self.head_dim = shard.heads, shard.kv_heads, s.head_dim
        self.ffn = shard.intermediate
        self.vocab_slice = shard.vocab  # ceil(V / world) rows, the last process's padded with zeros
        self.vocab_start = rank * self.vocab_slice
        q_rows = self._span(rank * shard.heads, shard.heads, s.head_dim)
        # this process's KV heads: a contiguous run of them, or the one its query heads share when replicated
        first_kv = rank * shard.heads // (s.heads // s.kv_heads)
        kv_rows = self._span(first_kv, shard.kv_heads, s.head_dim)
        ffn_rows = self._span(rank * shard.intermediate, shard.intermediate, 1)
        q_dim, kv_dim = s.heads * s.head_dim, s.kv_heads * s.head_dim
        attn, mlp = s.attention_linears(), s.expert_linears()

        self.embed = self._vocab_rows(s.embed_dim)
        self.lm_head = self.embed if s.tied_embeddings else self._vocab_rows(s.embed_dim)
        self.positions = self._whole(s.learned_positions, s.hidden) if s.learned_positions else None
        self.proj = [self._whole(l.d_out, l.d_in) for l in s.embedding_linears()]
        self.layers = []
        for _ in range(s.layers):
            qkv_rows = torch.cat([q_rows, q_dim + kv_rows, q_dim + kv_dim + kv_rows])
            up_rows = ffn_rows if not s.gated_mlp else torch.cat([ffn_rows, s.intermediate + ffn_rows])
            up_width = s.intermediate * (2 if s.gated_mlp else 1)
            self.layers.append(
                {
                    "n1": self._norm_params(),
                    "n2": self._norm_params(),
                    "qkv": self._rows(q_dim + 2 * kv_dim, s.hidden, qkv_rows, attn[0].bias),
                    "o_proj": (self._columns(s.hidden, q_dim, q_rows), self._bias(s.hidden, attn[3].bias)),
                    "up": self._rows(up_width, s.hidden, up_rows, mlp[0].bias),
                    "down": (self._columns(s.hidden, s.intermediate, ffn_rows), self._bias(s.hidden, mlp[-1].bias)),
                }
            )
        self.final_norm = self._norm_params() if s.final_norm else None
        cache_shape = (s.layers, batch, shard.kv_heads, max_context, s.head_dim)
        self.k_cache = torch.zeros(cache_shape, device=self.device, dtype=self.dtype)
        self.v_cache = torch.zeros(cache_shape, device=self.device, dtype=self.dtype)
        if not s.learned_positions:
            self.cos, self.sin = rope_tables(s.head_dim, max_context, self.device, self.dtype)
        self._graphs: dict = {}

    # --- weights: the whole matrix from one seed and this process's slice of it, or the slice alone -----------
    @staticmethod
    def _span(first: int, count: int, width: int) -> torch.Tensor:
        return torch.arange(first * width, (first + count) * width)

    def _draw(self, rows: int, cols: int, keep: torch.Tensor | None, axis: int, scale: float = 0.02) -> torch.Tensor:
        """Random normal weights [rows, cols] (never zeros: zeros can run faster than real data), sliced to `keep`
        along `axis`; each tensor has a seed of its own, so every process draws the same whole matrix."""
        self._tensors += 1
        if not self.exact_split and keep is not None:
            shape = (len(keep), cols) if axis == 0 else (rows, len(keep))
            gen = torch.Generator(device=self.device).manual_seed(self._seed * 1_000_003 + self._tensors + self.rank)
            full = torch.randn(*shape, generator=gen, device=self.device, dtype=torch.float32) * scale
            return full.to(self.dtype)
        gen = torch.Generator(device="cpu").manual_seed(self._seed * 1_000_003 + self._tensors)
        full = torch.randn(rows, cols, generator=gen, dtype=torch.float32) * scale
        if keep is not None:
            full = full.index_select(axis, keep)
        return full.to(device=self.device, dtype=self.dtype)

    def _whole(self, rows: int, cols: int) -> torch.Tensor:
        return self._draw(rows, cols, None, 0)

    def _rows(self, rows: int, cols: int, keep: torch.Tensor, bias: bool):
        weight = self._draw(rows, cols, keep, 0)
        return weight, (self._draw(1, rows, keep, 1)[0] if bias else None)

    def _columns(self, rows: int, cols: int, keep: torch.Tensor) -> torch.Tensor:
        return self._draw(rows, cols, keep, 1)

    def _bias(self, width: int, bias: bool):
        return self._whole(1, width)[0] if bias else None

    def _vocab_rows(self, width: int) -> torch.Tensor:
        """This process's rows of a vocabulary-sized matrix, zero-padded to ceil(V / world) rows."""
        v = self.spec.vocab
        keep = torch.arange(self.vocab_start, min(self.vocab_start + self.vocab_slice, v))
        part = self._draw(v, width, keep, 0)
        pad = self.vocab_slice - part.shape[0]
        return torch.cat([part, part.new_zeros(pad, width)]) if pad else part

    def _norm_params(self):
        d = self.spec.hidden
        ones = torch.ones(d, device=self.device, dtype=self.dtype) + self._whole(1, d)[0] / 2
        return (ones, self._whole(1, d)[0]) if self.spec.norm == "layernorm" else (ones, None)

    # --- the step ----------------------------------------------------------------------------------------------
    def _all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.world > 1:
            dist.all_reduce(x)
        return x

    def _norm(self, x, params):
        return norm(x, params, self.spec.norm)

    def _rope(self, x, c, n):
        return rope(x, self.cos, self.sin, c, n)

    def logits(self, tokens: torch.Tensor, c: int) -> torch.Tensor:
        """tokens [batch, n] at positions c..c+n-1 -> logits [batch, n, vocab] (fp32), the same on every process."""
        s, (b, n) = self.spec, tokens.shape
        local = tokens - self.vocab_start
        mine = (local >= 0) & (local < self.vocab_slice)
        x = F.embedding(local.clamp(0, self.vocab_slice - 1), self.embed) * mine[..., None].to(self.dtype)
        x = self._all_reduce(x)
        if self.proj:
            x = F.linear(x, self.proj[0])
        if self.positions is not None:
            x = x + learned_positions(self.positions, s.family, c, n)
        mask = causal_mask(n, c, self.device)
        hq, hkv, dh = self.heads, self.kv_heads, self.head_dim
        for i, layer in enumerate(self.layers):
            qkv = F.linear(self._norm(x, layer["n1"]), *layer["qkv"])
            qk = qkv[..., : (hq + hkv) * dh].view(b, n, hq + hkv, dh).transpose(1, 2)
            if self.positions is None:
                qk = self._rope(qk, c, n)
            q, k = qk[:, :hq], qk[:, hq:]
            v = qkv[..., (hq + hkv) * dh :].view(b, n, hkv, dh).transpose(1, 2)
            self.k_cache[i, :, :, c : c + n] = k
            self.v_cache[i, :, :, c : c + n] = v
            keys, values = self.k_cache[i, :, :, : c + n], self.v_cache[i, :, :, : c + n]
            att = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, enable_gqa=hkv != hq)
            weight, bias = layer["o_proj"]
            out = self._all_reduce(F.linear(att.transpose(1, 2).reshape(b, n, hq * dh), weight))
            x = x + (out + bias if bias is not None else out)
            up = F.linear(self._norm(x, layer["n2"]), *layer["up"])
            if s.gated_mlp:
                gate, up = up.chunk(2, dim=-1)
                up = F.silu(gate) * up
            else:
                up = F.relu(up)
            weight, bias = layer["down"]
            out = self._all_reduce(F.linear(up, weight))
            x = x + (out + bias if bias is not None else out)
        if self.final_norm is not None:
            x = self._norm(x, self.final_norm)
        if len(self.proj) > 1:
            x = F.linear(x, self.proj[1])
        part = F.linear(x, self.lm_head).float()
        if self.world == 1:
            return part[..., : s.vocab]
        parts = [torch.empty_like(part) for _ in range(self.world)]
        dist.all_gather(parts, part.contiguous())
        return torch.cat(parts, dim=-1)[..., : s.vocab]

    def step_fn(self, tokens: torch.Tensor, c: int):
        """A function running one step (greedy next tokens [batch, n]), replayed from a CUDA graph on a GPU, the
        NCCL all-reduces and all-gather inside it (captured after warm-up on a side stream, as Decoder.step_fn)."""

        def run():
            return self.logits(tokens, c).argmax(dim=-1)

        return graphed(self._graphs, self.device, (tokens.data_ptr(), tokens.shape, c), run)


def all_reduce_call(nbytes: int, device: torch.device, dtype: str = "bf16", repeat: int = 1):
    """The all-reduce alone: `repeat` all-reduces of a tensor of `nbytes` (the sizes a step uses: batch x new tokens
    x hidden x bytes per element), captured in a CUDA graph on a GPU, then a synchronization."""
    dt = TORCH_DTYPES[dtype] if device.type == "cuda" else torch.float32
    elements = max(1, nbytes // torch.empty((), dtype=dt).element_size())
    buf = torch.ones(elements, device=device, dtype=dt)

    def run():
        for _ in range(repeat):
            dist.all_reduce(buf)
            buf.mul_(0.5)  # keeps the values bounded; an all-reduce of ones over 2 GPUs doubles them
        return buf

    if device.type == "cuda":
        stream = torch.cuda.Stream(device)
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            run()
        torch.cuda.current_stream(device).wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            run()
        fn = graph.replay
    else:
        fn = run

    def call() -> float:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        return 0.0

    return call


def all_reduce_seconds(nbytes: int, device: torch.device, calls: int = 20, dtype: str = "bf16") -> float:
    """Seconds per all-reduce of `nbytes`, timed over `calls` calls after one warm-up (every process must call it)."""
    call = all_reduce_call(nbytes, device, dtype)
    call()
    dist.barrier()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


# --- the measurement, one process per GPU --------------------------------------------------------------------------
TP_MODELS = ("llama-2-7b", "llama-2-13b", "llama-2-70b")
TP_BATCHES = (1, 4, 16, 64)
TP_NEW_TOKENS = (1, 5)  # a decode step and a verify step of k = 4
TP_CONTEXT = 256


def tp_points(world: int, gpu_memory_bytes: float) -> list[dict]:
    """The suite: decode and verify steps of each model that fits its shard, batch 1 to 64, and the all-reduce alone
    at each step's size."""
    points = []
    for alias in TP_MODELS:
        spec = load_model(alias)
        if spec.split_problem(world) is not None or 2 * spec.shard(world).param_count() > 0.85 * gpu_memory_bytes:
            continue
        for batch in TP_BATCHES:
            for n in TP_NEW_TOKENS:
                points.append({"kind": "step", "model": alias, "batch": batch, "new_tokens": n, "context": TP_CONTEXT})
                points.append({"kind": "all_reduce", "model": alias, "nbytes": batch * n * spec.hidden * 2})
    return points


def _summed_counter(world: int, sync):
    """One energy counter summing the NVML counters of GPUs 0..world-1 (read by the first process)."""
    from shivam.validate.meter import EnergyCounter
    from shivam.validate.nvml import counter

    counters = [counter(i, sync) for i in range(world)]
    return EnergyCounter(read_mj=lambda: sum(c.read_mj() for c in counters), sync=sync, period_s=0.1, threaded=True)


def run_tp_suite(out: str, min_seconds: float = 2.0, repeats: int = 3) -> None:
    """Every process of `torchrun --nproc-per-node N -m shivam.validate.tp` runs this: each point's calls in
    lockstep (a call is collective), the first process measuring windows on the GPUs' summed energy counters and
    appending one JSON record per point to `out`."""
    rank, world, device = start_process_group()
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    meter = _summed_counter(world, sync) if rank == 0 and device.type == "cuda" else None
    memory = torch.cuda.get_device_properties(device).total_memory if device.type == "cuda" else 1e12
    for point in tp_points(world, memory):
        spec = load_model(point["model"])
        if point["kind"] == "step":
            dec = TensorParallelDecoder(spec, point["batch"], TP_CONTEXT + 8, rank, world, "bf16", device)
            call = step_call(dec, point["new_tokens"], point["context"])
        else:
            dec, call = None, all_reduce_call(point["nbytes"], device)
        for _ in range(3):
            call()
        dist.barrier()
        start = time.perf_counter()
        for _ in range(10):
            call()
        per_call = [(time.perf_counter() - start) / 10]
        dist.broadcast_object_list(per_call, src=0)
        calls = max(20, math.ceil(min_seconds / max(per_call[0], 1e-6)))
        windows = []
        for _ in range(repeats):
            dist.barrier()
            if meter is not None:
                windows.append(meter.window(call, min_periods=0, min_calls=calls, max_calls=calls))
            else:
                for _ in range(calls):
                    call()
        if rank == 0:
            from shivam.validate.meter import Measurement

            summary = Measurement(windows).summary() if windows else {}
            record = {"record": "tp_point", "tp": world, **point, "device": str(device)}
            record.update(
                {k: summary[k] for k in ("energy_per_call_j", "time_per_call_s", "energy_spread") if k in summary}
            )
            with Path(out).open("a") as fh:
                fh.write(json.dumps(record) + "\n")
        del dec, call
        if device.type == "cuda":
            torch.cuda.empty_cache()
    dist.barrier()
    dist.destroy_process_group()


def launch_command(world: int, out: str) -> list[str]:
    """The torchrun command line `shivam validate --tp N` runs: one process per GPU on this host."""
    import sys

    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={world}",
        "-m",
        "shivam.validate.tp",
        "--out",
        out,
    ]


def launch(world: int, out: str) -> int:
    """Runs the tensor-parallel suite over `world` GPUs of this host through torchrun, NVLink multicast off (NCCL_ENV)
    in every process's environment; refuses a machine with fewer GPUs."""
    import subprocess

    have = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if have < world:
        raise ShivamError(
            f"--tp {world} needs {world} GPUs on this machine, which has {have}; run it on a host with {world} GPUs "
            f"or give a smaller --tp"
        )
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    return subprocess.run(launch_command(world, out), env={**os.environ, **NCCL_ENV}, check=False).returncode


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="one process of the tensor-parallel suite (started by torchrun)")
    parser.add_argument("--out", required=True, help="JSONL file the first process appends records to")
    run_tp_suite(parser.parse_args().out)
