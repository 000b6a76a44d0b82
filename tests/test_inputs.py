"""Every input answered: each case a new user found ends as one line on stderr and exit code 2, and a property-based
test over config fields and command-line arguments finds no input that ends otherwise."""

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli import assert_clean_error

import shivam
from shivam.cli import main

LLAMA = {
    "model_type": "llama",
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "intermediate_size": 128,
    "vocab_size": 100,
    "max_position_embeddings": 512,
}


@pytest.fixture
def binary(tmp_path):
    path = tmp_path / "results.jsonl"
    path.write_bytes(bytes(range(256)) * 4)
    return str(path)


def test_config_with_zero_heads(cli, write_config):
    res = cli("predict", "--model", write_config({**LLAMA, "num_attention_heads": 0}), "--gpu", "h200", "--k", "0")
    assert_clean_error(res, "num_attention_heads", "whole number from 1")


def test_config_field_of_the_wrong_type_is_named(cli, write_config):
    assert_clean_error(cli("inspect", "--model", write_config({**LLAMA, "hidden_size": "wide"})), "hidden_size")
    assert_clean_error(
        cli("inspect", "--model", write_config({**LLAMA, "tie_word_embeddings": "yes"})), "tie_word_embeddings"
    )


def test_pydantic_refusals_name_the_config_field(cli, write_config):
    res = cli("inspect", "--model", write_config({**LLAMA, "num_key_value_heads": 3}))
    assert_clean_error(res, "num_key_value_heads", "fix")
    message = res.stderr.split("config.json:", 1)[1].lower()  # the path holds this test's name
    assert "value error" not in message and "pydantic" not in message and "errors.pydantic.dev" not in message


@pytest.mark.parametrize("command", ["fit", "check", "report"])
def test_binary_results_file(cli, binary, tmp_path, command):
    extra = ["-o", str(tmp_path / "out.json")] if command in ("fit", "report") else []
    assert_clean_error(cli(command, binary, *extra), "binary file")


def test_binary_calibration_file(cli, binary):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "h200", "--calibration", binary), "calibration file", "binary"
    )


def test_report_to_a_directory(cli, tmp_path):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "l4", "--report", str(tmp_path)), "is a directory", "--report"
    )
    results = str(ROOT / "validation/results/h200/quick.jsonl")
    assert_clean_error(cli("report", results, "-o", str(tmp_path)), "is a directory", "-o")


def test_model_name_too_long(cli):
    assert_clean_error(cli("inspect", "--model", "m" * 300), "unknown model")
    assert_clean_error(cli("inspect", "--model", "x" * 300 + ".json"), "model file", "cannot be")


def test_unreadable_files(cli, tmp_path):
    fifo = tmp_path / "pipe.json"
    os.mkfifo(fifo)
    assert_clean_error(cli("inspect", "--model", str(fifo)), "not a regular file")
    assert_clean_error(cli("check", str(tmp_path)), "is a directory")
    assert_clean_error(cli("inspect", "--model", str(tmp_path)), "holds no config.json")


def test_unreadable_file_in_process(tmp_path, monkeypatch):
    # a permission error (root reads everything, so it is raised by hand): one ShivamError naming the file
    from shivam.userfiles import read_text

    path = tmp_path / "c.json"
    path.write_text("{}")

    def denied(self):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(shivam.ShivamError, match="cannot be read .Permission denied"):
        read_text(path, "model file", "give another")


def test_a_huge_alpha_grid_is_refused_at_once(cli):
    t0 = time.perf_counter()
    res = cli("predict", "--model", "opt-125m", "--gpu", "l4", "--alpha", "0.5..0.9:1e-9")
    assert time.perf_counter() - t0 < 10  # interpreter start included; the refusal itself is immediate
    assert_clean_error(res, "--alpha", "above the limit")
    t0 = time.perf_counter()
    with pytest.raises(shivam.ShivamError, match="above the limit"):
        shivam.predict("opt-125m", "l4", alpha=[0.5] * 1_000_000)
    assert time.perf_counter() - t0 < 2


def test_acceptance_with_alpha_is_refused(cli):
    res = cli("predict", "--model", "opt-125m", "--gpu", "l4", "--k", "2", "--alpha", "0.8", "--acceptance", "0.9,0.8")
    assert_clean_error(res, "--alpha and --acceptance are exclusive")


def test_a_draft_too_big_is_named_as_the_draft(cli):
    res = cli("predict", "--model", "opt-125m", "--draft", "mixtral-8x7b", "--gpu", "l4", "--k", "2")
    assert_clean_error(res, "the draft mixtral-8x7b does not fit beside opt-125m")


