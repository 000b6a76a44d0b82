"""The `shivam` command line's options: every subcommand and every option, with its help text."""

from __future__ import annotations

import argparse

from shivam._version import __version__
from shivam.api import DEFAULT_DRAFT, DEFAULT_ENGINE, K_MAX, MAX_BATCHES, MAX_GRID_ROWS, MAX_TP
from shivam.errors import ShivamError

SUITES_HELP = (
    "quick, stage1, stage2, stage3, steps, precision, hf, batch or prefill (comma-separated), or engine (on its own)"
)


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # argparse's usage dump is two lines and a wall of text; keep it to one
        raise ShivamError(f"{message}; run `{self.prog} --help` for the options")


def _calibration_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--engine",
        default=None,
        help="engine profile: a name from `shivam engines` or a profile file (default: the engine of this card's "
        "installed calibration, else ref where a bundled calibration has it, else graph)",
    )
    p.add_argument(
        "--calibration",
        default=None,
        help="calibration file from `shivam fit` (default: this card's installed one, else the bundled one, if any)",
    )
    p.add_argument("--no-calibration", action="store_true", help="use datasheet estimates even if a calibration exists")


def _scenario_args(p: argparse.ArgumentParser, batch_default: str = "1") -> None:
    p.add_argument("--model", required=True, help="alias (mistral-7b), Hugging Face id or path to a config.json")
    p.add_argument("--gpu", required=True, help="bundled GPU id (see `shivam gpus`) or a GPU file in that schema")
    p.add_argument("--draft", default=None, help=f"draft model for k > 0 (default {DEFAULT_DRAFT}, as in the paper)")
    p.add_argument(
        "--batch",
        default=batch_default,
        help=f"sequences decoded together: 8, or a scan such as 1..256 or 1,8,64 (at most {MAX_BATCHES:,} sizes, "
        f"and {MAX_GRID_ROWS:,} k x alpha x batch rows; a scan reports the crossover batches)",
    )
    p.add_argument("--prompt", default="128", help="prompt tokens (prefilled: TTFT and energy per request)")
    p.add_argument("--gen", default="128", help="generated tokens: results average over the growing context")
    p.add_argument("--prompts", default=None, help="a ragged batch: each sequence's prompt length, e.g. 256,1024,4096")
    p.add_argument(
        "--sampling",
        default="greedy",
        choices=["greedy", "rejection"],
        help="how drafts are verified: argmax comparison (greedy) or rejection sampling over the vocabulary",
    )
    p.add_argument(
        "--alpha-concentration",
        default=None,
        help="spread each sequence's acceptance rate as Beta(alpha c, (1 - alpha) c) with this concentration c",
    )
    p.add_argument(
        "--power-limit",
        action="store_true",
        help="clock every decode, draft, verify and prefill step down to the board's power limit (by default an"
        " iteration or a prefill above it is held there, running longer at its power)",
    )
    p.add_argument(
        "--weights-dtype", default=None, help="fp32 fp16 bf16 fp8 int8 int4 (default: bf16, fp16 without bf16)"
    )
    p.add_argument("--act-dtype", default=None, help="activation/matmul dtype (default: 16-bit)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype (default: the activation dtype)")
    p.add_argument(
        "--tp", default="1", help=f"tensor parallelism: GPUs the target is split over, 1-{MAX_TP} (default 1)"
    )
    p.add_argument(
        "--draft-tp", default="1", help="GPUs (of --tp) the draft is split over; the others wait (default 1)"
    )
    _calibration_args(p)


