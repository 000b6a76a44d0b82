"""Terminal output with rich: tables for every subcommand. Figures arrive computed; this module only formats."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from functools import partial

from rich.console import Console
from rich.table import Table

_console = Console(width=160)


# above this many rows a table is laid out as plain aligned text: rich measures every cell (about a millisecond a
# row), and a batch scan's table has thousands
RICH_ROWS = 200


def table(title: str, columns: list[str], rows: list[list[str]], caption: str | None = None) -> None:
    if len(rows) > RICH_ROWS:
        _plain_table(title, columns, [[str(x) for x in r] for r in rows], caption)
        return
    t = Table(title=title, caption=caption, title_justify="left", caption_justify="left")
    for i, c in enumerate(columns):
        t.add_column(c, justify="left" if i == 0 else "right")
    for r in rows:
        t.add_row(*[str(x) for x in r])
    _console.print(t)


def _plain_table(title: str, columns: list[str], rows: list[list[str]], caption: str | None) -> None:
    """The table's cells as aligned text (first column left, the others right, as table lays them out)."""
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]

    def line(cells):
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    rule = "-" * len(line(columns))
    text = [title, rule, line(columns), rule, *(line(r) for r in rows), rule]
    sys.stdout.write("\n".join(text + ([caption] if caption else [])) + "\n")


def _energy(j: float, units: str) -> str:
    return f"{j / 3.6e6:.3e}" if units == "kWh" else f"{j:.4f}"


def prediction_table(res: dict, units: str = "J") -> None:
    draft = (
        f", draft {res['draft']}" + (" (default: the paper's)" if res["default_draft_used"] else "")
        if res["draft"]
        else ""
    )
    tp = res.get("tp", 1)
    where = f"{res['model']}{draft} on {res['gpu_name']}"
    if tp > 1:
        on = f" on {res['draft_tp']} of them" if res["draft"] else ""
        where = f"{res['model']} on {tp} x {res['gpu_name']} (tensor-parallel over {res['link']}){draft}{on}"
    several = isinstance(res["batch"], list)
    batch = f"batches {res['batch'][0]}-{res['batch'][-1]}" if several else f"batch {res['batch']}"
    prompt = f"prompts {','.join(str(p) for p in res['prompts'])}" if res.get("prompts") else f"prompt {res['prompt']}"
    title = (
        f"{where}, {res['engine']} engine - {batch}, "
        f"{prompt} + {res['gen']} generated, weights {res['weights_dtype']}, KV {res['kv_dtype']}"
    )
    cols = [
        *(["batch"] if several else []),
        "alpha",
        "k",
        "tokens/iter",
        "ms/token",
        f"{units}/token",
        "speed-up",
        "energy ratio",
        f"floor {units}/tok",
        "verify bound",
        "draft bound",
        "best",
    ]
    rows, last_alpha, last_batch = [], None, None
    for r in res["rows"]:
        label = ",".join(f"{a:g}" for a in r["alpha"]) if isinstance(r["alpha"], list) else f"{r['alpha']:g}"
        if r["batch"] != last_batch:
            last_alpha = None
        alpha = label if label != last_alpha else ""
        last_alpha = label
        best = " ".join(
            tag for tag, flag in (("<- energy", r["best_energy"]), ("<- latency", r["best_latency"])) if flag
        )
        if several and r["k"]:
            marks = [
                tag
                for tag, key in (("E-crossover", "crossover_batch_energy"), ("T-crossover", "crossover_batch_latency"))
                if r.get(key) == r["batch"]
            ]
            best = " ".join([best, *marks]).strip()
        batch_cell = [str(r["batch"]) if r["batch"] != last_batch else ""] if several else []
        last_batch = r["batch"]
        rows.append(
            [
                *batch_cell,
                alpha,
                r["k"],
                f"{r['tokens_per_iteration']:.2f}",
                f"{1e3 * r['time_per_token_s']:.3f}",
                _energy(r["energy_per_token_j"], units),
                f"{r['speedup']:.2f}x",
                f"{r['energy_ratio']:.2f}x",
                _energy(r["floor_energy_per_token_j"], units),
                r["verify_bound"],
                r["draft_bound"] or "-",
                best,
            ]
        )
    caption = (
        f"parameters: {res['parameters']}. k=0 is standard decoding; speed-up and energy ratio are k=0 over k "
        f"(above 1 is better). Floor: bytes that must move x DRAM-device energy per byte."
    )
    if res.get("power_limit_w"):
        window = res.get("power_limit_window_s")
        caption += (
            f" Power limit {res['power_limit_w']:g} W"
            + (f", held over the limiter's {1e3 * window:g} ms window" if window else ", held per iteration")
            + (" (every step clocked down to it)." if res.get("power_limit_steps") else ".")
        )
    band = res["band"]
    caption += (
        f"\n90 % band: energy x {band['energy'][0]:.2f}-{band['energy'][1]:.2f}, time x {band['time'][0]:.2f}-"
        f"{band['time'][1]:.2f} of the figures ({band['basis'].split(':')[0]}; rows carry _low/_high)"
    )
    outside = [name for name in ("energy", "time") if not band[name][0] <= 1 <= band[name][1]]
    if outside:  # a datasheet-only band: the measurements it comes from fell to one side of such figures
        caption += f"; the {' and '.join(outside)} figures lie outside it: a measurement is expected in the band"
    base = next(r for r in res["rows"] if r["k"] == 0)
    best_rows = [r for r in res["rows"] if r["best_energy"] and r["k"]]
    caption += (
        f"\nper request ({res['prompt']:g} + {res['gen']} tokens, batch {base['batch']}; vLLM's names): "
        f"TTFT {1e3 * base['ttft_s']:.1f} ms, "
        f"prefill {base['prefill_energy_j']:.3f} J; standard decoding {base['energy_per_request_j']:.3f} J and "
        f"{base['time_per_request_s']:.3f} s per request, {base['energy_per_output_token_j']:.4f} J per output token "
        f"with the prefill"
    )
    if best_rows and not several:
        b = best_rows[0]
        caption += (
            f"; at alpha {b['alpha'] if not isinstance(b['alpha'], list) else 'given'}, k={b['k']}: "
            f"{b['energy_per_request_j']:.3f} J and {b['time_per_request_s']:.3f} s (TTFT {1e3 * b['ttft_s']:.1f} ms "
            f"with the draft's prefill)"
        )
    if several:
        caption += "\nE-crossover / T-crossover: the smallest batch at which that k costs more energy / time per token"
    if "required_alpha" in res:
        need = ", ".join(
            f"k={k}: {'unreachable' if a is None else f'{a:.3f}'}" for k, a in res["required_alpha"].items()
        )
        caption += f"\nalpha needed for the target energy ratio: {need}"
    table(title, cols, rows, caption)


