"""Writes tests/golden/predictions.json: a grid of predictions (models x GPUs x engines x batch x dtypes x k x
alpha) and the predicted cost of every committed measurement point, as the simulator computed them before the
library was restructured into layers. tests/test_golden.py recomputes them through the public API and requires
them identical to rtol 1e-9. Run from the repository root: python tests/golden/make_golden.py (it is kept for the
record of how the file was made; it uses the module layout of that commit)."""

import json
import subprocess
from pathlib import Path

from shivam.commands import build_scenario
from shivam.errors import ShivamError
from shivam.fit import load_results
from shivam.hardware import gpu_ids, load_gpu, resolve_params
from shivam.modelspec import bundled_index
from shivam.predict import prediction
from shivam.validate.points import point_cost
from types import SimpleNamespace

KS = [0, 1, 2, 4, 8]
ALPHAS = [0.6, 0.9]
CASES = [dict(batch="1", weights_dtype=None, kv_dtype=None), dict(batch="16", weights_dtype=None, kv_dtype=None),
         dict(batch="4", weights_dtype="fp8", kv_dtype="fp8"), dict(batch="1", weights_dtype="int4", kv_dtype=None)]


def grid():
    out = []
    for model in bundled_index():
        for gpu in gpu_ids():
            for engine in ("graph", "hf"):
                for case in CASES:
                    ns = SimpleNamespace(gpu=gpu, model=model, draft="opt-125m", act_dtype=None, engine=engine,
                                         calibration=None, no_calibration=False, prompt="128", gen="128", **case)
                    key = {"model": model, "gpu": gpu, "engine": engine, **case}
                    try:
                        scn, meta = build_scenario(ns, KS, need_draft=True)
                        res = prediction(scn, KS, ALPHAS)
                    except ShivamError as exc:
                        out.append({**key, "error": str(exc)})
                        continue
                    out.append({**key, "parameters": meta["parameters"],
                                "rows": [[r["k"], r["alpha"], r["time_per_token_s"], r["energy_per_token_j"],
                                          r["floor_energy_per_token_j"], r["tokens_per_iteration"]]
                                         for r in res["rows"]]})
    return out


def points():
    files = sorted(str(p) for p in Path("validation/results/h200").glob("*.jsonl"))
    out = []
    for engine in ("graph", "hf"):
        data, gpu = load_results(files, engine)
        params = resolve_params(load_gpu(gpu), engine)
        for m in data:
            cost, tokens, bound = point_cost(m.point, params)
            out.append({"point": m.point.model_dump(), "engine": engine, "time_s": float(cost.time_s),
                        "energy_j": float(cost.energy_j), "tokens": tokens, "bound": bound})
    return out


if __name__ == "__main__":
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    doc = {"basis": f"computed by tests/golden/make_golden.py at commit {commit}", "ks": KS, "alphas": ALPHAS,
           "prompt": 128, "gen": 128, "draft": "opt-125m", "grid": grid(), "points": points()}
    Path("tests/golden/predictions.json").write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(len(doc["grid"]), "scenarios,", len(doc["points"]), "points")
