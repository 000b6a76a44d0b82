"""The engine suite: how close the reference engine comes to its own floors, as ratios measured side by side.

Each comparison times two calls in alternating windows (A B A B ...) over the same counter, so that the card's
state drifts for both alike; its figures are the medians of each call's windows. The floors:
  weights-only graph   the model's GEMMs in order with the engine's fused weight shapes (q/k/v, gate/up) and the LM
                       head, no attention, norms or anything else, in one CUDA graph: no decode step moves less;
  decode attention     the one-token attention kernel of every layer over the same KV cache, in one CUDA graph;
  host sync            a graph replay of one tiny kernel and a readback: the per-iteration cost of the host loop.
Records go to a JSONL file as each comparison completes (nothing measured is lost when a later one fails).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F

from shivam.calibrate.results import ResultsFile
from shivam.specs.model import load_model
from shivam.validate import kernels
from shivam.validate.meter import measure
from shivam.validate.ref import RefDecoder


def _timed(dec: RefDecoder, key, run):
    replay = dec.graphed(key, run)

    def call() -> float:
        replay()
        torch.cuda.synchronize(dec.device)
        return 0.0

    return call


def weights_only_call(dec: RefDecoder, rows: int):
    """The decoder's GEMMs, in order, on `rows` rows per GEMM: (call, weight bytes read per call)."""
    run, weights = weights_only_run(dec, rows)
    return _timed(dec, ("weights", rows), run), weights


def weights_only_run(dec: RefDecoder, rows: int):
    """(the GEMMs of the decoder in order on `rows` rows, as a function to capture; weight bytes it reads)."""
    s = dec.spec
    gen = torch.Generator(device=dec.device).manual_seed(7)

    def act(width):
        return (torch.randn(rows, width, generator=gen, device=dec.device) * 0.1).to(dec.dtype)

    x_h, x_q = act(s.hidden), act(s.heads * s.head_dim)
    x_i = act(dec.layers[0]["down"][0].shape[1])
    x_e = act(s.embed_dim)

    def run():
        for layer in dec.layers:
            dec._linear(x_h, layer["qkv"])
            dec._linear(x_q, layer["o_proj"])
            dec._linear(x_h, layer["up"])
            dec._linear(x_i, layer["down"])
        return F.linear(x_e, dec.lm_head)

    gemms = [layer[name][0] for layer in dec.layers for name in ("qkv", "o_proj", "up", "down")] + [dec.lm_head]
    return run, sum(w.numel() * w.element_size() for w in gemms)


def attention_call(dec: RefDecoder, n: int, context: int):
    """The attention kernels of every layer for n new tokens over `context` cached ones (the cache is filled with
    random values first): (call, KV bytes read per call)."""
    s = dec.spec
    dec.k_cache.normal_()
    dec.v_cache.normal_()
    lens = torch.full((dec.batch,), context, device=dec.device, dtype=torch.int32)
    plan = dec.plan(n, context + n)
    width = (s.heads + 2 * s.kv_heads) * s.head_dim
    qkv = torch.randn((dec.batch, n, width), device=dec.device).to(dec.dtype)  # what the q/k/v GEMM hands over
    out = torch.empty((dec.batch, n, s.heads, s.head_dim), device=dec.device, dtype=dec.dtype)

    def run():  # the engine's own kernel: RoPE and the new keys' cache write included
        for i in range(s.layers):
            kernels.attention(None, dec.k_cache[i], dec.v_cache[i], lens, plan, out, None, 0, qkv, dec.cos, dec.sin)
        return out

    kv = s.layers * dec.batch * (context + n) * 2 * s.kv_heads * s.head_dim * dec.k_cache.element_size()
    return _timed(dec, ("attention", n, context), run), kv


def step_call(dec: RefDecoder, n: int, context: int):
    tokens = torch.randint(0, dec.spec.vocab, (dec.batch, n), device=dec.device)
    replay = dec.step_fn(tokens, context)

    def call() -> float:
        replay().cpu()
        return float(dec.batch * n)

    return call