def crossover_table(res: dict) -> None:
    """The crossover batches by alpha (rows) and k (columns): E the batch from which speculation costs more energy
    per token than standard decoding, T the batch from which it is slower."""
    batches = res["batch"]
    scan = f"{batches[0]}-{batches[-1]}" if len(batches) > 2 else ",".join(str(b) for b in batches)
    title = (
        f"{res['model']}, draft {res['draft']} on {res['gpu_name']}, {res['engine']} engine - batch scanned {scan}, "
        f"prompt {res['prompt']:g} + {res['gen']} generated, weights {res['weights_dtype']}, {res['sampling']} "
        f"verification"
    )

    def cell(c: dict) -> str:
        def one(b):
            return f"> {batches[-1]}" if b is None else f"{b}"

        return f"E {one(c['energy'])} / T {one(c['latency'])}"

    rows = [[alpha, *(cell(by_k[str(k)]) for k in res["ks"])] for alpha, by_k in res["crossover"].items()]
    caption = (
        f"parameters: {res['parameters']}. E: the smallest batch at which speculation costs more energy per token "
        f"than standard decoding; T: the smallest at which it is slower; > {batches[-1]}: it saves at every batch "
        f"scanned. Predicted, not measured."
    )
    if res.get("alpha_concentration"):
        caption += f" Acceptance spread over sequences: Beta with concentration {res['alpha_concentration']:g}."
    table(title, ["alpha", *(f"k={k}" for k in res["ks"])], rows, caption)


def inspect_table(info: dict) -> None:
    head = (
        f"{info['model']} ({info['family']}): {info['parameters']:,} parameters ({info['active_parameters']:,} "
        f"active), {info['layers']} layers x {info['params_per_layer']:,}, {info['attention']}, "
        f"KV {info['kv_bytes_per_token']:,.0f} B/token in {info['kv_dtype']}"
    )
    rows = [
        [
            o["name"],
            o["kind"],
            o["repeat"],
            f"{o['flops']:,.0f}",
            f"{o['weight_bytes']:,.0f}",
            f"{o['kv_read_bytes']:,.0f}",
            f"{o['kv_write_bytes']:,.0f}",
            f"{o['act_bytes']:,.0f}",
        ]
        for o in info["operators"]
    ]
    cap = (
        f"one decode token at context {info['context']}: {info['decode_flops_per_token']:,.0f} FLOPs, "
        f"{info['decode_bytes_per_token']:,.0f} bytes"
    )
    if "gpu" in info:
        cap += (
            f"; on {info['gpu_name']}: {1e3 * info['decode_time_s']:.3f} ms, {info['decode_energy_j']:.4f} J, "
            f"{info['decode_bound']}-bound ({info['parameters_source']})"
        )
    table(
        head,
        [
            "operator (per layer x repeat)",
            "kind",
            "repeat",
            "FLOPs",
            "weight B",
            "KV read B",
            "KV write B",
            "activation B",
        ],
        rows,
        cap,
    )