def test_stage1_dtype_the_gpu_lacks(cli):
    res = cli("stage1", "--gpu", "t4", "--dtype", "fp8")
    assert_clean_error(res, "no fp8 arithmetic", "--dtype")
    assert "bf16" not in res.stderr


def test_inspect_context_beyond_the_model(cli):
    assert_clean_error(cli("inspect", "--model", "mistral-7b", "--context", "100000"), "max_position_embeddings")
    assert_clean_error(
        cli("inspect", "--model", "mistral-7b", "--gpu", "l4", "--context", "30000", "--weights-dtype", "fp32"),
        "does not fit",
    )


@pytest.mark.parametrize("k", ["1,,2", ",1", "1,", "1..2..3"])
def test_k_with_empty_items(cli, k):
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", "l4", "--k", k), "--k")


def test_a_missing_file_and_a_directory_are_told_apart(cli, tmp_path):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "h200", "--calibration", str(tmp_path)), "is a directory"
    )
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", str(tmp_path / "nope.json")), "does not exist")


def test_api_refuses_what_the_cli_refuses():
    with pytest.raises(shivam.ShivamError, match="--batch 0 is out of range"):
        shivam.predict(model="mistral-7b", gpu="l4", k=4, alpha=0.8, batch=0)
    with pytest.raises(shivam.ShivamError, match="--alpha 1.7 is out of range"):
        shivam.predict(model="mistral-7b", gpu="l4", k=4, alpha=1.7)
    with pytest.raises(shivam.ShivamError, match="--k"):
        shivam.predict(model="mistral-7b", gpu="l4", k=[True])


def test_a_gpu_file_of_ones_own(tmp_path, cli):
    mine = tmp_path / "my.json"
    mine.write_text((ROOT / "hardware/l4.json").read_text())
    res = cli("predict", "--model", "mistral-7b", "--gpu", str(mine), "--k", "4", "--alpha", "0.8", "--format", "json")
    assert res.returncode == 0, res.stderr
    bundled = cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "4", "--alpha", "0.8", "--format", "json")
    assert json.loads(res.stdout)["rows"] == json.loads(bundled.stdout)["rows"]
    broken = json.loads(mine.read_text())
    broken["memory"]["bandwidth_gbs"] = -1
    mine.write_text(json.dumps(broken))
    assert_clean_error(
        cli("predict", "--model", "mistral-7b", "--gpu", str(mine)),
        "memory.bandwidth_gbs",
        "greater than or equal to 1",
    )


def test_gpus_schema_is_the_gpu_files_schema(cli):
    res = cli("gpus", "--schema")
    assert res.returncode == 0, res.stderr
    schema = json.loads(res.stdout)
    assert {"id", "memory", "peak_tflops", "energy", "multiprocessors"} <= set(schema["required"])


# --- property-based: no input ends in a traceback -----------------------------------------------------------------
def run_main(argv, capsys) -> tuple[int, str, str]:
    """main() in this process: an exception that is not a ShivamError propagates and fails the test."""
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


OPTIONS = (
    "--k",
    "--alpha",
    "--batch",
    "--prompt",
    "--gen",
    "--weights-dtype",
    "--kv-dtype",
    "--acceptance",
    "--act-dtype",
    "--target-ratio",
    "--draft",
    "--engine",
)
VALUES = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "8",
            "0.5",
            "1..4",
            "0.5..0.9:0.1",
            "-1",
            "1e9",
            "nan",
            "inf",
            "",
            ",",
            "1,,2",
            "bf16",
            "fp8",
            "int4",
            "fp5",
            "opt-125m",
            "hf",
            "graph",
            "x" * 300,
            "0..64",
            "3..1",
            "0.1..0.2:0",
            "1e-300",
            "1,2,3",
        ]
    ),
    st.text(max_size=12),
)


def _finite_and_above_floor(doc: dict) -> None:
    for row in doc["rows"]:
        for key in ("time_per_token_s", "energy_per_token_j", "floor_energy_per_token_j", "tokens_per_iteration"):
            assert math.isfinite(row[key]) and row[key] > 0, (key, row[key])
        assert row["energy_per_token_j"] >= row["floor_energy_per_token_j"]
        assert 1 <= row["tokens_per_iteration"] <= row["k"] + 1 + 1e-9


