"""What each `shivam` subcommand does: builds the scenario from the arguments, runs the model, prints."""

from __future__ import annotations

import json
import sys

from shivam.cli import DEFAULT_DRAFT
from shivam.errors import ShivamError
from shivam.hardware import bundled_calibration, gpu_ids, load_gpu, make_params, resolve_params
from shivam.modelspec import bundled_index, load_model
from shivam.parsing import parse_floats, parse_ints, parse_ks, parse_positive_int
from shivam.predict import Scenario, prediction
from shivam.workload import Dtypes

J_PER_KWH = 3.6e6


def build_scenario(args, ks=(0,), need_draft=False) -> tuple[Scenario, dict]:
    gpu = load_gpu(args.gpu)
    target = load_model(args.model)
    draft_ref = args.draft or (DEFAULT_DRAFT if need_draft else None)
    draft = load_model(draft_ref) if draft_ref else None
    default = gpu.default_dtype()
    dtypes = Dtypes.of(args.weights_dtype or default, args.act_dtype or default, args.kv_dtype)
    for dt in {dtypes.compute}:
        if dt not in gpu.peak_tflops:
            raise ShivamError(f"{gpu.name} has no {dt} arithmetic; choose --act-dtype from {', '.join(gpu.peak_tflops)}")
    params = resolve_params(gpu, args.engine, args.calibration, use_bundled=not args.no_calibration)
    scn = Scenario(target=target, params=params, dtypes=dtypes, draft=draft,
                   batch=parse_positive_int(args.batch, "--batch"), prompt=parse_positive_int(args.prompt, "--prompt", 0),
                   gen=parse_positive_int(args.gen, "--gen"))
    scn.check_fits(max(ks), gpu.name)
    meta = {"model": target.name, "draft": draft.name if draft else None, "gpu": gpu.id, "gpu_name": gpu.name,
            "engine": args.engine, "parameters": params.source, "calibrated": params.source.startswith("calibration"),
            "weights_dtype": dtypes.weights, "act_dtype": dtypes.activations, "kv_dtype": dtypes.kv,
            "batch": scn.batch, "prompt": scn.prompt, "gen": scn.gen,
            "default_draft_used": draft is not None and args.draft is None}
    return scn, meta


def cmd_predict(args) -> int:
    ks = parse_ks(args.k)
    positional = parse_floats(args.acceptance, "--acceptance", 0, 1) if args.acceptance else None
    alphas = None if positional else parse_floats(args.alpha, "--alpha", 0, 1)
    ratio = float(parse_floats(args.target_ratio, "--target-ratio", 1e-6, 1e6)[0]) if args.target_ratio else None
    scn, meta = build_scenario(args, ks, need_draft=max(ks) > 0)
    result = {**meta, **prediction(scn, ks, alphas, positional, ratio)}
    if args.units == "kWh":
        for row in result["rows"]:
            row["energy_per_token_kwh"] = row["energy_per_token_j"] / J_PER_KWH
    if args.report:
        from shivam.report import prediction_report

        prediction_report(scn, result, args.report)
    if args.format == "json":
        json.dump(result, sys.stdout, indent=1)
        print()
    elif args.format == "csv":
        _print_csv(result["rows"])
    else:
        from shivam.render import prediction_table

        prediction_table(result, args.units)
    return 0


def _print_csv(rows: list[dict]) -> None:
    import csv

    flat = [{**{k: v for k, v in r.items() if k != "breakdown_j"},
             **{f"energy_{k}_j": v for k, v in r["breakdown_j"].items()}} for r in rows]
    writer = csv.DictWriter(sys.stdout, fieldnames=list(flat[0]))
    writer.writeheader()
    writer.writerows(flat)


def cmd_inspect(args) -> int:
    from shivam.render import inspect_model

    model = load_model(args.model)
    gpu = load_gpu(args.gpu) if args.gpu else None
    default = gpu.default_dtype() if gpu else "bf16"
    dtypes = Dtypes.of(args.weights_dtype or default, None, args.kv_dtype)
    inspect_model(model, dtypes, parse_positive_int(args.context, "--context", 0), gpu, args.format)
    return 0


def cmd_models(args) -> int:
    from shivam.render import table

    rows = []
    for alias, entry in bundled_index().items():
        m = load_model(alias)
        rows.append([alias, entry["hf_id"], m.family, f"{m.param_count() / 1e9:.3f} B", m.attention_kind,
                     f"{m.kv_bytes_per_token(2):,.0f}"])
    table("Bundled models", ["alias", "Hugging Face id", "family", "parameters", "attention", "KV B/token (16-bit)"], rows)
    return 0