def stage1_table(res: dict) -> None:
    reuse = res["reuse"]
    picks = sorted(
        {0, len(reuse) // 4, len(reuse) // 2, len(reuse) - 1} | {i for i, r in enumerate(reuse) if r in (1, 10, 100)}
    )
    rows = [
        [
            f"{res['reuse'][i]:g}",
            f"{res['energy_reload_j'][i]:.3f}",
            f"{res['energy_reuse_j'][i]:.3f}",
            f"{100 * res['energy_saving'][i]:.1f} %",
        ]
        for i in picks
    ]
    table(
        f"Stage I on {res['gpu_name']} ({res['dtype']}): copy {res['copy_energy_j']:.3f} J / "
        f"{1e3 * res['copy_time_s']:.2f} ms, GEMM {res['gemm_energy_j']:.3f} J / {1e3 * res['gemm_time_s']:.2f} ms "
        f"({res['gemm_bound']}-bound)",
        ["reuse", "reload every time, J", "load once, J", "saving"],
        rows,
    )


def overview_table(out: list[dict]) -> None:
    rows = [
        [
            o["model"],
            o["gpu"],
            *(
                ["does not fit"] + [""] * 5
                if "error" in o
                else [
                    f"{o['decode_ms']:.2f}",
                    f"{o['decode_j']:.3f}",
                    f"{o['spec_j']:.3f}",
                    f"{o['energy_ratio']:.2f}x",
                    o["bound"],
                    "calibrated" if o["calibrated"] else "datasheet",
                ]
            ),
        ]
        for o in out
    ]
    table(
        "Energy per token, batch 1, prompt 128 + 128 generated (speculative: OPT-125M draft, k=4, alpha=0.8)",
        ["model", "gpu", "decode ms/tok", "decode J/tok", "spec J/tok", "energy ratio", "decode bound", "parameters"],
        rows,
        "parameters: calibrated = fitted to measurements on that GPU (hardware/calibrated/); datasheet = "
        "datasheet figures and energy estimates",
    )


def fit_table(outcome, output: str) -> None:
    result, e, t = outcome.result, outcome.energy_errors, outcome.time_errors
    rows = [
        [
            n,
            f"{v:.6g}",
            f"{result.uncertainty[n]:.3g}" if n in result.uncertainty else "-",
            "fixed" if n in outcome.fixed else "fitted",
        ]
        for n, v in result.values.items()
    ]
    rows += [[n, f"{v:.6g}", "-", "held (no data moves it)"] for n, v in result.held.items()]
    rows += [[f"card factor {c[:40]}", f"{v:.4f}", "-", "fitted"] for c, v in result.card_factors.items()]
    cal = outcome.calibration
    table(
        f"Fitted {cal.gpu}/{cal.engine} from {outcome.points} points -> {output}",
        ["parameter", "value", "± 1 sd", ""],
        rows,
        f"residuals: energy median {100 * e['median']:.1f} %, max {100 * e['max']:.1f} %; "
        f"time median {100 * t['median']:.1f} %, max {100 * t['max']:.1f} %",
    )


def _pct(stats: dict, key: str) -> str:
    return f"{key} median {100 * stats[key]['median']:.1f} %, max {100 * stats[key]['max']:.1f} %"


def check_table(out: dict) -> None:
    rows = out["points"]
    table(
        f"Predicted vs measured, {out['gpu']}/{out['engine']} ({out['parameters']})",
        ["point", "ms pred", "ms meas", "err", "J pred", "J meas", "err", "J/tok pred", "J/tok meas"],
        [
            [
                r["label"][:44],
                f"{1e3 * r['time_pred']:.3f}",
                f"{1e3 * r['time_meas']:.3f}",
                f"{100 * r['time_err']:+.1f} %",
                f"{r['energy_pred']:.4f}",
                f"{r['energy_meas']:.4f}",
                f"{100 * r['energy_err']:+.1f} %",
                f"{r['energy_tok_pred']:.4f}" if "energy_tok_pred" in r else "-",
                f"{r['energy_tok_meas']:.4f}" if "energy_tok_meas" in r else "-",
            ]
            for r in rows
        ],
    )
    stats, cv = out["errors"], out["cross_validation"]
    held = ", ".join(f"{n}={v:g}" for n, v in out["fixed"].items()) or "none"
    lines = [
        f"recipe: {out['recipe'] or 'none'}; held in the cross-validation fits: {held}; card factors: "
        f"{'yes' if out['card_factors_fitted'] else 'no'}",
        f"all points ({stats['energy']['n']}): {_pct(stats, 'energy')}; {_pct(stats, 'time')}",
    ]
    if cv["errors"]:
        folds = len({r["fold"] for r in cv["points"]})
        by_point = sorted({r["fold"] for r in cv["points"] if r.get("left_out") == "point"})
        how = f"; {', '.join(by_point)} one point at a time" if by_point else ""
        lines.append(
            f"{'cross-validation' if by_point else 'leave-one-model-out'} ({cv['errors']['energy']['n']} points, "
            f"{folds} models{how}): {_pct(cv['errors'], 'energy')}; {_pct(cv['errors'], 'time')}"
        )
    for c, v in out["card_factors"].items():
        lines.append(f"card {c}: energy x {v:.3f} ({out['cards'][c]} points)")
    several = len({(b["batch"], b["context"]) for b in out["best_k"]}) > 1
    for b in out["best_k"]:
        where = f" b={b['batch']} c={b['context']}" if several else ""
        lines.append(
            f"best k in sample {b['model']}{where} alpha {b['alpha']}: measured {b['best_k_measured']}, predicted "
            f"{b['best_k_predicted']} ({'ok' if b['ok'] else 'MISS'}, {100 * b['energy_gap']:+.1f} % energy)"
        )
    from shivam.calibrate.evaluate import BEST_K_REGRET  # here: predict's rendering needs no calibration code

    held_out = cv.get("best_k") or []
    if held_out:
        misses = [b for b in held_out if not b["ok"]]
        lines.append(
            f"best k held out by model: {len(held_out) - len(misses)} of {len(held_out)} within "
            f"{100 * BEST_K_REGRET:g} % of the measured least energy"
            + "".join(
                f"; miss {b['model']} b={b['batch']} c={b['context']} alpha {b['alpha']}: measured "
                f"{b['best_k_measured']}, predicted {b['best_k_predicted']} ({100 * b['energy_gap']:+.1f} %)"
                for b in misses
            )
        )
    lines += _speculation_lines(out)
    print("\n".join(lines))


def _crossover_label(x, first: int) -> str:
    """A crossover batch as check prints it: none, "< first" (already under 1 at the smallest batch), or the batch."""
    return "none" if x is None else f"< {first}" if isinstance(x, str) else f"{x:.0f}"


def _speculation_lines(out: dict) -> list[str]:
    """The serving check (shivam.calibrate.serving): ratio errors and crossover batches, cross-validated where a
    cross-validation ran, else fitted on all."""
    cv = out["cross_validation"].get("speculation")
    spec, how = (cv, "cross-validated") if cv else (out.get("speculation"), "fitted on all")
    if not spec:
        return []
    lines = []
    for key, what in (("energy", "energy"), ("time", "time")):
        s = spec["summary"][key]
        e = s["errors"]
        lines.append(
            f"standard/speculative {what} ratio ({how}, {e['n']} pairs of points): error median "
            f"{100 * e['median']:.1f} %, max {100 * e['max']:.1f} %; on the measured side of 1 in {s['right_side']} "
            f"of {s['away_from_1']} away from it"
        )

    for c in spec["crossovers"]:
        e, t = c["energy"], c["latency"]
        batch = partial(_crossover_label, first=c["batches"][0])
        lines.append(
            f"crossover {c['pair']} c={c['context']} k={c['k']} alpha {c['alpha']} (batches {c['batches'][0]}-"
            f"{c['batches'][-1]}): energy measured {batch(e['measured'])}, predicted {batch(e['predicted'])} "
            f"({'ok' if e['ok'] else 'MISS'}); latency measured {batch(t['measured'])}, predicted "
            f"{batch(t['predicted'])} ({'ok' if t['ok'] else 'MISS'})"
        )
    return lines


@contextmanager
def progress_bar(what: str, enabled: bool = True):
    """Progress on stderr; yields the callback a long computation calls as (item, done, total). On a terminal a rich
    bar; elsewhere (a log, CI) one plain line per item, so that a long run still says what it is doing."""
    if not enabled:
        yield None
        return
    console = Console(stderr=True)
    if not console.is_terminal:

        def line(item: str, done: int, total: int) -> None:
            print(f"{what}: {done + 1}/{total} ({item})", file=sys.stderr, flush=True)

        yield line
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as bar:
        task = bar.add_task(what, total=None, start=False)

        def tick(item: str, done: int, total: int) -> None:
            bar.start_task(task)
            bar.update(task, description=f"{what}: {item}", completed=done, total=total)

        yield tick


def measured_table(records: list[dict]) -> None:
    table(
        "Measured (median of windows) vs predicted with datasheet estimates",
        ["point", "ms/call", "J/call", "spread", "W", "predicted J/call", "pred. error"],
        summary_rows(records),
    )


def summary_rows(records: list[dict]) -> list[list[str]]:
    rows = []
    for r in records:
        if r.get("record") != "point":
            continue
        if r["status"] != "ok":
            rows.append([r["label"], "FAILED", r.get("error", "")[:40], "", "", "", ""])
            continue
        m, pr = r["measured"], r.get("predicted") or {}
        err = ""
        if "energy_j" in pr:
            err = f"{100 * (pr['energy_j'] / m['energy_per_call_j'] - 1):+.1f} %"
        rows.append(
            [
                r["label"],
                f"{1e3 * m['time_per_call_s']:.3f}",
                f"{m['energy_per_call_j']:.4f}",
                f"{100 * m['energy_spread']:.1f} %",
                f"{m['power_w']:.0f}",
                f"{pr['energy_j']:.4f}" if "energy_j" in pr else "-",
                err,
            ]
        )
    return rows


def calibrate_summary(out: dict) -> None:
    """What `shivam calibrate` did: where the calibration went, what was fitted and held, and its band."""
    lines = [f"calibration: {out['calibration']} (engine {out['engine']})"]
    if "scale" in out:
        lines.append(
            f"this card's energy scale: x {out['scale']:.4f} against {out['base']} "
            f"(runs {', '.join(f'{s:.4f}' for s in out['runs'])}; points: {', '.join(out['points'])})"
        )
    else:
        e, t = out["energy_errors"], out["time_errors"]
        lines += [
            f"measurements: {out['measurements']} ({out['points']} points)",
            "fitted: " + ", ".join(f"{n} {v:.4g}" for n, v in out["fitted"].items()),
            "held at priors: " + ", ".join(f"{n} {v:.4g}" for n, v in out["held"].items()),
            f"residuals: energy median {100 * e['median']:.1f} %, max {100 * e['max']:.1f} %; time median "
            f"{100 * t['median']:.1f} %, max {100 * t['max']:.1f} %",
        ]
        if out.get("failed"):
            lines.append(f"left out (failed when measured): {', '.join(out['failed'])}")
        if max(e["median"], t["median"]) > 0.05:
            lines.append(
                "warning: the fit leaves more than 5 % median error: these measurements do not follow the "
                "model; look at the measurements file before trusting the calibration"
            )
        b = out["band"]
        lines.append(
            "90 % band: "
            + (
                f"energy x {b['energy'][0]:.3f}-{b['energy'][1]:.3f}, time x {b['time'][0]:.3f}-"
                f"{b['time'][1]:.3f} ({b['basis']})"
                if b
                else "none (fewer than three models measured): predictions keep the datasheet band"
            )
        )
    where = (
        f"`shivam predict --gpu {out['gpu']}` on this machine now uses it"
        if out["installed"]
        else f"written to {out['calibration']} only; pass it as --calibration"
    )
    lines.append(f"card: {out['card']['uuid']} ({out['card']['name']}); {where}")
    print("\n".join(lines))


def engine_table(records: list[dict]) -> None:
    """The engine suite's comparisons: medians of interleaved windows, ratios a / b, implied bandwidths."""
    rows = []
    for r in records:
        if r["status"] != "ok":
            rows.append([r["name"], "FAILED", r.get("error", "")[:50], "", ""])
            continue
        med = r["median"]
        rates = ", ".join(f"{k} {v:.2f}" for k, v in r.get("rates", {}).items())
        rows.append(
            [
                f"{r['a']} / {r['b']}",
                f"{1e3 * med['a']['time_per_call_s']:.3f} / {1e3 * med['b']['time_per_call_s']:.3f}",
                f"{r['time_ratio']:.3f}",
                f"{r['energy_ratio']:.3f}",
                rates,
            ]
        )
    table(
        "Engine suite (medians of interleaved windows)",
        ["a / b", "ms per call", "time a/b", "energy a/b", "rates"],
        rows,
    )