@settings(
    max_examples=int(os.environ.get("SHIVAM_FUZZ_EXAMPLES", 150)),
    deadline=None,
    derandomize="SHIVAM_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    args=st.lists(st.tuples(st.sampled_from(OPTIONS), VALUES), max_size=4),
    model=st.sampled_from(["opt-125m", "mistral-7b", "gpt2", "mixtral-8x7b", "nope"]),
    gpu=st.sampled_from(["l4", "h200", "t4", "h20"]),
)
def test_no_command_line_ends_in_a_traceback(args, model, gpu, capsys):
    argv = ["predict", "--model", model, "--gpu", gpu, "--format", "json"]
    for option, value in args:
        argv += [f"{option}={value}"]
    rc, out, err = run_main(argv, capsys)
    if rc == 0:
        _finite_and_above_floor(json.loads(out))
    else:
        assert rc == 2
        lines = [line for line in err.strip().splitlines() if not line.startswith("shivam: warning:")]
        assert len(lines) == 1, err
        line = lines[0]
        named = any(
            o in line
            for o in OPTIONS
            + (
                "--model",
                "--gpu",
                "--help",
                "unknown model",
                "unknown GPU",
                "does not fit",
                "max_position_embeddings",
                "arithmetic",
            )
        )
        assert named, line
        assert ";" in line or ":" in line, line  # a problem and what to do about it


CONFIG_FIELDS = {
    "hidden_size": st.integers(-2, 4096),
    "num_hidden_layers": st.integers(-1, 80),
    "num_attention_heads": st.integers(-1, 64),
    "num_key_value_heads": st.integers(-1, 64),
    "intermediate_size": st.integers(-1, 20000),
    "vocab_size": st.integers(-1, 200000),
    "max_position_embeddings": st.integers(-1, 1 << 20),
    "head_dim": st.integers(-1, 512),
    "num_local_experts": st.integers(-1, 16),
    "num_experts_per_tok": st.integers(-1, 4),
    "tie_word_embeddings": st.booleans(),
    "attention_bias": st.booleans(),
}
ODD = st.one_of(
    st.none(), st.text(max_size=5), st.floats(allow_nan=True), st.booleans(), st.lists(st.integers(), max_size=2)
)


