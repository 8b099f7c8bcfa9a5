"""The real recipe on one accelerator, in one command: a randomly initialised Qwen2.5-VL of the public 7B or
3B geometry (no download), COde-shaped synthetic checkups, `dentvlm fit` with configs/qwen7b.yaml (or
qwen3b: bf16-mixed, FSDP2, gradient checkpointing, the COde image budget) for a few optimizer steps,
`dentvlm test` with both baselines, `dentvlm export --merge true`, and one `dentvlm serve` request; then
one table of what it measured beside benchmarks/memory_estimate.py's estimate.

    python benchmarks/gpu_check.py --size 7B            # on a GPU machine (see README, "GPU check")
    python benchmarks/gpu_check.py --size mini --device cpu --checkups 24 --steps 1 --accumulate 2   # CPU

Exits non-zero when a command fails, a training loss is not finite, or the measured peak memory passes
the estimate by more than 20%. Every command's output is kept under --work.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
PEAK_BF16_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "A800": 312.0, "L40S": 362.0}  # dense


def arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="7B", choices=["7B", "3B", "mini"])
    parser.add_argument("--device", default="auto", help="auto, cuda or cpu")
    parser.add_argument("--work", default="/tmp/dentvlm-gpu-check", help="scratch folder (kept: logs, run)")
    parser.add_argument("--checkups", type=int, default=136, help="synthetic COde-shaped checkups")
    parser.add_argument("--steps", type=int, default=6, help="optimizer steps of the fit")
    parser.add_argument("--accumulate", type=int, default=None, help="gradient accumulation (default: config's)")
    parser.add_argument("--peak_tflops", type=float, default=None, help="the device's dense bf16 peak")
    parser.add_argument("--skip_serve", action="store_true", help="no serve request (litserve not installed)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="more fit/test settings, e.g. data.max_pixels=50176 (smaller images on a CPU)")
    return parser.parse_args()


class Check:
    """Runs the stages, keeps their logs and times, and collects failures."""

    def __init__(self, args):
        self.args, self.work = args, Path(args.work)
        self.work.mkdir(parents=True, exist_ok=True)
        self.stages: dict[str, float] = {}
        self.failures: list[str] = []
        self.env = {**os.environ, "DENTVLM_CACHE": str(self.work / "cache"), "WANDB_MODE": "offline",
                    "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "PYTHONUNBUFFERED": "1",
                    "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")]))}

    def run(self, name: str, command: list[str], timeout: float = 900) -> bool:
        started = time.monotonic()
        log = self.work / f"{name}.log"
        with log.open("w") as out:
            try:
                code = subprocess.run(command, cwd=REPO, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                      timeout=timeout).returncode
            except subprocess.TimeoutExpired:
                code = "timeout"
        self.stages[name] = time.monotonic() - started
        if code != 0:
            tail = [line for line in log.read_text(errors="replace").splitlines() if line.strip()][-1:] or [""]
            self.failures.append(f"{name}: exit {code}: {tail[0][:300]} (log: {log})")
        print(f"gpu_check: {name} {'ok' if code == 0 else 'FAILED'} in {self.stages[name]:.0f} s", flush=True)
        return code == 0

    def dentvlm(self, name: str, *args: str, timeout: float = 900) -> bool:
        return self.run(name, [sys.executable, "-m", "dentvlm", *args], timeout)


def overlay(check: Check, device: str) -> Path:
    """The run settings on top of the recipe: one device, a few steps, CSV logs, the step probe."""
    args, work = check.args, check.work
    trainer = {"devices": 1, "max_steps": args.steps, "max_epochs": 1, "limit_val_batches": 1,
               "log_every_n_steps": 1,
               "logger": [{"class_path": "lightning.pytorch.loggers.CSVLogger", "init_args": {"name": "csv"}}],
               "callbacks": [{"class_path": "dentvlm.checkpointing.AdapterCheckpoint",
                              "init_args": {"save_last": True, "save_top_k": 0}},
                             {"class_path": "dentvlm.step_probe.StepProbe",
                              "init_args": {"out": str(work / "probe_{stage}.json")}}]}
    if device == "cpu":
        trainer["accelerator"] = "cpu"
    if args.accumulate:
        trainer["accumulate_grad_batches"] = args.accumulate
    settings = {"trainer": trainer, "model": {"generate_samples": 8, "max_new_tokens": 16},
                "data": {"num_workers": min(6, os.cpu_count() or 1), "eval_batch_size": 8}}
    path = work / "overlay.yaml"
    path.write_text(yaml.safe_dump(settings))
    return path


def serve_once(check: Check, folder: Path) -> str:
    """Start `dentvlm serve` on `folder`, answer one chat request with an image, stop it; a one-line account."""
    import base64
    import io
    import urllib.request

    from PIL import Image

    from serving import start_server, stop_server

    started = time.monotonic()
    server, url = start_server([str(folder), "--api_key_env", "GPU_CHECK_NO_KEY"], check.work / "serve.log",
                               env=check.env, cwd=REPO)
    try:
        image = io.BytesIO()
        Image.new("RGB", (640, 480), (200, 120, 110)).save(image, "JPEG")
        data_url = "data:image/jpeg;base64," + base64.b64encode(image.getvalue()).decode()
        body = {"model": "check", "max_tokens": 8, "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": data_url}}, {"type": "text", "text": "Which conditions?"}]}]}
        request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(),
                                         {"Content-Type": "application/json"})
        asked = time.monotonic()
        answer = json.loads(urllib.request.urlopen(request, timeout=300).read())
        text = answer["choices"][0]["message"]["content"]
        return f"answered {text[:40]!r} in {time.monotonic() - asked:.1f} s (ready after {asked - started:.0f} s)"
    finally:
        stop_server(server)


def metric_rows(run: Path) -> list[dict[str, float]]:
    """The rows of the fit's metrics.csv, each with the columns it has a value for."""
    found = next(run.rglob("metrics.csv"), None)
    with found.open() if found else open(os.devnull) as handle:
        return [{k: float(v) for k, v in row.items() if v not in ("", None)} for row in csv.DictReader(handle)]


