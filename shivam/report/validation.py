"""The validation report (`shivam report`): measured against predicted for every point of results files, with the
environment, the calibration's parameters and the power traces."""

from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import plotly.graph_objects as go

from shivam.report.page import html_table, write_page


def _pred_vs_meas(rows: list[dict], key: str, unit: str, scale: float) -> go.Figure:
    fig = go.Figure()
    lo = min(min(r[f"{key}_meas"], r[f"{key}_pred"]) for r in rows) * scale
    hi = max(max(r[f"{key}_meas"], r[f"{key}_pred"]) for r in rows) * scale
    x = np.geomspace(lo * 0.8, hi * 1.25, 50)
    fig.add_trace(go.Scatter(x=x, y=x, mode="lines", name="y = x", line=dict(color="black")))
    for band, dash in ((0.05, "dot"), (0.10, "dash")):
        for sign in (1, -1):
            fig.add_trace(
                go.Scatter(
                    x=x,
                    y=x * (1 + sign * band),
                    mode="lines",
                    line=dict(color="gray", dash=dash),
                    name=f"±{int(band * 100)} %",
                    showlegend=sign == 1,
                    hoverinfo="skip",
                )
            )
    for group in sorted({r["group"] for r in rows}):
        rs = [r for r in rows if r["group"] == group]
        fig.add_trace(
            go.Scatter(
                x=[r[f"{key}_meas"] * scale for r in rs],
                y=[r[f"{key}_pred"] * scale for r in rs],
                mode="markers",
                name=group,
                text=[r["label"] for r in rs],
                customdata=[100 * r[f"{key}_err"] for r in rs],
                hovertemplate="%{text}<br>measured %{x:.4g}<br>predicted %{y:.4g}<br>"
                "error %{customdata:+.1f} %<extra></extra>",
            )
        )
    fig.update_layout(
        title=f"Predicted vs measured {key} per call",
        xaxis_title=f"measured {key} per call ({unit})",
        yaxis_title=f"predicted {key} per call ({unit})",
        xaxis_type="log",
        yaxis_type="log",
    )
    return fig


def _residuals(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    for key in ("energy", "time"):
        fig.add_trace(
            go.Box(
                x=[r["group"] for r in rows],
                y=[100 * r[f"{key}_err"] for r in rows],
                name=key,
                boxpoints="all",
                text=[r["label"] for r in rows],
                hovertemplate="%{text}<br>%{y:+.1f} %<extra>" + key + "</extra>",
            )
        )
    fig.update_layout(
        boxmode="group",
        title="Residuals by model",
        xaxis_title="target model",
        yaxis_title="error, prediction / measurement - 1 (%)",
    )
    return fig


def _residuals_by_k(rows: list[dict]) -> go.Figure:
    spec = [r for r in rows if r["kind"] == "spec"]
    fig = go.Figure()
    for group in sorted({r["group"] for r in spec}):
        rs = [r for r in spec if r["group"] == group]
        for key, symbol in (("energy", "circle"), ("time", "x")):
            fig.add_trace(
                go.Scatter(
                    x=[r["k"] for r in rs],
                    y=[100 * r[f"{key}_err"] for r in rs],
                    mode="markers",
                    marker=dict(symbol=symbol),
                    name=f"{group}: {key}",
                    text=[r["label"] for r in rs],
                    hovertemplate="%{text}<br>%{y:+.1f} %<extra>" + key + "</extra>",
                )
            )
    fig.add_hline(y=0, line_color="black")
    fig.update_layout(
        title="Residuals of speculative iterations by window k",
        xaxis_title="speculation window k",
        yaxis_title="error, prediction / measurement - 1 (%)",
    )
    return fig


def _spec_energy(rows: list[dict]) -> go.Figure:
    fig = go.Figure()
    spec = [r for r in rows if r["kind"] == "spec"]
    for group in sorted({r["group"] for r in spec}):
        base = [r for r in spec if r["group"] == group and r["k"] == 0]
        for alpha in sorted({r["alpha"] for r in spec if r["group"] == group and r["k"] > 0}):
            rs = sorted(
                base[:1] + [r for r in spec if r["group"] == group and r["k"] > 0 and r["alpha"] == alpha],
                key=lambda r: r["k"],
            )
            ks = [r["k"] for r in rs]
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=[r["energy_tok_meas"] for r in rs],
                    mode="markers",
                    name=f"{group} a={alpha} measured",
                    text=[r["label"] for r in rs],
                    hovertemplate="%{text}<br>%{y:.4f} J/token measured<extra></extra>",
                )
            )
            fig.add_trace(
                go.Scatter(
                    x=ks,
                    y=[r["energy_tok_pred"] for r in rs],
                    mode="lines",
                    name=f"{group} a={alpha} predicted",
                    hovertemplate="k=%{x}: %{y:.4f} J/token predicted<extra></extra>",
                )
            )
    fig.update_layout(
        title="Speculative decoding: energy per generated token vs k (measured tokens per call)",
        xaxis_title="speculation window k",
        yaxis_title="energy per token (J)",
    )
    return fig


