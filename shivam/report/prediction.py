"""The prediction report (`shivam predict --report`): every figure built from the same Scenario and rows that
`shivam predict` prints."""

from __future__ import annotations

import dataclasses
import html

import numpy as np
import plotly.graph_objects as go

from shivam.report.page import html_table, write_page
from shivam.sim.hostcopy import reload_vs_reuse
from shivam.sim.scenario import BREAKDOWN, Scenario
from shivam.sim.speculative import tokens_per_iteration
from shivam.specs import Dtypes


def _label(alpha) -> str:
    return ",".join(f"{a:g}" for a in alpha) if isinstance(alpha, list) else f"{alpha:g}"


def _energy_vs_k(res: dict) -> go.Figure:
    fig = go.Figure()
    alphas = list(dict.fromkeys(_label(r["alpha"]) for r in res["rows"]))
    for a in alphas:
        rows = [r for r in res["rows"] if _label(r["alpha"]) == a]
        fig.add_trace(
            go.Scatter(
                x=[r["k"] for r in rows],
                y=[r["energy_per_token_j"] for r in rows],
                mode="lines+markers",
                name=f"alpha {a}",
                customdata=[[r["speedup"], r["energy_ratio"], r["tokens_per_iteration"]] for r in rows],
                hovertemplate="k=%{x}<br>%{y:.4f} J/token<br>speed-up %{customdata[0]:.2f}x"
                "<br>energy ratio %{customdata[1]:.2f}x<br>tokens/iter %{customdata[2]:.2f}<extra></extra>",
            )
        )
        best = [r for r in rows if r["best_energy"]][0]
        fig.add_trace(
            go.Scatter(
                x=[best["k"]],
                y=[best["energy_per_token_j"]],
                mode="markers",
                showlegend=False,
                marker=dict(symbol="star", size=16, color="black"),
                hovertemplate=f"best k for energy at alpha {a}: {best['k']}<extra></extra>",
            )
        )
    base = res["rows"][0]["energy_per_token_j"]
    fig.add_hline(y=base, line_dash="dash", annotation_text=f"standard decoding {base:.4f} J/token")
    fig.update_layout(
        title="Energy per generated token vs speculation window k (star: best k for energy)",
        xaxis_title="speculation window k (draft tokens per iteration)",
        yaxis_title="energy per token (J)",
    )
    return fig


def _heatmaps(scn: Scenario, ks: list[int]) -> list[go.Figure]:
    alphas = np.round(np.arange(0.0, 1.0001, 0.05), 2)
    ks_all = sorted({0, *ks})
    taus = tokens_per_iteration(alphas[None, :], np.array(ks_all)[:, None])
    g = {k: v.mean(axis=-1) for k, v in scn.grid(ks_all, taus, scn.contexts()).items()}
    e, t = g["energy_per_token_j"], g["time_per_token_s"]
    figs = []
    for z, title, label in (
        (1 - e / e[0:1, :], "Energy saving vs standard decoding", "saving"),
        (t[0:1, :] / t, "Speed-up vs standard decoding", "speed-up"),
    ):
        fig = go.Figure(
            go.Heatmap(
                z=z,
                x=alphas,
                y=ks_all,
                colorscale="RdBu",
                zmid=0 if label == "saving" else 1,
                colorbar=dict(title=label),
                hovertemplate="alpha %{x}<br>k %{y}<br>" + label + " %{z:.3f}<extra></extra>",
            )
        )
        fig.update_layout(
            title=f"{title} (k x alpha)", xaxis_title="acceptance rate alpha", yaxis_title="speculation window k"
        )
        figs.append(fig)
    return figs


def _roofline(scn: Scenario, ks: list[int]) -> go.Figure:
    p, dt = scn.params, scn.dtypes
    mid = float(np.mean(scn.contexts()))
    bw = p.bandwidth_Bps * p.memory_efficiency
    peak = p.peak_flops[dt.compute] * p.compute_efficiency
    x = np.logspace(-1, 4, 200)
    fig = go.Figure(
        go.Scatter(
            x=x,
            y=np.minimum(x * bw, peak) / 1e12,
            mode="lines",
            name="roofline (effective)",
            hovertemplate="%{x:.1f} FLOP/B: %{y:.1f} TFLOP/s<extra></extra>",
        )
    )
    steps = [("decode (k=0)", scn.verify_step(0, mid))] + [
        (f"verify k={k} ({k + 1} tokens)", scn.verify_step(k, mid)) for k in sorted(set(ks)) if k > 0
    ]
    if scn.draft is not None:
        steps.append((f"draft step ({scn.draft.name})", scn.draft_step(mid)))
    for name, s in steps:
        ai = float(s.flops / s.dram_bytes)
        fig.add_trace(
            go.Scatter(
                x=[ai],
                y=[float(s.flops / s.time_s) / 1e12],
                mode="markers",
                name=name,
                marker=dict(size=11),
                hovertemplate=(
                    f"{name}<br>%{{x:.2f}} FLOP/byte<br>%{{y:.2f}} TFLOP/s achieved<br>"
                    f"{1e3 * float(s.time_s):.3f} ms, {float(s.energy_j):.4f} J, {s.bound}-bound"
                    "<extra></extra>"
                ),
            )
        )
    fig.update_layout(
        title=f"Roofline: each step placed by arithmetic intensity (context {mid:.0f})",
        xaxis_title="arithmetic intensity (FLOP per DRAM byte)",
        yaxis_title="achieved rate (TFLOP/s)",
        xaxis_type="log",
        yaxis_type="log",
    )
    return fig


