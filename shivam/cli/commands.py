"""What each `shivam` subcommand does: turn its string options into values, call the API, render the answer.

No cost is computed here: every figure comes from shivam.api, shivam.calibrate or shivam.report.
"""

from __future__ import annotations

import json
import sys

import shivam.api as api
from shivam.cli.ranges import parse_float, parse_floats, parse_int, parse_ints, parse_whole
from shivam.errors import ShivamError

J_PER_KWH = 3.6e6


def _warn(warnings: list[str]) -> None:
    for w in warnings:
        print(f"shivam: warning: {w}", file=sys.stderr)


def _print_json(doc) -> None:
    """A document one top-level key per line and, in a list of records (predict's rows), one record per line:
    readable, and written by json's C encoder (an indented dump of a batch scan's ten thousand rows takes seconds)."""
    if not isinstance(doc, dict):
        sys.stdout.write(json.dumps(doc) + "\n")
        return

    def value(v) -> str:
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            return "[\n" + ",\n".join("  " + json.dumps(x) for x in v) + "\n ]"
        return json.dumps(v)

    body = ",\n".join(f" {json.dumps(str(key))}: {value(v)}" for key, v in doc.items())
    sys.stdout.write("{\n" + body + "\n}\n")


def _calibration(args):
    if args.no_calibration and args.calibration:
        raise ShivamError("--calibration and --no-calibration are exclusive: give one")
    return False if args.no_calibration else args.calibration


def _scenario_kwargs(args) -> dict:
    """The options _scenario_args adds, as the API's arguments."""
    scan = ".." in args.batch or "," in args.batch  # one batch size's range the API checks, with its message
    batch = (
        parse_ints(args.batch, "--batch", 1, api.MAX_BATCH, "the batch") if scan else parse_whole(args.batch, "--batch")
    )
    return dict(
        model=args.model,
        gpu=args.gpu,
        draft=args.draft,
        batch=batch,
        prompt=parse_whole(args.prompt, "--prompt"),
        gen=parse_whole(args.gen, "--gen"),
        prompts=parse_ints(args.prompts, "--prompts", 0, api.MAX_TOKENS, "a prompt length")
        if args.prompts is not None
        else None,
        sampling=args.sampling,
        alpha_concentration=parse_float(args.alpha_concentration, "--alpha-concentration", 1e-3, 1e6)
        if args.alpha_concentration is not None
        else None,
        power_limit=args.power_limit,
        engine=args.engine,
        calibration=_calibration(args),
        weights_dtype=args.weights_dtype,
        act_dtype=args.act_dtype,
        kv_dtype=args.kv_dtype,
        tp=parse_whole(args.tp, "--tp"),
        draft_tp=parse_whole(args.draft_tp, "--draft-tp"),
    )


def cmd_predict(args) -> int:
    if args.report:
        from shivam.userfiles import writable_file

        writable_file(args.report, "--report")  # refuse before computing
    res = api.predict(
        k=parse_ints(args.k, "--k", 0, api.K_MAX, "the speculation window"),
        alpha=parse_floats(args.alpha, "--alpha", 0, 1) if args.alpha is not None else None,
        acceptance=parse_floats(args.acceptance, "--acceptance", 0, 1) if args.acceptance is not None else None,
        target_ratio=parse_float(args.target_ratio, "--target-ratio", 1e-6, 1e6) if args.target_ratio else None,
        **_scenario_kwargs(args),
    )
    doc = res.to_dict()
    if args.units == "kWh":
        for row in doc["rows"]:
            row["energy_per_token_kwh"] = row["energy_per_token_j"] / J_PER_KWH
    if args.report:  # written before any warning: a report that cannot be written ends the command in one line
        from shivam.report import prediction_report

        prediction_report(res, args.report)
    _warn(res.warnings)
    if args.report:
        print(f"shivam: wrote the report {args.report}", file=sys.stderr)
    if args.format == "json":
        _print_json(doc)
    elif args.format == "csv":
        import csv

        flat = api.flat_rows(doc["rows"])
        writer = csv.DictWriter(sys.stdout, fieldnames=list(flat[0]))
        writer.writeheader()
        writer.writerows(flat)
    else:
        from shivam.cli.render import prediction_table

        prediction_table(doc, args.units)
    return 0