def _power_traces(records: list[dict]) -> go.Figure:
    fig = go.Figure()
    for r in records:
        m = r.get("measured", {})
        traces = m.get("power_traces") or [m.get("power_trace") or []]  # older records kept the first window only
        for i, trace in enumerate(t for t in traces if t):
            name = f"{r['label']} (window {i + 1})"
            fig.add_trace(
                go.Scatter(
                    x=[t for t, _ in trace],
                    y=[p for _, p in trace],
                    mode="lines",
                    name=name,
                    hovertemplate=name + "<br>%{x:.2f} s: %{y:.0f} W<extra></extra>",
                )
            )
    fig.update_layout(
        title="Measured board power over each measurement window (one line per window)",
        xaxis_title="time since the window's opening counter edge (s)",
        yaxis_title="power (W)",
    )
    return fig


def _memory_domain(records: list[dict]) -> go.Figure | None:
    """Hopper's memory-domain power against board power, per point: the paper's hypothesis measured directly."""
    pts = [r for r in records if "memory_energy_per_call_j" in r.get("measured", {})]
    if not pts:
        return None
    fig = go.Figure()
    top = max(r["measured"]["power_w"] for r in pts) * 1.05
    for share in (0.1, 0.3, 0.5):
        fig.add_trace(
            go.Scatter(
                x=[0, top],
                y=[0, share * top],
                mode="lines",
                line=dict(color="gray", dash="dot"),
                name=f"memory = {int(share * 100)} % of board",
                hoverinfo="skip",
            )
        )
    kinds = {
        "step": "forward steps",
        "spec": "speculative iterations",
        "generate": "transformers generate()",
        "stage1": "stage I",
    }
    for kind, name in kinds.items():
        rs = [r for r in pts if r["point"]["kind"] == kind]
        if not rs:
            continue
        mem_w = [r["measured"]["memory_energy_per_call_j"] / r["measured"]["time_per_call_s"] for r in rs]
        fig.add_trace(
            go.Scatter(
                x=[r["measured"]["power_w"] for r in rs],
                y=mem_w,
                mode="markers",
                name=name,
                text=[r["label"] for r in rs],
                hovertemplate="%{text}<br>board %{x:.0f} W<br>memory domain %{y:.0f} W<extra></extra>",
            )
        )
    fig.update_layout(
        title="Memory-domain power vs board power (NVML, Hopper): how much of the energy the DRAM draws",
        xaxis_title="board power (W)",
        yaxis_title="memory-domain power (W)",
    )
    return fig


_UNITS = (
    ("_Bps", "B/s"),
    ("_s", "s"),
    ("_w", "W"),
    ("_j_per_byte", "J/B"),
    ("_bytes", "B"),
    ("efficiency", "fraction"),
    ("fraction", "fraction"),
    ("exponent", "-"),
    ("multiprocessors", "SMs"),
)


