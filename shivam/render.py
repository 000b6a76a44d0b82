"""Terminal output with rich: the prediction table, `inspect`, and plain listings."""

from __future__ import annotations

import json
import sys

from rich.console import Console
from rich.table import Table

_console = Console(width=160)


def table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    _console.print(t)


def _energy(j: float, units: str) -> str:
    return f"{j / 3.6e6:.3e}" if units == "kWh" else f"{j:.4f}"


def prediction_table(res: dict, units: str = "J") -> None:
    draft = f", draft {res['draft']}" + (" (default: the paper's)" if res["default_draft_used"] else "") if res["draft"] else ""
    title = (f"{res['model']}{draft} on {res['gpu_name']}, {res['engine']} engine - batch {res['batch']}, "
             f"prompt {res['prompt']} + {res['gen']} generated, weights {res['weights_dtype']}, KV {res['kv_dtype']}")
    cols = ["alpha", "k", "tokens/iter", "ms/token", f"{units}/token", "speed-up", "energy ratio", f"floor {units}/tok",
            "verify bound", "draft bound", "best"]
    rows, last_alpha = [], None
    for r in res["rows"]:
        alpha = str(r["alpha"]) if r["alpha"] != last_alpha else ""
        last_alpha = r["alpha"]
        best = " ".join(tag for tag, flag in (("<- energy", r["best_energy"]), ("<- latency", r["best_latency"])) if flag)
        rows.append([alpha, r["k"], f"{r['tokens_per_iteration']:.2f}", f"{1e3 * r['time_per_token_s']:.3f}",
                     _energy(r["energy_per_token_j"], units), f"{r['speedup']:.2f}x", f"{r['energy_ratio']:.2f}x",
                     _energy(r["floor_energy_per_token_j"], units), r["verify_bound"], r["draft_bound"] or "-", best])
    caption = (f"parameters: {res['parameters']}. k=0 is standard decoding; speed-up and energy ratio are k=0 over k "
               f"(above 1 is better). Floor: bytes that must move x DRAM-device energy per byte.")
    if "required_alpha" in res:
        need = ", ".join(f"k={k}: {'unreachable' if a is None else f'{a:.3f}'}" for k, a in res["required_alpha"].items())
        caption += f"\nalpha needed for the target energy ratio: {need}"
    table(title, cols, rows, caption)


def inspect_model(model, dtypes, context: int, gpu, fmt: str) -> None:
    from shivam.roofline import step_cost
    from shivam.workload import step_ops

    ops = step_ops(model, 1, 1, context, dtypes)
    info = {"model": model.name, "family": model.family, "parameters": model.param_count(),
            "active_parameters": model.active_param_count(), "layers": model.layers, "hidden": model.hidden,
            "heads": model.heads, "kv_heads": model.kv_heads, "head_dim": model.head_dim, "attention": model.attention_kind,
            "params_per_layer": model.layer_params(), "weights_dtype": dtypes.weights, "kv_dtype": dtypes.kv,
            "kv_bytes_per_token": model.kv_bytes_per_token(__import__("shivam.dtypes").dtypes.nbytes(dtypes.kv)),
            "context": context,
            "operators": [{"name": o.name, "kind": o.kind, "repeat": o.repeat, "flops": float(o.flops),
                           "weight_bytes": float(o.weight_bytes), "kv_read_bytes": float(o.kv_read_bytes),
                           "kv_write_bytes": float(o.kv_write_bytes), "act_bytes": float(o.act_bytes),
                           "launches": int(o.launches), "light_launches": int(o.light_launches)} for o in ops
                          if float(o.launches) + float(o.light_launches) > 0]}  # not an operator gated off at 1 token
    info["decode_flops_per_token"] = sum(o["flops"] * o["repeat"] for o in info["operators"])
    info["decode_bytes_per_token"] = sum((o["weight_bytes"] + o["kv_read_bytes"] + o["kv_write_bytes"] + o["act_bytes"])
                                         * o["repeat"] for o in info["operators"])
    if gpu is not None:
        from shivam.hardware import make_params

        c = step_cost(ops, make_params(gpu), dtypes.compute)
        info["gpu"] = gpu.id
        info["decode_time_s"], info["decode_energy_j"], info["decode_bound"] = float(c.time_s), float(c.energy_j), c.bound
    if fmt == "json":
        json.dump(info, sys.stdout, indent=1)
        print()
        return
    head = (f"{model.name} ({model.family}): {info['parameters']:,} parameters ({info['active_parameters']:,} active), "
            f"{model.layers} layers x {info['params_per_layer']:,}, {model.attention_kind}, "
            f"KV {info['kv_bytes_per_token']:,.0f} B/token in {dtypes.kv}")
    rows = [[o["name"], o["kind"], o["repeat"], f"{o['flops']:,.0f}", f"{o['weight_bytes']:,.0f}",
             f"{o['kv_read_bytes']:,.0f}", f"{o['kv_write_bytes']:,.0f}", f"{o['act_bytes']:,.0f}"] for o in info["operators"]]
    cap = (f"one decode token at context {context}: {info['decode_flops_per_token']:,.0f} FLOPs, "
           f"{info['decode_bytes_per_token']:,.0f} bytes")
    if gpu is not None:
        cap += (f"; on {gpu.name}: {1e3 * info['decode_time_s']:.3f} ms, {info['decode_energy_j']:.4f} J, "
                f"{info['decode_bound']}-bound (datasheet estimates)")
    table(head, ["operator (per layer x repeat)", "kind", "repeat", "FLOPs", "weight B", "KV read B", "KV write B",
                 "activation B"], rows, cap)