@settings(
    max_examples=int(os.environ.get("SHIVAM_FUZZ_EXAMPLES", 200)),
    deadline=None,
    derandomize="SHIVAM_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    fields=st.fixed_dictionaries({}, optional={k: st.one_of(v, ODD) for k, v in CONFIG_FIELDS.items()}),
    family=st.sampled_from(["llama", "mistral", "qwen2", "mixtral", "gemma", "phi3"]),
)
def test_no_config_ends_in_a_traceback(fields, family, tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "config.json"
    path.write_text(json.dumps({"model_type": family, **fields}))
    try:
        r = shivam.predict(model=str(path), gpu="h200", k=[2], alpha=[0.8], draft=str(path), prompt=4, gen=4)
    except shivam.ShivamError as exc:
        message = str(exc)
        assert "\n" not in message and ("config" in message or "fit" in message or "max_position" in message), message
        return
    _finite_and_above_floor(r.to_dict())


OTHER = {
    "inspect": ("--context", "--weights-dtype", "--kv-dtype", "--engine", "--calibration", "--gpu"),
    "stage1": ("--size", "--tokens", "--reuse", "--dtype"),
}


@settings(
    max_examples=int(os.environ.get("SHIVAM_FUZZ_EXAMPLES", 100)),
    deadline=None,
    derandomize="SHIVAM_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(command=st.sampled_from(sorted(OTHER)), data=st.data())
def test_no_inspect_or_stage1_line_ends_in_a_traceback(command, data, capsys):
    options = OTHER[command]
    pairs = data.draw(st.lists(st.tuples(st.sampled_from(options), VALUES), max_size=3))
    argv = [command, "--format", "json"] + (["--model", "mistral-7b"] if command == "inspect" else ["--gpu", "t4"])
    argv += [f"{o}={v}" for o, v in pairs]
    rc, out, err = run_main(argv, capsys)
    if rc == 0:
        doc = json.loads(out)
        values = [doc.get("decode_time_s", 1.0), doc.get("decode_energy_j", 1.0), doc.get("gemm_energy_j", 1.0)]
        assert all(math.isfinite(v) and v > 0 for v in values), doc
    else:
        assert rc == 2
        line = err.strip()
        assert "\n" not in line and any(o in line for o in options + ("--model", "--gpu", "does not fit")), line


def test_an_engine_is_a_file(tmp_path):
    # the same engine with norms fused into the preceding kernel (0 launches instead of 1): a decode step of
    # mistral-7b (32 layers, 2 norms each, plus the final norm) saves 65 launches x per_kernel_s, nothing else
    profile = json.loads((ROOT / "hardware/engines/graph.json").read_text())
    profile["engine"] = "fused-norms"
    profile["kernels"]["launches"]["norm"] = 0
    path = tmp_path / "fused-norms.json"
    path.write_text(json.dumps(profile))
    args = dict(model="mistral-7b", gpu="h200", k=0, alpha=0.8, gen=1, calibration=False)
    base = shivam.predict(**args).rows[0]["time_per_token_s"]
    fused = shivam.predict(**args, engine=str(path))
    assert fused.meta["engine"] == "fused-norms"
    assert base - fused.rows[0]["time_per_token_s"] == pytest.approx(65 * profile["per_kernel_s"], rel=1e-9)


# --- what a newcomer's trial of a fresh clone found ---------------------------------------------------------------
def test_deeply_nested_json(cli, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    assert_clean_error(cli("inspect", "--model", str(deep)), "nests its JSON too deeply")
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", str(deep)), "nests its JSON too deeply")
    lines = tmp_path / "deep.jsonl"
    lines.write_text("[" * 100_000 + "]" * 100_000 + "\n")
    assert_clean_error(cli("check", str(lines)), "no measured points")


@pytest.mark.parametrize(
    "change,needle",
    [
        (lambda g: g["peak_tflops"].update(bf16=0), "peak_tflops.bf16"),
        (lambda g: g["peak_tflops"].update(bf16=-1), "peak_tflops.bf16"),
        (lambda g: g["energy"]["static_power_w"].update(value=0), "static_power_w must be above 0"),
        (lambda g: g["memory"].update(bandwidth_gbs=1e-300), "memory.bandwidth_gbs"),
        (lambda g: g["energy"]["static_power_w"].update(value=1e308), "static_power_w"),
        (lambda g: g.update(id="x" * 5000), "'id'"),
        (lambda g: g.update(id="../../etc/passwd"), "'id'"),
    ],
)
def test_a_gpu_file_with_impossible_figures(cli, tmp_path, change, needle):
    gpu = json.loads((ROOT / "hardware/l4.json").read_text())
    change(gpu)
    path = tmp_path / "g.json"
    path.write_text(json.dumps(gpu))
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", str(path), "--k", "2"), "--gpu", needle)


def test_an_infinite_figure_in_a_gpu_file(cli, tmp_path):
    gpu = json.loads((ROOT / "hardware/l4.json").read_text())
    gpu["energy"]["dram_board_pj_per_bit"]["value"] = float("inf")
    path = tmp_path / "g.json"
    path.write_text(json.dumps(gpu))  # json writes Infinity, which Python's reader accepts
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", str(path)), "finite")


def test_paths_that_cannot_be_written(cli, tmp_path):
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", "l4", "--report", "/proc/x.html"), "cannot")
    results = str(ROOT / "validation/results/h200/quick.jsonl")
    assert_clean_error(cli("report", results, "-o", "/proc/x.html"), "cannot")
    res = subprocess.run(f"{sys.executable} -m shivam models > /dev/full", shell=True, capture_output=True, text=True)
    assert_clean_error(res, "cannot write the output")


@pytest.mark.parametrize("fix", ["memory_efficiency=-1", "memory_efficiency=0", "static_power_w=-100", "per_step_s=1"])
def test_fix_out_of_range(cli, tmp_path, fix):
    results = str(ROOT / "validation/results/h200/quick.jsonl")
    res = cli("fit", results, "-o", str(tmp_path / "c.json"), "--recipe", "h200-graph", "--fix", fix)
    assert_clean_error(res, f"--fix {fix}", "out of range")


def test_a_calibration_with_an_impossible_value(cli, tmp_path):
    cal = json.loads((ROOT / "hardware/calibrated/h200-graph.json").read_text())
    cal["parameters"]["static_power_w"] = -100
    path = tmp_path / "c.json"
    path.write_text(json.dumps(cal))
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "h200", "--calibration", str(path)), "static_power_w", "refit"
    )


@pytest.mark.parametrize(
    "field,value,needle",
    [("batch", -1, "batch"), ("context", 10**9, "context"), ("context", 5000, "max_position_embeddings")],
)
def test_results_with_impossible_points(cli, tmp_path, field, value, needle):
    from shivam.calibrate import Point

    p = Point(suite="t", kind="step", model="opt-125m").model_dump()
    p[field] = value
    record = {
        "record": "point",
        "id": "x",
        "status": "ok",
        "point": p,
        "measured": {"time_per_call_s": 1e-3, "energy_per_call_j": 0.1},
    }
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"record": "environment", "gpu": "NVIDIA H200"}) + "\n" + json.dumps(record) + "\n")
    for command in ("check", "fit"):
        extra = ["-o", str(tmp_path / "c.json")] if command == "fit" else []
        assert_clean_error(cli(command, str(path), *extra), "point record x", needle)