def cmd_gpus(args) -> int:
    from shivam.render import table

    rows = []
    for gid in gpu_ids():
        g = load_gpu(gid)
        rows.append([gid, g.name, f"{g.memory.capacity_gb:g} GB {g.memory.type}", f"{g.memory.bandwidth_gbs:g}",
                     ", ".join(f"{k} {v:g}" for k, v in g.peak_tflops.items()), f"{g.tdp_w:g}",
                     f"{g.energy.dram_board_pj_per_bit.value:g}", "yes" if bundled_calibration(gid, "graph") else "no"])
    table("Bundled GPUs", ["id", "name", "memory", "GB/s", "dense TFLOP/s", "TDP W", "pJ/bit (board)", "calibrated"], rows)
    return 0


def cmd_stage1(args) -> int:
    from shivam.stage1 import reload_vs_reuse

    gpu = load_gpu(args.gpu)
    dt = Dtypes.of(args.dtype or gpu.default_dtype())
    reuse = parse_ints(args.reuse, "--reuse", 1, 100_000, "the reuse count")
    res = reload_vs_reuse(make_params(gpu), parse_positive_int(args.size, "--size"),
                          parse_positive_int(args.tokens, "--tokens"), dt, reuse)
    if args.format == "json":
        json.dump({"gpu": gpu.id, "dtype": dt.weights, **res}, sys.stdout, indent=1)
        print()
        return 0
    from shivam.render import table

    picks = sorted({0, len(reuse) // 4, len(reuse) // 2, len(reuse) - 1} | {i for i, r in enumerate(reuse) if r in (1, 10, 100)})
    rows = [[f"{res['reuse'][i]:g}", f"{res['energy_reload_j'][i]:.3f}", f"{res['energy_reuse_j'][i]:.3f}",
             f"{100 * res['energy_saving'][i]:.1f} %"] for i in picks]
    table(f"Stage I on {gpu.name}: copy {res['copy_energy_j']:.3f} J / {1e3 * res['copy_time_s']:.2f} ms, "
          f"GEMM {res['gemm_energy_j']:.3f} J / {1e3 * res['gemm_time_s']:.2f} ms ({res['gemm_bound']}-bound)",
          ["reuse", "reload every time, J", "load once, J", "saving"], rows)
    return 0


def cmd_overview(args) -> int:
    """Decode (k=0) and speculative (k=4, alpha=0.8, OPT-125M draft) energy per token, every model x GPU that fits."""
    from types import SimpleNamespace

    out = []
    for alias in bundled_index():
        for gid in gpu_ids():
            ns = SimpleNamespace(gpu=gid, model=alias, draft=DEFAULT_DRAFT, weights_dtype=None, act_dtype=None,
                                 kv_dtype=None, engine="graph", calibration=None, no_calibration=False,
                                 batch="1", prompt="128", gen="128")
            try:
                scn, _ = build_scenario(ns, (4,), need_draft=True)
            except ShivamError as exc:
                out.append({"model": alias, "gpu": gid, "error": str(exc).split(":")[0]})
                continue
            res = prediction(scn, [4], [0.8])
            base, spec = res["rows"][0], res["rows"][1]
            out.append({"model": alias, "gpu": gid, "decode_ms": 1e3 * base["time_per_token_s"],
                        "decode_j": base["energy_per_token_j"], "spec_j": spec["energy_per_token_j"],
                        "energy_ratio": spec["energy_ratio"], "bound": base["verify_bound"]})
    if args.format == "json":
        json.dump(out, sys.stdout, indent=1)
        print()
        return 0
    from shivam.render import table

    rows = [[o["model"], o["gpu"], *(["does not fit"] + [""] * 4 if "error" in o else
             [f"{o['decode_ms']:.2f}", f"{o['decode_j']:.3f}", f"{o['spec_j']:.3f}", f"{o['energy_ratio']:.2f}x",
              o["bound"]])] for o in out]
    table("Energy per token, batch 1, prompt 128 + 128 generated (speculative: OPT-125M draft, k=4, alpha=0.8)",
          ["model", "gpu", "decode ms/tok", "decode J/tok", "spec J/tok", "energy ratio", "decode bound"], rows)
    return 0


def cmd_validate(args) -> int:
    from shivam.validate.cli import validate

    return validate(args)


def _fixes(items: list[str]) -> dict:
    from shivam.fit import ENERGY_PARAMS, TIME_PARAMS

    out = {}
    for item in items:
        name, _, value = item.partition("=")
        if name not in TIME_PARAMS + ENERGY_PARAMS:
            raise ShivamError(f"--fix {item!r}: unknown parameter; choose from {', '.join(TIME_PARAMS + ENERGY_PARAMS)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise ShivamError(f"--fix {item!r}: give NAME=NUMBER") from None
    return out


def cmd_fit(args) -> int:
    from shivam.fit import base_params, calibration_file, error_stats, fit, load_results, predictions
    from shivam.render import table

    data, gpu = load_results(args.results, args.engine)
    gpu = args.gpu or gpu
    fixes = _fixes(args.fix)
    result = fit(data, base_params(gpu, args.engine), fixes, strict=True, card_factors=args.card_factors)
    cal = calibration_file(result, gpu, args.engine, [str(p) for p in args.results],
                           note=f"shivam fit {' '.join(args.results)} --engine {args.engine} "
                                f"{' '.join('--fix ' + f for f in args.fix)}{' --card-factors' * args.card_factors}".strip())
    from pathlib import Path

    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(cal.model_dump_json(indent=1) + "\n")
    rows = [[n, f"{v:.6g}", f"{result.uncertainty[n]:.3g}" if n in result.uncertainty else "-", "fixed" if n in fixes else "fitted"]
            for n, v in result.values.items()]
    rows += [[n, f"{v:.6g}", "-", "held (no data moves it)"] for n, v in result.held.items()]
    rows += [[f"card factor {c[:40]}", f"{v:.4f}", "-", "fitted"] for c, v in result.card_factors.items()]
    rows_pred = predictions(data, result.params, result.card_factors)
    e, t = error_stats([r["energy_err"] for r in rows_pred]), error_stats([r["time_err"] for r in rows_pred])
    table(f"Fitted {gpu}/{args.engine} from {len(data)} points -> {args.output}", ["parameter", "value", "± 1 sd", ""],
          rows, f"residuals: energy median {100 * e['median']:.1f} %, max {100 * e['max']:.1f} %; "
                f"time median {100 * t['median']:.1f} %, max {100 * t['max']:.1f} %")
    return 0


def cmd_check(args) -> int:
    from shivam.fit import (base_params, best_k_check, card_factors_for, error_stats, leave_one_group_out,
                            load_results, predictions)

    data, gpu = load_results(args.results, args.engine)
    gpu = args.gpu or gpu
    params = resolve_params(load_gpu(gpu), args.engine, args.calibration)
    factors = card_factors_for(data, params) if args.card_factors else None  # one energy scale per card
    rows = predictions(data, params, factors)
    stats = {key: error_stats([r[f"{key}_err"] for r in rows]) for key in ("time", "energy")}
    models = [m for m in data if m.group != "stage1"]
    cv = (leave_one_group_out(models, base_params(gpu, args.engine), _fixes(args.fix), args.card_factors)
          if len({m.group for m in models}) > 2 else [])
    cv_stats = {key: error_stats([r[f"{key}_err"] for r in cv]) for key in ("time", "energy")} if cv else {}
    bestk = best_k_check(rows)
    max_error = parse_floats(args.max_error, "--max-error", 0, 100)[0]
    out = {"gpu": gpu, "engine": args.engine, "parameters": params.source, "card_factors": factors or {},
           "points": rows, "errors": stats,
           "cross_validation": {"errors": cv_stats, "points": cv}, "best_k": bestk}
    if args.format == "json":
        json.dump(out, sys.stdout, indent=1)
        print()
    else:
        from shivam.render import table

        table(f"Predicted vs measured, {gpu}/{args.engine} ({params.source})",
              ["point", "ms pred", "ms meas", "err", "J pred", "J meas", "err", "J/tok pred", "J/tok meas"],
              [[r["label"][:44], f"{1e3 * r['time_pred']:.3f}", f"{1e3 * r['time_meas']:.3f}", f"{100 * r['time_err']:+.1f} %",
                f"{r['energy_pred']:.4f}", f"{r['energy_meas']:.4f}", f"{100 * r['energy_err']:+.1f} %",
                f"{r['energy_tok_pred']:.4f}" if "energy_tok_pred" in r else "-",
                f"{r['energy_tok_meas']:.4f}" if "energy_tok_meas" in r else "-"] for r in rows])
        lines = [f"all points ({stats['energy']['n']}): energy median {100 * stats['energy']['median']:.1f} %, max "
                 f"{100 * stats['energy']['max']:.1f} %; time median {100 * stats['time']['median']:.1f} %, max "
                 f"{100 * stats['time']['max']:.1f} %"]
        if cv_stats:
            lines.append(f"leave-one-model-out ({cv_stats['energy']['n']} points, {len({r['fold'] for r in cv})} models): "
                         f"energy median {100 * cv_stats['energy']['median']:.1f} %, max {100 * cv_stats['energy']['max']:.1f} %; "
                         f"time median {100 * cv_stats['time']['median']:.1f} %, max {100 * cv_stats['time']['max']:.1f} %")
        for c, v in (factors or {}).items():
            lines.append(f"card {c}: energy x {v:.3f} ({sum(m.card == c for m in data)} points)")
        for b in bestk:
            lines.append(f"best k {b['model']} alpha {b['alpha']}: measured {b['best_k_measured']}, predicted "
                         f"{b['best_k_predicted']} ({'ok' if b['ok'] else 'MISS'}, {100 * b['energy_gap']:+.1f} % energy)")
        print("\n".join(lines))
    worst = max(stats["energy"]["median"], stats["time"]["median"])
    if worst > max_error:
        print(f"shivam: median error {100 * worst:.1f} % exceeds --max-error {100 * max_error:.1f} %", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from shivam.report import validation_report

    validation_report(args)
    return 0