def _fit_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--engine", default=DEFAULT_ENGINE, help="fit the points of this engine")
    p.add_argument("--gpu", default=None, help="GPU id (default: from the results' environment record)")
    p.add_argument(
        "--fix",
        action="append",
        default=[],
        help="hold a parameter: NAME=VALUE (repeatable; adds to or overrides the recipe's)",
    )
    p.add_argument(
        "--card-factors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="one energy scale per GPU card (default: the recipe's choice, else off)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="shivam", description="Energy per generated token of LLM inference and speculative decoding.")
    parser.add_argument("--version", action="version", version=f"shivam {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("predict", help="time and energy per token vs speculation window k and acceptance alpha")
    _scenario_args(p)
    p.add_argument(
        "--k",
        default="1..8",
        help=f"speculation windows: 4, 1..8 or 0,2,4, each 0-{K_MAX} (k=0, the baseline, is always added)",
    )
    p.add_argument(
        "--alpha",
        default=None,
        help=f"acceptance rates: 0.6,0.8 or 0.5..0.9:0.1 (default 0.6,0.7,0.8,"
        f"0.9; at most {MAX_GRID_ROWS:,} k x alpha x batch rows)",
    )
    p.add_argument("--acceptance", default=None, help="per-position acceptance a_1,a_2,... (instead of --alpha)")
    p.add_argument(
        "--target-ratio", default=None, help="also report the alpha each k needs for this energy reduction (e.g. 2.24)"
    )
    p.add_argument("--format", default="table", choices=["table", "json", "csv"], help="output format")
    p.add_argument(
        "--units", default="J", choices=["J", "kWh"], help="energy units of the table (JSON adds energy_per_token_kwh)"
    )
    p.add_argument("--report", default=None, help="also write an interactive HTML report to this file")

    p = sub.add_parser(
        "crossover", help="the batch above which speculation costs more energy per token, by alpha and k"
    )
    _scenario_args(p, batch_default="1..256")
    p.add_argument("--k", default="2,4,8", help=f"speculation windows, each 1-{K_MAX}")
    p.add_argument("--alpha", default="0.6,0.7,0.8,0.9", help="acceptance rates: 0.6,0.8 or 0.5..0.9:0.1")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")

    p = sub.add_parser("inspect", help="per-layer parameters, bytes and FLOPs per token, KV bytes per token")
    p.add_argument("--model", required=True, help="alias, Hugging Face id or path to a config.json")
    p.add_argument("--gpu", default=None, help="also cost one decode step on this GPU (id or GPU file)")
    p.add_argument("--weights-dtype", default=None, help="weights dtype (default: the GPU's 16-bit type)")
    p.add_argument("--kv-dtype", default=None, help="KV-cache dtype")
    p.add_argument("--context", default="512", help="tokens in the KV cache")
    _calibration_args(p)
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")

    sub.add_parser("models", help="bundled model configs")
    p = sub.add_parser("gpus", help="bundled GPU specifications")
    p.add_argument("--schema", action="store_true", help="print the JSON schema of a GPU file instead")
    sub.add_parser("engines", help="bundled engine profiles")
    sub.add_parser("calibrations", help="bundled calibrations and their recipes")

    p = sub.add_parser("stage1", help="the paper's stage I: reload weights before every GEMM vs load once and reuse")
    p.add_argument("--gpu", required=True, help="bundled GPU id or GPU file")
    p.add_argument("--size", default="4096", help="n of the n x n weight matrix")
    p.add_argument("--tokens", default="4096", help="rows of the activation matrix")
    p.add_argument("--reuse", default="1..100", help="reuse counts: 1..100 or 1,10,100")
    p.add_argument("--dtype", default=None, help="weights and arithmetic dtype (default: the GPU's 16-bit type)")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")

    p = sub.add_parser("validate", help="measure time and energy on a real GPU (NVML energy counter)")
    p.add_argument("--suite", default="quick", help=SUITES_HELP)
    p.add_argument("--out", default=None, help="results folder (default validation/results/<gpu>/)")
    p.add_argument("--gpu-index", default="0", help="CUDA/NVML index of the GPU to measure")
    p.add_argument("--repeats", default="3", help="windows per point")
    p.add_argument("--min-periods", default="20", help="energy-counter periods per window (>= 20 recommended)")
    p.add_argument(
        "--max-spread",
        default="0.03",
        help="windows of a point disagreeing by more than this fraction are measured again, longer",
    )
    p.add_argument(
        "--extensions", default="1", help="how many times a point may be re-measured with 2.5x longer windows"
    )
    p.add_argument(
        "--engine",
        default=None,
        help="run the suites' step and spec points on this engine (graph or ref), or their generate points (hf or "
        "hf-static); other points are left out",
    )
    p.add_argument("--limit", default=None, help="measure at most this many points of the suite (for smoke runs)")
    p.add_argument("--weights", default=None, help="local safetensors checkpoint folder for the hf engine")
    p.add_argument("--subtract-idle", action="store_true", help="also record energy above idle-with-context power")
    p.add_argument("--codecarbon", action="store_true", help="cross-check one window per point with CodeCarbon")
    p.add_argument(
        "--simulate-meter",
        action="store_true",
        help="testing only: run on the CPU against a simulated 100 ms counter (no GPU, no real joules)",
    )
    p.add_argument("--points-file", default=None, help="testing only: a JSON list of points instead of a suite")
    p.add_argument(
        "--tp",
        default="1",
        help="measure the tensor-parallel suite over this many GPUs (torchrun, one process per GPU, NCCL)",
    )

    p = sub.add_parser("calibrate", help="measure this GPU and install a calibration of it (NVML energy counter)")
    p.add_argument("--quick", action="store_true", help="the quick suite (about 3 minutes on an H200)")
    p.add_argument(
        "--card",
        action="store_true",
        help="only this card's energy scale against its GPU model's calibration (about a minute)",
    )
    p.add_argument(
        "-o",
        "--output",
        default=None,
        help="write the calibration here instead of installing it in the user's data directory",
    )
    p.add_argument("--gpu", default=None, help="a GPU file for a GPU that is not bundled (`shivam gpus --schema`)")
    p.add_argument("--gpu-index", default="0", help="CUDA/NVML index of the GPU to measure")
    p.add_argument(
        "--engine",
        default=None,
        help="the engine to calibrate, graph or ref (default: ref on a GPU with bf16 and room for its widest "
        "attention tiles' shared memory, i.e. Hopper, else graph; with --card, the engine predict takes on this GPU)",
    )
    p.add_argument(
        "--simulate-meter",
        action="store_true",
        help="testing only: on the CPU against a simulated counter, tiny models, with --gpu's figures",
    )
    p.add_argument("--min-periods", default="20", help="energy-counter periods per window (>= 20 recommended)")
    p.add_argument(
        "--refit",
        default=None,
        metavar="MEASUREMENTS",
        help="no GPU: fit again from the measurements file a run printed (this version's fit; failed points are "
        "left out and named)",
    )

    p = sub.add_parser("fit", help="fit the simulator's parameters to measured results: a calibrated GPU profile")
    p.add_argument("results", nargs="+", help="JSONL files written by `shivam validate`")
    p.add_argument(
        "-o", "--output", required=True, help="calibration file to write, e.g. hardware/calibrated/h200-graph.json"
    )
    p.add_argument(
        "--recipe",
        default=None,
        help="a recipe (name from `shivam calibrations` or file): its engine, held parameters and card factors",
    )
    _fit_args(p)

    p = sub.add_parser("check", help="predicted vs measured for every point, error statistics, cross-validation")
    p.add_argument("results", nargs="+", help="JSONL files written by `shivam validate`")
    p.add_argument(
        "--calibration", default=None, help="calibration file (default: as predict; the bundled one applies its recipe)"
    )
    p.add_argument("--no-calibration", action="store_true", help="check the datasheet-only prediction and its band")
    p.add_argument("--max-error", default="0.10", help="exit 1 when the median absolute error exceeds this fraction")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")
    _fit_args(p)

    p = sub.add_parser("report", help="interactive HTML report of measured results (with predictions)")
    p.add_argument("results", nargs="+", help="JSONL files written by `shivam validate`")
    p.add_argument("-o", "--output", required=True, help="HTML file to write")
    p.add_argument("--calibration", default=None, help="calibration file (default: as predict)")
    p.add_argument("--engine", default=DEFAULT_ENGINE, help="report the points of this engine")
    p.add_argument("--gpu", default=None, help="GPU id (default: from the results' environment record)")
    p.add_argument(
        "--card-factors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="scale each card's predicted energy as `check` does (default: the recipe's choice)",
    )

    p = sub.add_parser("overview", help="decode energy per token of every bundled model on every bundled GPU")
    p.add_argument("--format", default="table", choices=["table", "json"], help="output format")
    return parser