def test_check_refuses_results_of_another_gpu(cli):
    res = cli("check", str(ROOT / "validation/results/h200/quick.jsonl"), "--gpu", "l4")
    assert_clean_error(res, "--gpu l4", "measured on h200")


def test_target_ratio_without_a_window(cli):
    res = cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "0", "--target-ratio", "2")
    assert_clean_error(res, "--target-ratio", "k above 0")


def test_messages_name_the_real_value_and_limit(cli):
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", "l4", "--alpha", "1.0000001"), "1.0000001")
    for batch in ("0", "10000000"):
        assert_clean_error(
            cli("predict", "--model", "opt-125m", "--gpu", "l4", "--batch", batch), "between 1 and 1,000,000"
        )


def test_an_edited_copy_of_a_bundled_gpu_does_not_take_its_calibration(tmp_path):
    # an L4's figures under the id "h200": the H200's calibration (its 140 W static power, fitted efficiencies) would
    # describe another GPU, so the copy is predicted from its own datasheet figures, with a warning naming why
    import shivam

    l4 = json.loads((ROOT / "hardware/l4.json").read_text())
    (tmp_path / "mine.json").write_text(json.dumps({**l4, "id": "h200"}))
    edited = shivam.predict(model="mistral-7b", gpu=str(tmp_path / "mine.json"), k=[4], alpha=0.8)
    assert not edited.meta["calibrated"] and "datasheet" in edited.meta["parameters"]
    assert any("bundled id 'h200' but differs from it" in w and "memory" in w for w in edited.warnings)
    # its own datasheet figures give what the bundled L4 gives
    l4_rows = shivam.predict(model="mistral-7b", gpu="l4", k=[4], alpha=0.8, engine=edited.meta["engine"]).rows
    assert edited.rows[-1]["energy_per_token_j"] == pytest.approx(l4_rows[-1]["energy_per_token_j"], rel=1e-12)
    # a copy that changes only words keeps the bundled calibration; a named calibration is taken as asked
    h200 = json.loads((ROOT / "hardware/h200.json").read_text())
    (tmp_path / "renamed.json").write_text(json.dumps({**h200, "name": "our H200", "notes": "rack 4"}))
    renamed = shivam.predict(model="mistral-7b", gpu=str(tmp_path / "renamed.json"), k=[4], alpha=0.8)
    assert renamed.meta["calibrated"] and not any("differs" in w for w in renamed.warnings)
    cal = ROOT / "hardware/calibrated/h200-ref.json"
    named = shivam.predict(model="mistral-7b", gpu=str(tmp_path / "mine.json"), k=[4], alpha=0.8, calibration=str(cal))
    assert named.meta["calibrated"] and not any("differs" in w for w in named.warnings)


def test_a_prediction_beyond_the_measured_says_so():
    # the bands come from single-GPU measurements of dense models with 16-bit or fp8 weights and a 16-bit KV cache
    import shivam

    def beyond(**kw):
        r = shivam.predict(gpu="h200", k=[4], alpha=0.8, draft="llama-68m", **kw)
        return [w for w in r.warnings if "goes beyond them" in w]

    assert beyond(model="mistral-7b") == [] and beyond(model="mistral-7b", weights_dtype="fp8") == []
    assert "(--tp 2)" in beyond(model="llama-2-70b", tp=2)[0]
    assert "(mixture of experts: mixtral-8x7b, fp8 KV cache)" in beyond(model="mixtral-8x7b", kv_dtype="fp8")[0]
    assert "(int4 weights)" in beyond(model="mistral-7b", weights_dtype="int4")[0]


def test_a_draft_no_smaller_than_its_target_is_flagged():
    import shivam

    def flagged(**kw):
        return any("not smaller than" in w for w in shivam.predict(gpu="h200", k=[4], alpha=0.8, **kw).warnings)

    assert flagged(model="opt-125m", draft="opt-125m") and flagged(model="mistral-7b", draft="mixtral-8x7b")
    assert not flagged(model="mistral-7b", draft="llama-68m")