def parameter_rows(params) -> list[list[str]]:
    """The calibration's parameters as (name, value, unit, meaning) rows, the meaning from Params' descriptions."""
    from shivam.specs import Params

    rows = []
    for name, info in Params.model_fields.items():
        value = getattr(params, name)
        if name in ("kernels", "eager_dispatches", "source"):
            continue
        unit = next((u for suffix, u in _UNITS if name.endswith(suffix) or suffix in name), "")
        if isinstance(value, dict):
            unit = {"peak_flops": "FLOP/s", "j_per_flop": "J/FLOP"}.get(name, unit)
            value = ", ".join(f"{k} {v:.4g}" for k, v in value.items())
        elif isinstance(value, float):
            value = f"{value:.6g}"
        rows.append([name, value, unit, info.description or ""])
    return rows


def validation_report(
    results: list[str],
    output: str,
    calibration: str | None = None,
    engine: str = "graph",
    gpu: str | None = None,
    card_factors: bool | None = None,
) -> None:
    """Write the report of results files to `output`. card_factors None: the bundled calibration's recipe decides."""
    from shivam.calibrate import card_factors_for, error_stats, load_records, predictions
    from shivam.calibrate.workflow import results_of_one_gpu
    from shivam.specs import bundled_calibration, load_engine, load_gpu, recipe_for, resolve_params
    from shivam.specs.calibration import find_calibration

    engine = load_engine(engine).engine
    data, found = results_of_one_gpu(results, engine, gpu)
    g = load_gpu(found)
    if calibration is None:  # as check: this card's installed calibration, else the bundled one
        installed = find_calibration(g.id, engine)
        calibration = str(installed) if installed else None
    params = resolve_params(g, engine, calibration)
    if card_factors is None:  # as check: the recipe of the bundled calibration, where that is what is used
        bundled = bundled_calibration(g.id, engine)
        uses_bundled = bundled is not None and (
            calibration is None or Path(calibration).resolve() == Path(bundled).resolve()
        )
        recipe = recipe_for(g.id, engine) if uses_bundled else None
        card_factors = bool(recipe and recipe.card_factors)
    factors = card_factors_for(data, params) if card_factors else None
    rows = predictions(data, params, factors)
    everything = load_records(results)
    env = next((r for r in everything if r.get("record") == "environment"), None)
    records = [r for r in everything if r.get("record") == "point" and r.get("status") == "ok"]
    stats = {k: error_stats([r[f"{k}_err"] for r in rows]) for k in ("energy", "time")}
    summary = [
        [
            k,
            stats[k]["n"],
            f"{100 * stats[k]['median']:.1f} %",
            f"{100 * stats[k]['mean']:.1f} %",
            f"{100 * stats[k]['max']:.1f} %",
        ]
        for k in ("energy", "time")
    ]
    env_rows = [[k, env.get(k)] for k in ("gpu", "driver", "date", "power_limit_w", "max_sm_clock_mhz")] if env else []
    scaled = (
        f" Predicted energy scaled per card (factors {', '.join(f'{v:.3f}' for v in factors.values())})."
        if factors
        else ""
    )
    sections = [
        f"<p>Measured by <code>shivam validate</code>; predictions with {html.escape(params.source)}.{scaled}</p>",
        "<h2>Summary</h2>",
        html_table(["quantity", "points", "median |error|", "mean |error|", "max |error|"], summary),
        "<h2>Environment</h2>",
        html_table(["field", "value"], env_rows),
        "<h2>Parameters</h2>",
        html_table(["parameter", "value", "unit", "meaning"], parameter_rows(params)),
    ]
    figs = [_pred_vs_meas(rows, "energy", "J", 1.0), _pred_vs_meas(rows, "time", "ms", 1e3), _residuals(rows)]
    if any(r["kind"] == "spec" for r in rows):
        figs += [_residuals_by_k(rows), _spec_energy(rows)]
    memory = _memory_domain(records)
    figs += [memory] if memory is not None else []
    figs.append(_power_traces(records))
    write_page(output, f"shivam validation: {g.name}, {engine} engine", sections, figs)
