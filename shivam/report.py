"""Self-contained interactive HTML reports (plotly.js embedded, so the file opens offline).

Every figure is built from the same Scenario and rows that `shivam predict` prints.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from shivam.predict import BREAKDOWN, Scenario
from shivam.speculative import tokens_per_iteration
from shivam.stage1 import reload_vs_reuse
from shivam.workload import Dtypes

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<script>/* record script errors on the page itself, so a headless browser's DOM dump shows them */
(function(){{var note=function(m){{var d=document.documentElement;d.setAttribute('data-errors',(d.getAttribute('data-errors')||'')+m+';');}};
window.addEventListener('error',function(e){{note(e.message);}});var ce=console.error;console.error=function(){{note([].join.call(arguments,' '));ce.apply(console,arguments);}};}})();</script>
<style>body{{font-family:system-ui,sans-serif;margin:24px;max-width:1200px}} table{{border-collapse:collapse;font-size:13px}}
td,th{{border:1px solid #ccc;padding:3px 8px;text-align:right}} th{{background:#f3f3f3}} .fig{{margin:28px 0}}
code{{background:#f6f6f6;padding:1px 4px}}</style></head>
<body><h1>{title}</h1>{body}</body></html>
"""


def _table(header: list[str], rows: list[list]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def write_page(path: str | Path, title: str, sections: list[str], figures: list[go.Figure]) -> None:
    parts = list(sections)
    for i, fig in enumerate(figures):
        fig.update_layout(template="plotly_white", height=460, margin=dict(l=70, r=30, t=60, b=60))
        parts.append('<div class="fig">' + fig.to_html(include_plotlyjs=(i == 0), full_html=False,
                                                      div_id=f"fig{i}") + "</div>")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(_PAGE.format(title=html.escape(title), body="\n".join(parts)), encoding="utf-8")


def _energy_vs_k(res: dict) -> go.Figure:
    fig = go.Figure()
    alphas = list(dict.fromkeys(r["alpha"] for r in res["rows"]))
    for a in alphas:
        rows = [r for r in res["rows"] if r["alpha"] == a]
        fig.add_trace(go.Scatter(x=[r["k"] for r in rows], y=[r["energy_per_token_j"] for r in rows], mode="lines+markers",
                                 name=f"alpha {a}", customdata=[[r["speedup"], r["energy_ratio"], r["tokens_per_iteration"]] for r in rows],
                                 hovertemplate="k=%{x}<br>%{y:.4f} J/token<br>speed-up %{customdata[0]:.2f}x"
                                               "<br>energy ratio %{customdata[1]:.2f}x<br>tokens/iter %{customdata[2]:.2f}<extra></extra>"))
        best = [r for r in rows if r["best_energy"]][0]
        fig.add_trace(go.Scatter(x=[best["k"]], y=[best["energy_per_token_j"]], mode="markers", showlegend=False,
                                 marker=dict(symbol="star", size=16, color="black"),
                                 hovertemplate=f"best k for energy at alpha {a}: {best['k']}<extra></extra>"))
    base = res["rows"][0]["energy_per_token_j"]
    fig.add_hline(y=base, line_dash="dash", annotation_text=f"standard decoding {base:.4f} J/token")
    fig.update_layout(title="Energy per generated token vs speculation window k (star: best k for energy)",
                      xaxis_title="speculation window k (draft tokens per iteration)", yaxis_title="energy per token (J)")
    return fig


def _heatmaps(scn: Scenario, ks: list[int]) -> list[go.Figure]:
    alphas = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    ks_all = sorted({0, *ks})
    taus = tokens_per_iteration(alphas[None, :], np.array(ks_all)[:, None])
    g = {k: v.mean(axis=-1) for k, v in scn.grid(ks_all, taus, scn.contexts()).items()}
    e, t = g["energy_per_token_j"], g["time_per_token_s"]
    figs = []
    for z, title, label in ((1 - e / e[0:1, :], "Energy saving vs standard decoding", "saving"),
                            (t[0:1, :] / t, "Speed-up vs standard decoding", "speed-up")):
        fig = go.Figure(go.Heatmap(z=z, x=alphas, y=ks_all, colorscale="RdBu", zmid=0 if label == "saving" else 1,
                                   colorbar=dict(title=label),
                                   hovertemplate="alpha %{x}<br>k %{y}<br>" + label + " %{z:.3f}<extra></extra>"))
        fig.update_layout(title=f"{title} (k x alpha)", xaxis_title="acceptance rate alpha", yaxis_title="speculation window k")
        figs.append(fig)
    return figs


def _roofline(scn: Scenario, ks: list[int]) -> go.Figure:
    p, dt = scn.params, scn.dtypes
    mid = float(np.mean(scn.contexts()))
    bw = p.bandwidth_Bps * p.memory_efficiency
    peak = p.peak_flops[dt.compute] * p.compute_efficiency
    x = np.logspace(-1, 4, 200)
    fig = go.Figure(go.Scatter(x=x, y=np.minimum(x * bw, peak) / 1e12, mode="lines", name="roofline (effective)",
                               hovertemplate="%{x:.1f} FLOP/B: %{y:.1f} TFLOP/s<extra></extra>"))
    steps = [("decode (k=0)", scn.verify_step(0, mid))] + [(f"verify k={k} ({k + 1} tokens)", scn.verify_step(k, mid))
                                                           for k in sorted(set(ks)) if k > 0]
    if scn.draft is not None:
        steps.append((f"draft step ({scn.draft.name})", scn.draft_step(mid)))
    for name, s in steps:
        ai = float(s.flops / s.dram_bytes)
        fig.add_trace(go.Scatter(x=[ai], y=[float(s.flops / s.time_s) / 1e12], mode="markers", name=name,
                                 marker=dict(size=11),
                                 hovertemplate=(f"{name}<br>%{{x:.2f}} FLOP/byte<br>%{{y:.2f}} TFLOP/s achieved<br>"
                                                f"{1e3 * float(s.time_s):.3f} ms, {float(s.energy_j):.4f} J, {s.bound}-bound"
                                                "<extra></extra>")))
    fig.update_layout(title=f"Roofline: each step placed by arithmetic intensity (context {mid:.0f})",
                      xaxis_title="arithmetic intensity (FLOP per DRAM byte)", yaxis_title="achieved rate (TFLOP/s)",
                      xaxis_type="log", yaxis_type="log")
    return fig


def _breakdown(scn: Scenario, res: dict, ks: list[int]) -> go.Figure:
    alpha = res["rows"][0]["alpha"]
    rows = {r["k"]: r for r in res["rows"] if r["alpha"] == alpha}
    mid = float(np.mean(scn.contexts()))
    fig = go.Figure()
    ks_all = sorted({0, *ks})
    parts = {}
    for k in ks_all:
        draft, verify, sync = scn.iteration(k, mid)
        n = scn.batch * rows[k]["tokens_per_iteration"]
        for who, cost in (("draft", draft), ("verify", verify), ("sync", sync)):
            for name in BREAKDOWN:
                parts.setdefault((who, name[2:]), []).append(float(getattr(cost, name)) / n)
    for (who, name), values in parts.items():
        if max(values) > 0:
            fig.add_trace(go.Bar(x=[str(k) for k in ks_all], y=values, name=f"{who}: {name}",
                                 hovertemplate=f"{who} {name}<br>k=%{{x}}: %{{y:.4f}} J/token<extra></extra>"))
    fig.update_layout(barmode="stack", title=f"Energy per token by term, draft vs verify (alpha {alpha}, context {mid:.0f})",
                      xaxis_title="speculation window k", yaxis_title="energy per token (J)")
    return fig


def _stage1(scn: Scenario) -> go.Figure:
    res = reload_vs_reuse(scn.params, 4096, 4096, Dtypes.of(scn.dtypes.activations), np.arange(1, 101))
    fig = go.Figure(go.Scatter(x=res["reuse"], y=[100 * s for s in res["energy_saving"]], mode="lines",
                               name="load once vs reload", hovertemplate="reuse %{x}: %{y:.1f} % saved<extra></extra>"))
    fig.update_layout(title=f"Stage I: reload 4096x4096 weights before every GEMM vs load once (copy "
                            f"{res['copy_energy_j']:.3f} J, GEMM {res['gemm_energy_j']:.3f} J)",
                      xaxis_title="reuse count (GEMMs per weight load)", yaxis_title="energy saved by loading once (%)")
    return fig


def prediction_report(scn: Scenario, res: dict, path: str) -> None:
    ks = sorted({r["k"] for r in res["rows"]})
    summary = [[a, b["best_k_energy"], b["best_k_latency"],
                f"{[r for r in res['rows'] if str(r['alpha']) == str(a) and r['best_energy']][0]['energy_ratio']:.2f}x"]
               for a, b in res["best"].items()]
    params = {k: v for k, v in res.items() if k not in ("rows", "best", "contexts_averaged", "required_alpha")}
    sections = [f"<p>Predicted by <code>shivam predict</code>. Parameters: {html.escape(res['parameters'])}.</p>",
                "<h2>Summary</h2>", _table(["alpha", "best k (energy)", "best k (latency)", "energy ratio at best k"], summary),
                "<h2>Run parameters</h2>", f"<pre>{html.escape(json.dumps(params, indent=1))}</pre>"]
    figs = [_energy_vs_k(res), *_heatmaps(scn, ks), _roofline(scn, ks), _breakdown(scn, res, ks), _stage1(scn)]
    write_page(path, f"shivam: {res['model']} on {res['gpu_name']} ({res['engine']} engine)", sections, figs)


# --- validation reports -------------------------------------------------------------------------------------------
def _pred_vs_meas(rows: list[dict], key: str, unit: str, scale: float) -> go.Figure:
    fig = go.Figure()
    lo = min(min(r[f"{key}_meas"], r[f"{key}_pred"]) for r in rows) * scale
    hi = max(max(r[f"{key}_meas"], r[f"{key}_pred"]) for r in rows) * scale
    x = np.geomspace(lo * 0.8, hi * 1.25, 50)
    fig.add_trace(go.Scatter(x=x, y=x, mode="lines", name="y = x", line=dict(color="black")))
    for band, dash in ((0.05, "dot"), (0.10, "dash")):
        for sign in (1, -1):
            fig.add_trace(go.Scatter(x=x, y=x * (1 + sign * band), mode="lines", line=dict(color="gray", dash=dash),
                                     name=f"±{int(band * 100)} %", showlegend=sign == 1, hoverinfo="skip"))
    for group in sorted({r["group"] for r in rows}):
        rs = [r for r in rows if r["group"] == group]
        fig.add_trace(go.Scatter(x=[r[f"{key}_meas"] * scale for r in rs], y=[r[f"{key}_pred"] * scale for r in rs],
                                 mode="markers", name=group, text=[r["label"] for r in rs],
                                 customdata=[100 * r[f"{key}_err"] for r in rs],
                                 hovertemplate="%{text}<br>measured %{x:.4g}<br>predicted %{y:.4g}<br>"
                                               "error %{customdata:+.1f} %<extra></extra>"))
    fig.update_layout(title=f"Predicted vs measured {key} per call", xaxis_title=f"measured {key} per call ({unit})",
                      yaxis_title=f"predicted {key} per call ({unit})", xaxis_type="log", yaxis_type="log")
    return fig


def _residuals(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    for key in ("energy", "time"):
        fig.add_trace(go.Box(x=[r["group"] for r in rows], y=[100 * r[f"{key}_err"] for r in rows], name=key,
                             boxpoints="all", text=[r["label"] for r in rows],
                             hovertemplate="%{text}<br>%{y:+.1f} %<extra>" + key + "</extra>"))
    fig.update_layout(boxmode="group", title="Residuals by model",
                      xaxis_title="target model", yaxis_title="error, prediction / measurement - 1 (%)")
    return fig


def _residuals_by_k(rows: list[dict]) -> go.Figure:
    spec = [r for r in rows if r["kind"] == "spec"]
    fig = go.Figure()
    for group in sorted({r["group"] for r in spec}):
        rs = [r for r in spec if r["group"] == group]
        for key, symbol in (("energy", "circle"), ("time", "x")):
            fig.add_trace(go.Scatter(x=[r["k"] for r in rs],
                                     y=[100 * r[f"{key}_err"] for r in rs], mode="markers", marker=dict(symbol=symbol),
                                     name=f"{group}: {key}", text=[r["label"] for r in rs],
                                     hovertemplate="%{text}<br>%{y:+.1f} %<extra>" + key + "</extra>"))
    fig.add_hline(y=0, line_color="black")
    fig.update_layout(title="Residuals of speculative iterations by window k", xaxis_title="speculation window k",
                      yaxis_title="error, prediction / measurement - 1 (%)")
    return fig


def _spec_energy(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    spec = [r for r in rows if r["kind"] == "spec"]
    for group in sorted({r["group"] for r in spec}):
        base = [r for r in spec if r["group"] == group and r["k"] == 0]
        for alpha in sorted({r["alpha"] for r in spec if r["group"] == group and r["k"] > 0}):
            rs = sorted(base[:1] + [r for r in spec if r["group"] == group and r["k"] > 0 and r["alpha"] == alpha],
                        key=lambda r: r["k"])
            ks = [r["k"] for r in rs]
            fig.add_trace(go.Scatter(x=ks, y=[r["energy_tok_meas"] for r in rs], mode="markers",
                                     name=f"{group} a={alpha} measured", text=[r["label"] for r in rs],
                                     hovertemplate="%{text}<br>%{y:.4f} J/token measured<extra></extra>"))
            fig.add_trace(go.Scatter(x=ks, y=[r["energy_tok_pred"] for r in rs], mode="lines",
                                     name=f"{group} a={alpha} predicted",
                                     hovertemplate="k=%{x}: %{y:.4f} J/token predicted<extra></extra>"))
    fig.update_layout(title="Speculative decoding: energy per generated token vs k (measured tokens per call)",
                      xaxis_title="speculation window k", yaxis_title="energy per token (J)")
    return fig


def _power_traces(records: list[dict]) -> go.Figure:
    fig = go.Figure()
    for r in records:
        m = r.get("measured", {})
        traces = m.get("power_traces") or [m.get("power_trace") or []]  # older records kept the first window only
        for i, trace in enumerate(t for t in traces if t):
            name = f"{r['label']} (window {i + 1})"
            fig.add_trace(go.Scatter(x=[t for t, _ in trace], y=[p for _, p in trace], mode="lines", name=name,
                                     hovertemplate=name + "<br>%{x:.2f} s: %{y:.0f} W<extra></extra>"))
    fig.update_layout(title="Measured board power over each measurement window (one line per window)",
                      xaxis_title="time since the window's opening counter edge (s)", yaxis_title="power (W)")
    return fig


def _memory_domain(records: list[dict]) -> go.Figure | None:
    """Hopper's memory-domain power against board power, per point: the paper's hypothesis measured directly."""
    pts = [r for r in records if "memory_energy_per_call_j" in r.get("measured", {})]
    if not pts:
        return None
    fig = go.Figure()
    top = max(r["measured"]["power_w"] for r in pts) * 1.05
    for share in (0.1, 0.3, 0.5):
        fig.add_trace(go.Scatter(x=[0, top], y=[0, share * top], mode="lines", line=dict(color="gray", dash="dot"),
                                 name=f"memory = {int(share * 100)} % of board", hoverinfo="skip"))
    kinds = {"step": "forward steps", "spec": "speculative iterations", "generate": "transformers generate()",
             "stage1": "stage I"}
    for kind, name in kinds.items():
        rs = [r for r in pts if r["point"]["kind"] == kind]
        if not rs:
            continue
        mem_w = [r["measured"]["memory_energy_per_call_j"] / r["measured"]["time_per_call_s"] for r in rs]
        fig.add_trace(go.Scatter(x=[r["measured"]["power_w"] for r in rs], y=mem_w, mode="markers", name=name,
                                 text=[r["label"] for r in rs],
                                 hovertemplate="%{text}<br>board %{x:.0f} W<br>memory domain %{y:.0f} W<extra></extra>"))
    fig.update_layout(title="Memory-domain power vs board power (NVML, Hopper): how much of the energy the DRAM draws",
                      xaxis_title="board power (W)", yaxis_title="memory-domain power (W)")
    return fig


def validation_report(args) -> None:
    from shivam.fit import card_factors_for, error_stats, load_records, load_results, predictions
    from shivam.hardware import load_gpu, resolve_params

    data, gpu = load_results(args.results, args.engine)
    g = load_gpu(args.gpu or gpu)
    params = resolve_params(g, args.engine, args.calibration)
    factors = card_factors_for(data, params) if getattr(args, "card_factors", False) else None
    rows = predictions(data, params, factors)
    everything = load_records(args.results)
    env = next((r for r in everything if r.get("record") == "environment"), None)
    records = [r for r in everything if r.get("record") == "point" and r.get("status") == "ok"]
    stats = {k: error_stats([r[f"{k}_err"] for r in rows]) for k in ("energy", "time")}
    summary = [[k, stats[k]["n"], f"{100 * stats[k]['median']:.1f} %", f"{100 * stats[k]['mean']:.1f} %",
                f"{100 * stats[k]['max']:.1f} %"] for k in ("energy", "time")]
    env_rows = [[k, env.get(k)] for k in ("gpu", "driver", "date", "power_limit_w", "max_sm_clock_mhz")] if env else []
    scaled = (f" Predicted energy scaled per card (factors {', '.join(f'{v:.3f}' for v in factors.values())})."
              if factors else "")
    sections = [f"<p>Measured by <code>shivam validate</code>; predictions with {html.escape(params.source)}.{scaled}</p>",
                "<h2>Summary</h2>", _table(["quantity", "points", "median |error|", "mean |error|", "max |error|"], summary),
                "<h2>Environment</h2>", _table(["field", "value"], env_rows),
                "<h2>Parameters</h2>", f"<pre>{html.escape(params.model_dump_json(indent=1))}</pre>"]
    figs = [_pred_vs_meas(rows, "energy", "J", 1.0), _pred_vs_meas(rows, "time", "ms", 1e3), _residuals(rows)]
    if any(r["kind"] == "spec" for r in rows):
        figs += [_residuals_by_k(rows), _spec_energy(rows)]
    memory = _memory_domain(records)
    figs += [memory] if memory is not None else []
    figs.append(_power_traces(records))
    write_page(args.output, f"shivam validation: {g.name}, {args.engine} engine", sections, figs)