def last_values(rows: list[dict[str, float]]) -> dict[str, float]:
    """The last value of each column."""
    values: dict[str, float] = {}
    for row in rows:
        values.update(row)
    return values


def model_parameters(model: Path) -> dict:
    """Non-embedding language-model, vision-tower and total parameters of the model folder (meta device)."""
    import torch
    from transformers import AutoConfig, AutoModelForImageTextToText

    config = AutoConfig.from_pretrained(model)
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing")
    with torch.device("meta"):
        network = AutoModelForImageTextToText.from_config(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    language = network.model.language_model
    return {"text": count(language) - count(language.embed_tokens), "vision": count(network.model.visual),
            "total": count(network), "layers": config.text_config.num_hidden_layers,
            "hidden": config.text_config.hidden_size}


def training_figures(probe: dict, parameters: dict, checkpointing: bool, peak_tflops: float | None) -> dict:
    """Steady throughput (optimizer steps after the first) and model FLOPs utilisation."""
    times, batches, accumulate = probe["train_times"], probe["train_batches"], probe["accumulate"]
    steps = [times[i] - times[i - accumulate] for i in range(2 * accumulate - 1, len(times), accumulate)]
    steady = batches[accumulate:]
    seconds = times[-1] - times[accumulate - 1] if len(times) > accumulate else math.nan
    rows, real, image = (sum(b[i] for b in steady) for i in (0, 2, 3))
    figures = {"step_seconds": steps, "samples_per_s": rows / seconds, "tokens_per_s": real / seconds,
               "image_tokens_per_sample": image / max(rows, 1), "tokens_per_sample": real / max(rows, 1)}
    # Training FLOPs per token of a frozen base with LoRA: forward 2N, backward to the inputs 2N, and the
    # forward recomputed under checkpointing 2N (LoRA's own weight gradients are negligible); attention
    # 2 x layers x context x hidden per token and forward, as many times; the frozen vision tower runs
    # forward only, on 4 patches per image token.
    passes = 3 if checkpointing else 2
    context = figures["tokens_per_sample"]
    per_token = passes * (2 * parameters["text"] + 2 * parameters["layers"] * context * parameters["hidden"])
    per_token += 2 * parameters["vision"] * 4 * image / max(real, 1)
    figures["flops_formula"] = (f"{passes} x (2 x {_count(parameters['text'])} text parameters + attention) per "
                                f"token + vision forward 2 x {_count(parameters['vision'])} x 4 patches per image "
                                "token")
    figures["mfu"] = per_token * figures["tokens_per_s"] / (peak_tflops * 1e12) if peak_tflops else None
    return figures


def table(check: Check, figures: dict, probe: dict, estimate: float, data: dict, serve: str, versions: str) -> str:
    rows = [("device and versions", versions)]
    if "max_allocated_gib" in probe:
        ratio = probe["max_allocated_gib"] / estimate
        rows.append(("peak memory allocated / reserved", f"{probe['max_allocated_gib']:.1f} / "
                                                          f"{probe['max_reserved_gib']:.1f} GiB"))
        rows.append(("memory estimate (benchmarks/memory_estimate.py)", f"{estimate:.2f} GiB (measured/estimate "
                                                                           f"{ratio:.2f})"))
    else:
        rows.append(("peak GPU memory", f"n/a (no GPU); estimate for one GPU {estimate:.2f} GiB"))
    rows += [
        ("steady training samples/s, tokens/s", f"{figures['samples_per_s']:.2f}, {figures['tokens_per_s']:,.0f}"),
        ("model FLOPs utilisation", f"{100 * figures['mfu']:.1f}%" if figures["mfu"] is not None else "n/a"),
        ("  FLOPs per token", figures["flops_formula"]),
        ("tokens / image tokens per sample", f"{figures['tokens_per_sample']:,.0f} / "
                                             f"{figures['image_tokens_per_sample']:,.0f}"),
        ("drops, scale-downs, truncations (epoch sums)", f"{data.get('data/dropped', 0):.0f}, "
                                                          f"{data.get('data/scaled_down', 0):.0f}, "
                                                          f"{data.get('data/truncated', 0):.0f}"),
        ("optimizer step wall times (s, first excluded)", ", ".join(f"{s:.2f}" for s in figures["step_seconds"])),
        ("test: checkups answered or scored per s", f"{probe['test_rows'] / max(1e-9, _span(probe['test_times'])):.2f}"
                                                    f" ({probe['test_rows']} over 3 variants)"),
        ("serve", serve),
        ("stage seconds", ", ".join(f"{k} {v:.0f}" for k, v in check.stages.items())),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(["| item | measured |", "|---|---|"] + [f"| {name:<{width}} | {value} |" for name, value in rows])


def _count(number: float) -> str:
    return f"{number / 1e9:.2f} B" if number >= 1e9 else f"{number / 1e6:.1f} M"


def _span(times: list[float]) -> float:
    return times[-1] - times[0] if len(times) > 1 else math.nan


def versions(device: str) -> str:
    import lightning
    import peft
    import torch
    import transformers

    name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
    return (f"{name}; torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}, "
            f"lightning {lightning.__version__}")


def main() -> int:
    args = arguments()
    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    check, work = Check(args), Path(args.work)
    recipe = REPO / "configs" / ("qwen3b.yaml" if args.size == "3B" else "qwen7b.yaml")
    script = ("from pathlib import Path; from dentvlm.model.tiny import build_tiny_model; "
              "from dentvlm.model.geometry import build_random_model; "
              f"build_tiny_model(Path({str(work / 'tiny')!r})); "
              f"print(build_random_model({args.size!r}, Path({str(work / 'tiny')!r}), Path({str(work / 'model')!r}), "
              f"{device!r}))")
    ok = check.run("model", [sys.executable, "-c", script], timeout=600)
    ok = ok and check.dentvlm("synth", "synth", str(work / "release"), "--num_checkups", str(args.checkups),
                              "--profile", "code", "--seed", "1", timeout=600)
    val, test = min(8, args.checkups // 5), min(16, args.checkups // 5)  # the rest trains
    ok = ok and check.dentvlm("shard", "shard", str(work / "release"), str(work / "shards"), "--val", str(val),
                              "--test", str(test), "--salt", "gpu-check", "--overwrite", "true", timeout=600)
    common = ["--config", str(recipe), "--config", str(overlay(check, device)), "--model.model_path",
              str(work / "model"), "--data.shards", str(work / "shards"),
              "--trainer.default_root_dir", str(work / "run")]
    common += [part for item in args.override for part in (f"--{item.split('=', 1)[0]}", item.split("=", 1)[1])]
    ok = ok and check.dentvlm("fit", "fit", *common)
    ok = ok and check.dentvlm("test", "test", *common, "--ckpt_path", "last")
    export = ["--dtype", "bfloat16", "--verify", "false"] if args.size != "mini" else []  # a CPU merge check of a 7B
    ok = ok and check.dentvlm("export", "export", str(work / "run" / "checkpoints" / "last"), str(work / "export"),
                              "--merge", "true", *export)
    serve = "skipped"
    if ok and not args.skip_serve:
        try:
            serve = serve_once(check, work / "export")
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            check.failures.append(f"serve: {exc}")
    from memory_estimate import estimate

    run_config = yaml.safe_load(recipe.read_text())
    memory = estimate(run_config, args.size if args.size != "mini" else "7B", 1)["gib"]
    rows = metric_rows(work / "run")
    train_losses = [row["train/loss"] for row in rows if "train/loss" in row]
    if not train_losses or not all(math.isfinite(v) for v in train_losses):
        check.failures.append(f"training losses not all finite: {train_losses[:8]}")
    fit_probe, test_probe = (json.loads(p.read_text()) if p.is_file() else {}
                             for p in (work / "probe_fit.json", work / "probe_test.json"))
    if fit_probe.get("train_times"):
        probe = {**fit_probe, "test_times": test_probe.get("test_times", []),
                 "test_rows": test_probe.get("test_rows", 0)}
        peak = args.peak_tflops or next((v for k, v in PEAK_BF16_TFLOPS.items() if k in probe.get("device", "")), None)
        figures = training_figures(probe, model_parameters(work / "model"),
                                   run_config["model"].get("gradient_checkpointing", False), peak)
        print(table(check, figures, probe, memory, last_values(rows), serve, versions(device)))
        if "max_allocated_gib" in probe and args.size != "mini" and probe["max_allocated_gib"] > 1.2 * memory:
            check.failures.append(f"peak memory {probe['max_allocated_gib']:.1f} GiB passes the estimate "
                                  f"{memory:.2f} GiB by more than 20%")
    for failure in check.failures:
        print(f"gpu_check: FAILED: {failure}", file=sys.stderr)
    return 1 if check.failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