def cmd_crossover(args) -> int:
    kwargs = _scenario_kwargs(args)
    if not isinstance(kwargs["batch"], list):
        raise ShivamError(f"--batch {args.batch}: the crossover scans batch sizes; give a range such as 1..256")
    res = api.crossover(
        k=parse_ints(args.k, "--k", 1, api.K_MAX, "the speculation window"),
        alpha=parse_floats(args.alpha, "--alpha", 0, 1),
        **kwargs,
    )
    _warn(res["warnings"])
    if args.format == "json":
        _print_json(res)
    else:
        from shivam.cli.render import crossover_table

        crossover_table(res)
    return 0


def cmd_inspect(args) -> int:
    info = api.inspect(
        args.model,
        args.gpu,
        parse_whole(args.context, "--context"),
        args.weights_dtype,
        args.kv_dtype,
        args.engine,
        _calibration(args),
    )
    if args.format == "json":
        _print_json(info)
    else:
        from shivam.cli.render import inspect_table

        inspect_table(info)
    return 0


def cmd_models(args) -> int:
    from shivam.cli.render import table
    from shivam.specs import bundled_index, load_model, nbytes

    rows = []
    for alias, entry in bundled_index().items():
        m = load_model(alias)
        rows.append(
            [
                alias,
                entry["hf_id"],
                m.family,
                f"{m.param_count() / 1e9:.3f} B",
                m.attention_kind,
                f"{m.kv_bytes_per_token(nbytes('bf16')):,.0f}",
            ]
        )
    table(
        "Bundled models", ["alias", "Hugging Face id", "family", "parameters", "attention", "KV B/token (16-bit)"], rows
    )
    return 0


def cmd_gpus(args) -> int:
    from shivam.specs import GPU, bundled_calibration, engine_ids, gpu_ids, load_gpu

    if args.schema:
        _print_json(GPU.model_json_schema())
        return 0
    from shivam.cli.render import table

    rows = []
    for gid in gpu_ids():
        g = load_gpu(gid)
        calibrated = [e for e in engine_ids() if bundled_calibration(gid, e)]
        rows.append(
            [
                gid,
                g.name,
                f"{g.memory.capacity_gb:g} GB {g.memory.type}",
                f"{g.memory.bandwidth_gbs:g}",
                ", ".join(f"{k} {v:g}" for k, v in g.peak_tflops.items()),
                f"{g.tdp_w:g}",
                f"{g.energy.dram_board_pj_per_bit.value:g}",
                ", ".join(calibrated) or "no",
            ]
        )
    table(
        "Bundled GPUs",
        ["id", "name", "memory", "GB/s", "dense TFLOP/s", "TDP W", "pJ/bit (board)", "calibrated"],
        rows,
        "your own GPU: a file in this schema (`shivam gpus --schema`), passed as --gpu path/to/gpu.json",
    )
    return 0


def cmd_engines(args) -> int:
    from shivam.cli.render import table
    from shivam.specs import engine_ids, load_engine

    rows = [[e, load_engine(e).description, load_engine(e).dispatch_counts] for e in engine_ids()]
    table(
        "Bundled engine profiles (hardware/engines/)",
        ["engine", "description", "host cost counts"],
        rows,
        "your own engine: a profile file in the same schema, passed as --engine path/to/engine.json",
    )
    return 0


