"""The command line: output contract and every error case (one line on stderr, exit code 2, no traceback)."""

import json
import subprocess
import sys

import pytest
from conftest import ROOT


def assert_clean_error(res, *needles):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert "Traceback" not in res.stderr
    for needle in needles:
        assert needle.lower() in lines[0].lower(), lines[0]


def test_predict_json_rows(cli):
    res = cli(
        "predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "1..8", "--alpha", "0.6,0.8", "--format", "json"
    )
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["rows"]) == 2 * 9
    required = {
        "k",
        "alpha",
        "tokens_per_iteration",
        "time_per_token_s",
        "energy_per_token_j",
        "speedup",
        "energy_ratio",
        "breakdown_j",
    }
    for row in out["rows"]:
        assert required <= set(row)
    assert {r["k"] for r in out["rows"]} == set(range(9))
    assert out["draft"] == "opt-125m" and out["default_draft_used"]


def test_predict_table_marks_best_and_bounds(cli):
    res = cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "1..8")
    assert res.returncode == 0, res.stderr
    assert "<- energy" in res.stdout and "<- latency" in res.stdout and "memory" in res.stdout


def test_predict_csv_and_kwh(cli):
    res = cli(
        "predict",
        "--model",
        "opt-1.3b",
        "--gpu",
        "t4",
        "--k",
        "4",
        "--alpha",
        "0.5..0.9:0.2",
        "--format",
        "csv",
        "--units",
        "kWh",
    )
    assert res.returncode == 0, res.stderr
    lines = res.stdout.strip().splitlines()
    assert len(lines) == 1 + 3 * 2 and "energy_per_token_kwh" in lines[0]


def test_predict_does_not_import_torch():
    code = (
        "import sys; from shivam.cli import main; "
        "rc = main(['predict','--model','mistral-7b','--gpu','l4','--k','1..8','--format','json']); "
        "assert rc == 0; assert 'torch' not in sys.modules, 'torch imported'"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 0, res.stderr


def test_inspect_and_listings(cli):
    res = cli("inspect", "--model", "mixtral-8x7b", "--gpu", "h200", "--format", "json")
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout)
    assert info["parameters"] == 46_702_792_704 and info["kv_bytes_per_token"] == 131_072
    assert cli("models").returncode == 0 and "mistral-7b" in cli("models").stdout
    assert "h200" in cli("gpus").stdout


def test_stage1(cli):
    res = cli("stage1", "--gpu", "t4", "--format", "json")
    out = json.loads(res.stdout)
    assert out["reuse"][0] == 1 and out["reuse"][-1] == 100 and out["energy_saving"][0] == pytest.approx(0)


# --- bad input ---------------------------------------------------------------------------------------------------
def test_unknown_model_suggests(cli):
    assert_clean_error(cli("predict", "--model", "mistral-7", "--gpu", "l4"), "unknown model", "mistral-7b")


def test_unknown_gpu_suggests(cli):
    assert_clean_error(cli("predict", "--model", "mistral-7b", "--gpu", "h20"), "unknown GPU", "h200")


def test_config_missing_field(cli, write_config):
    path = write_config(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "vocab_size": 100,
            "max_position_embeddings": 128,
        }
    )
    assert_clean_error(cli("predict", "--model", path, "--gpu", "h200", "--k", "0"), "intermediate_size")


def test_config_not_json(cli, write_config):
    assert_clean_error(cli("inspect", "--model", write_config("{not json")), "not valid JSON")


def test_config_unsupported_family(cli, write_config):
    assert_clean_error(cli("inspect", "--model", write_config({"model_type": "mamba"})), "not supported", "llama")


def test_config_without_model_type(cli, write_config):
    assert_clean_error(cli("inspect", "--model", write_config({"hidden_size": 3})), "model_type")


def test_config_inconsistent_heads(cli, write_config):
    path = write_config(
        {
            "model_type": "llama",
            "hidden_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 3,
            "intermediate_size": 128,
            "vocab_size": 100,
            "max_position_embeddings": 128,
        }
    )
    assert_clean_error(cli("inspect", "--model", path), "num_key_value_heads")


def test_missing_config_file(cli):
    assert_clean_error(cli("inspect", "--model", "/nonexistent/config.json"), "does not exist")


@pytest.mark.parametrize(
    "k,needle",
    [
        ("99", "out of range"),
        ("-1", "out of range"),
        ("a..b", "cannot parse"),
        ("", "selects nothing"),
        ("1.5", "cannot parse"),
    ],
)
def test_bad_k(cli, k, needle):
    assert_clean_error(cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", k), needle, "--k")


@pytest.mark.parametrize(
    "alpha,needle",
    [("1.2", "out of range"), ("x", "cannot parse"), ("0.9..0.5:0.1", "cannot parse"), ("-0.1", "out of range")],
)
def test_bad_alpha(cli, alpha, needle):
    assert_clean_error(cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--alpha", alpha), needle, "--alpha")


def test_positional_acceptance_too_short(cli):
    assert_clean_error(
        cli("predict", "--model", "mistral-7b", "--gpu", "l4", "--k", "1..4", "--acceptance", "0.9,0.8"),
        "acceptance vector has 2 values",
    )


def test_model_does_not_fit(cli):
    res = cli("predict", "--model", "mixtral-8x7b", "--gpu", "l4", "--k", "0")
    assert_clean_error(res, "does not fit", "bytes")
    # 46.7e9 parameters x 2 bytes: the message gives the bytes
    assert "93," in res.stderr or "93." in res.stderr


def test_context_longer_than_model(cli):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "l4", "--k", "0", "--prompt", "4000"), "max_position_embeddings"
    )


def test_dtype_the_gpu_lacks(cli):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "t4", "--k", "0", "--act-dtype", "bf16"), "no bf16"
    )


def test_unknown_dtype(cli):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "t4", "--weights-dtype", "fp5"), "unknown weights dtype"
    )


def test_unknown_option(cli):
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", "t4", "--bogus", "1"), "unrecognized", "--help")


def test_bad_batch(cli):
    assert_clean_error(cli("predict", "--model", "opt-125m", "--gpu", "t4", "--batch", "0"), "--batch")


def test_calibration_file_missing(cli):
    assert_clean_error(
        cli("predict", "--model", "opt-125m", "--gpu", "h200", "--calibration", "nope.json"), "does not exist"
    )