def _breakdown(scn: Scenario, res: dict, ks: list[int]) -> go.Figure:
    alpha = res["rows"][0]["alpha"]
    rows = {r["k"]: r for r in res["rows"] if _label(r["alpha"]) == _label(alpha)}
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
            fig.add_trace(
                go.Bar(
                    x=[str(k) for k in ks_all],
                    y=values,
                    name=f"{who}: {name}",
                    hovertemplate=f"{who} {name}<br>k=%{{x}}: %{{y:.4f}} J/token<extra></extra>",
                )
            )
    fig.update_layout(
        barmode="stack",
        title=f"Energy per token by term, draft vs verify (alpha {alpha}, context {mid:.0f})",
        xaxis_title="speculation window k",
        yaxis_title="energy per token (J)",
    )
    return fig


def _stage1(scn: Scenario) -> go.Figure:
    res = reload_vs_reuse(scn.params, 4096, 4096, Dtypes.of(scn.dtypes.activations), np.arange(1, 101))
    fig = go.Figure(
        go.Scatter(
            x=res["reuse"],
            y=[100 * s for s in res["energy_saving"]],
            mode="lines",
            name="load once vs reload",
            hovertemplate="reuse %{x}: %{y:.1f} % saved<extra></extra>",
        )
    )
    fig.update_layout(
        title=f"Stage I: reload 4096x4096 weights before every GEMM vs load once (copy "
        f"{res['copy_energy_j']:.3f} J, GEMM {res['gemm_energy_j']:.3f} J)",
        xaxis_title="reuse count (GEMMs per weight load)",
        yaxis_title="energy saved by loading once (%)",
    )
    return fig


def _ratio_vs_batch(res: dict) -> go.Figure:
    """Energy ratio (standard over speculative energy per token) versus batch, one line per (alpha, k), the
    crossover batch of each marked where the line falls below 1."""
    fig = go.Figure()
    for a, by_k in res["crossover"].items():
        for k, cross in by_k.items():
            rows = [r for r in res["rows"] if _label(r["alpha"]) == a and str(r["k"]) == k]
            fig.add_trace(
                go.Scatter(
                    x=[r["batch"] for r in rows],
                    y=[r["energy_ratio"] for r in rows],
                    mode="lines",
                    name=f"alpha {a}, k={k}",
                    legendgroup=a,
                    customdata=[[r["speedup"]] for r in rows],
                    hovertemplate=f"alpha {a}, k={k}<br>batch %{{x}}: energy ratio %{{y:.3f}}x<br>"
                    "speed-up %{customdata[0]:.3f}x<extra></extra>",
                )
            )
            b = cross["energy"]
            if b is not None:
                ratio = next(r["energy_ratio"] for r in rows if r["batch"] == b)
                fig.add_trace(
                    go.Scatter(
                        x=[b],
                        y=[ratio],
                        mode="markers",
                        showlegend=False,
                        legendgroup=a,
                        marker=dict(symbol="x", size=12, color="black"),
                        hovertemplate=f"crossover at alpha {a}, k={k}: from batch {b} speculation costs more energy"
                        "<extra></extra>",
                    )
                )
    fig.add_hline(y=1.0, line_dash="dash", annotation_text="no saving (energy ratio 1)")
    fig.update_layout(
        title="Energy ratio (standard / speculative energy per token) vs batch; x: the crossover batch",
        xaxis_title="batch (sequences decoded together)",
        yaxis_title="energy ratio (above 1: speculation saves)",
        xaxis_type="log",
    )
    return fig


def prediction_report(prediction, path: str) -> None:
    """Write the report of a shivam.api.Prediction to `path`. With several batch sizes: the energy ratio versus
    batch with its crossovers, and the other figures at the smallest batch."""
    scn: Scenario = prediction.scenario
    res = prediction.to_dict()
    extra = []
    if prediction.crossover is not None:
        extra = [_ratio_vs_batch(res)]
        first = res["batch"][0]
        scn = dataclasses.replace(scn, batch=first)
        res = {**res, "rows": [r for r in res["rows"] if r["batch"] == first]}
    ks = sorted({r["k"] for r in res["rows"]})
    summary = [
        [
            a,
            b["best_k_energy"],
            b["best_k_latency"],
            f"{[r for r in res['rows'] if _label(r['alpha']) == a and r['best_energy']][0]['energy_ratio']:.2f}x",
        ]
        for a, b in res["best"].items()
    ]
    skip = ("rows", "best", "contexts_averaged", "required_alpha", "best_by_batch", "crossover")
    run = [[k, v] for k, v in res.items() if k not in skip]
    sections = [
        f"<p>Predicted by <code>shivam predict</code>. Parameters: {html.escape(res['parameters'])}.</p>",
        "<h2>Summary</h2>",
        html_table(["alpha", "best k (energy)", "best k (latency)", "energy ratio at best k"], summary),
        *(
            [
                "<h2>Crossover batches (predicted)</h2>",
                html_table(
                    ["alpha", "k", "energy: costs more from batch", "latency: slower from batch"],
                    [
                        [a, k, c["energy"] or "never in the scan", c["latency"] or "never in the scan"]
                        for a, by_k in prediction.crossover.items()
                        for k, c in by_k.items()
                    ],
                ),
            ]
            if prediction.crossover is not None
            else []
        ),
        "<h2>Run parameters</h2>",
        html_table(["setting", "value"], run),
    ]
    figs = [*extra, _energy_vs_k(res), *_heatmaps(scn, ks), _roofline(scn, ks), _breakdown(scn, res, ks), _stage1(scn)]
    write_page(path, f"shivam: {res['model']} on {res['gpu_name']} ({res['engine']} engine)", sections, figs)