def sync_call(device):
    """One replayed graph of a one-element kernel and its readback: what a host-driven iteration adds."""
    x = torch.zeros(1, device=device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        x.add_(1)

    def call() -> float:
        graph.replay()
        x.cpu()
        return 0.0

    return call


def compare(counter, a, b, rounds: int = 3, min_periods: int = 20) -> dict:
    """Alternating windows of calls a and b; medians and the ratio a / b in time and energy."""
    wins = {"a": [], "b": []}
    for _ in range(rounds):
        for name, call in (("a", a), ("b", b)):
            m = measure(counter, call, repeats=1, min_periods=min_periods, min_calls=20).summary()
            wins[name].append({"time_per_call_s": m["time_per_call_s"], "energy_per_call_j": m["energy_per_call_j"]})
    med = {
        name: {q: statistics.median(w[q] for w in ws) for q in ("time_per_call_s", "energy_per_call_j")}
        for name, ws in wins.items()
    }
    return {
        "windows": wins,
        "median": med,
        "time_ratio": med["a"]["time_per_call_s"] / med["b"]["time_per_call_s"],
        "energy_ratio": med["a"]["energy_per_call_j"] / med["b"]["energy_per_call_j"],
    }


def comparisons(device: str):
    """(name, a label, b label, builder) of every comparison; each builder returns (call a, call b, extras)."""

    def mistral(batch, context):
        return RefDecoder(load_model("mistral-7b"), batch, context, device=device)

    def decode_vs_weights():
        dec = mistral(1, 1024)
        w, wbytes = weights_only_call(dec, 1)
        return step_call(dec, 1, 512), w, {"weight_bytes": wbytes}

    def verify_vs_decode_attention():
        dec = mistral(32, 2048)
        v, kv_v = attention_call(dec, 5, 1024)
        d, kv_d = attention_call(dec, 1, 1024)
        return v, d, {"kv_bytes_a": kv_v, "kv_bytes_b": kv_d, "layers": dec.spec.layers}

    def verify_vs_decode_step():
        dec = mistral(32, 2048)
        return step_call(dec, 5, 1024), step_call(dec, 1, 1024), {}

    def weights_160_vs_32():
        dec = mistral(1, 1024)
        a, wbytes = weights_only_call(dec, 160)
        b, _ = weights_only_call(dec, 32)
        return a, b, {"weight_bytes": wbytes}

    def sync_vs_decode():
        dec = mistral(1, 1024)
        return sync_call(dec.device), step_call(dec, 1, 512), {}

    return [
        ("decode_vs_weights_only", "ref decode b=1 c=512", "weights-only graph, 1 row", decode_vs_weights),
        ("verify_vs_decode_attention", "attention n=5 b=32 c=1024", "attention n=1 b=32 c=1024",
         verify_vs_decode_attention),
        ("verify_vs_decode_step", "ref verify n=5 b=32 c=1024", "ref decode b=32 c=1024", verify_vs_decode_step),
        ("weights_only_160_vs_32_rows", "weights-only graph, 160 rows", "weights-only graph, 32 rows",
         weights_160_vs_32),
        ("host_sync_vs_decode", "graph replay + readback of one element", "ref decode b=1 c=512", sync_vs_decode),
    ]  # fmt: skip


def rates(record: dict) -> dict:
    """Bandwidths implied by a comparison's medians (TB/s), where its bytes are known."""
    med, x = record["median"], record["extras"]
    out = {}
    if "weight_bytes" in x and record["name"] == "decode_vs_weights_only":
        out["weights_only_TBps"] = x["weight_bytes"] / med["b"]["time_per_call_s"] / 1e12
    if "kv_bytes_a" in x:
        out["verify_attention_kv_TBps"] = x["kv_bytes_a"] / med["a"]["time_per_call_s"] / 1e12
        out["decode_attention_kv_TBps"] = x["kv_bytes_b"] / med["b"]["time_per_call_s"] / 1e12
        out["verify_rate_over_decode_rate"] = out["verify_attention_kv_TBps"] / out["decode_attention_kv_TBps"]
    return out


def run_engine_suite(results: ResultsFile, counter, device: str, rounds: int = 3, progress=print) -> list[dict]:
    """Every comparison not yet in `results`, one record each (resumes like a campaign)."""
    done = {r.get("name") for r in results.records() if r.get("record") == "engine"} if results.path.exists() else set()
    written = []
    for name, a_label, b_label, build in comparisons(device):
        if name in done:
            continue
        progress(f"engine suite: {name}")
        started = time.time()
        record = {"record": "engine", "name": name, "a": a_label, "b": b_label, "started": started}
        try:
            a, b, extras = build()
            record.update(status="ok", **compare(counter, a, b, rounds), extras=extras)
            record["rates"] = rates(record)
        except Exception as exc:  # noqa: BLE001 - a failing comparison is recorded and the suite goes on
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}".splitlines()[0][:500])
        record["ended"] = time.time()
        results.append(record)
        written.append(record)
        torch.cuda.empty_cache()
    return written