def cmd_calibrations(args) -> int:
    from shivam.cli.render import table
    from shivam.specs import engine_ids, gpu_ids, load_calibration, recipe_for
    from shivam.specs.calibration import bundled_calibration, user_calibrations, user_calibrations_dir

    rows = []
    for gid in gpu_ids():
        for e in engine_ids():
            path = bundled_calibration(gid, e)
            if path:
                cal, recipe = load_calibration(path), recipe_for(gid, e)
                held = ", ".join(recipe.fix) if recipe else "-"
                rows.append([gid, e, "bundled", str(path.name), f"{len(cal.card_factors)} cards", held])
    for path, cal in user_calibrations():
        card = f"{cal.card.uuid[:12]} ({cal.card.name})" if cal.card else "-"
        rows.append([cal.gpu, cal.engine, "installed", str(path), card, (cal.created or "")[:16]])
    table(
        "Calibrations",
        ["gpu", "engine", "where", "file", "card(s)", "held / created"],
        rows,
        f"installed calibrations (`shivam calibrate`) live in {user_calibrations_dir()}; predict uses this card's, "
        f"else the newest of its GPU model, else the bundled one",
    )
    return 0


def cmd_stage1(args) -> int:
    res = api.stage1(
        args.gpu,
        parse_whole(args.size, "--size"),
        parse_whole(args.tokens, "--tokens"),
        parse_ints(args.reuse, "--reuse", 1, 100_000, "the reuse count"),
        args.dtype,
    )
    if args.format == "json":
        _print_json({k: v for k, v in res.items() if k != "gpu_name"})
        return 0
    from shivam.cli.render import stage1_table

    stage1_table(res)
    return 0


def cmd_overview(args) -> int:
    out = api.overview()
    if args.format == "json":
        _print_json(out)
        return 0
    from shivam.cli.render import overview_table

    overview_table(out)
    return 0


def cmd_validate(args) -> int:
    import shlex

    tp = parse_int(args.tp, "--tp")
    if tp > 1:  # the tensor-parallel suite: torchrun, one process per GPU
        from importlib.util import find_spec
        from pathlib import Path

        if find_spec("torch") is None:
            raise ShivamError("the validator needs torch; install the extra: pip install 'shivam[validate]'")
        from shivam.validate.tp import launch

        out = str(Path(args.out or "validation/results/tp") / f"tp{tp}.jsonl")
        rc = launch(tp, out)
        print(f"tensor-parallel suite over {tp} GPUs: records in {out}" if rc == 0 else f"torchrun exited {rc}")
        return rc
    from shivam.validate.campaign import run_validation, select_points
    from shivam.validate.suites import SUITES

    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    command = "shivam " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if "engine" in suites:
        if suites != ["engine"] or args.points_file:
            raise ShivamError("--suite engine runs on its own: give it without other suites or --points-file")
        if args.simulate_meter:
            raise ShivamError(
                "the engine suite compares kernels on a GPU; it has no simulated run: drop --simulate-meter"
            )
        from shivam.cli.render import engine_table
        from shivam.validate.campaign import run_engine_validation

        path, written = run_engine_validation(args.out, parse_int(args.gpu_index, "--gpu-index", 0), command)
        engine_table(written)
        print(f"{len(written)} comparisons measured this run, in {path}")
        return 0
    unknown = [s for s in suites if s not in SUITES]
    if unknown and not args.points_file:
        raise ShivamError(f"unknown suite {unknown[0]!r}: use {', '.join(SUITES)} or engine")
    points = select_points(
        suites, args.engine, parse_int(args.limit, "--limit") if args.limit else None, args.points_file
    )
    path, written = run_validation(
        points,
        args.out,
        "points" if args.points_file else "_".join(suites),
        parse_int(args.gpu_index, "--gpu-index", 0),
        parse_int(args.repeats, "--repeats"),
        parse_int(args.min_periods, "--min-periods"),
        parse_float(args.max_spread, "--max-spread", 0, 1),
        parse_int(args.extensions, "--extensions", 0),
        args.weights,
        args.subtract_idle,
        args.codecarbon,
        args.simulate_meter,
        command=command,
    )
    from shivam.calibrate.results import read_records
    from shivam.cli.render import measured_table

    all_points = [r for r in read_records(path) if r.get("record") == "point"]
    measured_table(all_points)
    failed = sum(r["status"] != "ok" for r in written)
    print(f"{len(written)} points measured this run ({failed} failed), {len(all_points)} in {path}")
    return 0


def cmd_calibrate(args) -> int:
    import shlex

    from shivam.cli.render import calibrate_summary
    from shivam.validate.calibration import calibrate, calibrate_card, refit

    if args.refit is not None:
        measuring = [
            f
            for f, on in (
                ("--quick", args.quick),
                ("--card", args.card),
                ("--engine", args.engine),
                ("--simulate-meter", args.simulate_meter),
            )
            if on
        ]
        if measuring:
            raise ShivamError(
                f"--refit fits measurements already taken; {', '.join(measuring)} belong to a run that measures: "
                f"drop them (the file says its suite and engine)"
            )
        calibrate_summary(refit(args.refit, output=args.output, gpu=args.gpu))
        return 0
    if args.simulate_meter and args.gpu is None:
        raise ShivamError("--simulate-meter needs --gpu: the GPU whose figures the simulated run stands in for")
    if args.card and args.quick:
        raise ShivamError("--card and --quick are exclusive: --card measures only this card's energy scale")
    common = dict(
        output=args.output,
        gpu=args.gpu,
        gpu_index=parse_int(args.gpu_index, "--gpu-index", 0),
        engine=args.engine,
        simulate_meter=args.simulate_meter,
        min_periods=parse_int(args.min_periods, "--min-periods"),
        command="shivam " + " ".join(shlex.quote(a) for a in sys.argv[1:]),
    )
    out = calibrate_card(**common) if args.card else calibrate(quick=args.quick, **common)
    calibrate_summary(out)
    return 0


def _fixes(items: list[str]) -> dict:
    out = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep:
            raise ShivamError(f"--fix {item[:60]!r}: give NAME=NUMBER")
        out[name] = parse_float(value, f"--fix {name}", -1e30, 1e30)
    return out


def cmd_fit(args) -> int:
    from shivam.calibrate import check_fix, fit_results
    from shivam.cli.render import fit_table
    from shivam.specs import load_recipe
    from shivam.userfiles import writable_file, write_text

    writable_file(args.output, "-o")  # refuse before fitting
    recipe = load_recipe(args.recipe) if args.recipe else None
    fixes = check_fix(_fixes(args.fix))
    outcome = fit_results(args.results, args.engine, args.gpu, fixes, args.card_factors, recipe)
    write_text(args.output, outcome.calibration.model_dump_json(indent=1) + "\n", "-o")
    fit_table(outcome, args.output)
    return 0


def cmd_check(args) -> int:
    from shivam.calibrate import check_fix, check_results
    from shivam.cli.render import check_table, progress_bar

    max_error = parse_float(args.max_error, "--max-error", 0, 100)
    fixes = check_fix(_fixes(args.fix))
    with progress_bar("cross-validation fits", enabled=args.format != "json") as tick:
        if args.no_calibration and args.calibration:
            raise ShivamError("--calibration and --no-calibration are exclusive: give one")
        calibration = False if args.no_calibration else args.calibration
        out = check_results(args.results, args.engine, args.gpu, calibration, fixes, args.card_factors, tick)
    if args.format == "json":
        _print_json(out)
    else:
        check_table(out)
    worst = max(out["errors"]["energy"]["median"], out["errors"]["time"]["median"])
    if worst > max_error:
        print(f"shivam: median error {100 * worst:.1f} % exceeds --max-error {100 * max_error:.1f} %", file=sys.stderr)
        return 1
    return 0


def cmd_report(args) -> int:
    from shivam.report import validation_report
    from shivam.userfiles import writable_file

    writable_file(args.output, "-o")
    validation_report(args.results, args.output, args.calibration, args.engine, args.gpu, args.card_factors)
    print(f"shivam: wrote the report {args.output}", file=sys.stderr)
    return 0


COMMANDS = {
    "predict": cmd_predict,
    "crossover": cmd_crossover,
    "inspect": cmd_inspect,
    "models": cmd_models,
    "gpus": cmd_gpus,
    "engines": cmd_engines,
    "calibrations": cmd_calibrations,
    "stage1": cmd_stage1,
    "overview": cmd_overview,
    "validate": cmd_validate,
    "calibrate": cmd_calibrate,
    "fit": cmd_fit,
    "check": cmd_check,
    "report": cmd_report,
}
