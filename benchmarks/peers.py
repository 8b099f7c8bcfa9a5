"""Training throughput of dentvlm beside LLaMA-Factory and TRL's SFTTrainer, on the same work, measured
side by side in one run.

    python benchmarks/peers.py [--steps 50] [--batch-size 8] [--pairs 6] [--warmup 5]
                               [--peers llamafactory,llamafactory-grouped,trl]
                               [--dentvlm NAME=FLAGS ...]   # e.g. --dentvlm "dentvlm-nogroup=--data.group_by_length 0"

The peers get their own virtual environments, created from the package registry on first use and
kept under ~/.cache/dentvlm/peers/ ($DENTVLM_CACHE/peers): LLaMA-Factory 0.9.5 (with the
transformers 5.6.0, peft 0.18.1 and trl 0.24.0 it pins), and TRL 0.24.0 with the same transformers and
peft; both get dentvlm's torch version. The same work for every tool: the training split of the
demo shards as dentvlm formats it for classification, exported as ShareGPT JSON with the shard images
written unchanged (its rendered prompts and token ids are checked to be dentvlm's, in each tool's own
code); the tiny model folder unchanged; LoRA r/alpha on every linear layer of the language model
(not lm_head; vision tower and merger frozen; nothing else trained), dropout 0; fp32; no gradient
checkpointing; batch, steps, lr (cosine, no warm-up), gradient clipping 1.0, the processor's image
pixel bounds, cutoff length, one DataLoader worker and OMP_NUM_THREADS=1 for all. Runs are interleaved
(the order rotates every pair), and each starts cold (fresh process, fresh HF caches).

Steady samples/s comes from per-step timestamps after the warm-up steps; wall time is the whole
process (imports, data preparation, model loading, training); peak RSS is the largest process of the
run (trainer or its worker); steady CPU ms/sample is the CPU time of trainer and worker after the
warm-up per sample (a check on samples/s when other jobs share the machine); padding is the share of
token positions in the training batches that hold no training token (pad tokens, and dentvlm's
rank-evening padding rows).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "benchmarks"
sys.path[:0] = [str(REPO / "src"), str(BENCH)]

from dentvlm.cache import cache_dir  # noqa: E402
from peers_export import DATASET_FILE, check_rendering, compare_tokens, export_sharegpt  # noqa: E402

PEER_PACKAGES = {
    "llamafactory": ["llamafactory==0.9.5", "transformers==5.6.0", "peft==0.18.1", "trl==0.24.0"],
    "trl": ["trl==0.24.0", "transformers==5.6.0", "peft==0.18.1", "accelerate==1.11.0", "datasets==4.0.0"],
}
PEER_ENV = {"llamafactory": "llamafactory", "llamafactory-grouped": "llamafactory", "trl": "trl"}
VERSIONS = "import importlib.metadata as m; print(' '.join(f'{p} {m.version(p)}' for p in {}))"


def run_environment(work: Path) -> dict[str, str]:
    """Environment of every run: one thread, offline, cold caches, no trackers."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "MKL_", "HF_", "WANDB"))}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false", HF_HUB_OFFLINE="1",
               HF_DATASETS_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_HOME=str(work / "hf"), WANDB_MODE="disabled",
               PYTHONPATH=os.pathsep.join([str(REPO / "src"), str(BENCH)]))
    return env


def ensure_env(name: str, root: Path) -> Path:
    """The python of peer environment `name`, created and installed from the registry when missing."""
    pins = [f"torch=={importlib.metadata.version('torch').split('+')[0]}",
            f"torchvision=={importlib.metadata.version('torchvision').split('+')[0]}"]
    requirements = PEER_PACKAGES[name] + pins
    folder = root / name
    python, marker = folder / "bin" / "python", folder / ".dentvlm-requirements"
    if marker.is_file() and marker.read_text().split() == requirements:
        return python
    if not python.is_file():
        print(f"creating {folder} ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(folder)], check=True)
    print(f"installing {' '.join(requirements)} into {folder} ...", flush=True)
    with (folder / "install.log").open("w") as log:
        pip = subprocess.run([str(python), "-m", "pip", "install", *requirements], stdout=log, stderr=log)
    if pip.returncode:
        raise RuntimeError(f"pip install into {folder} failed; see {folder / 'install.log'}")
    marker.write_text("\n".join(requirements))
    return python


def launch(command: list[str], env: dict, log: Path) -> tuple[float, float, int]:
    """Run `command`; returns (start, end, peak RSS in KiB of its largest process)."""
    with log.open("w") as out:
        start = time.time()
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
        end = time.time()
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode:
        raise RuntimeError(f"{shlex.join(command)} failed ({process.returncode}); see {log}")
    return start, end, usage.ru_maxrss


def dentvlm_config(spec: dict, clock: Path, root: Path) -> dict:
    return {
        "seed_everything": spec["seed"],
        "trainer": {
            "accelerator": "cpu", "devices": 1, "max_steps": spec["steps"], "max_epochs": -1, "limit_val_batches": 0,
            "num_sanity_val_steps": 0, "gradient_clip_val": 1.0, "log_every_n_steps": 10, "logger": False,
            "enable_checkpointing": False, "enable_progress_bar": False, "enable_model_summary": False,
            "default_root_dir": str(root),
            "callbacks": [{"class_path": "peers_clock.StepClock",
                           "init_args": {"out": str(clock), "warmup": spec["warmup"], "steps": spec["steps"]}}],
        },
        "model": {
            "model_path": spec["model"], "finetune": "lora", "vision": "frozen", "lora_rank": spec["lora_rank"],
            "lora_alpha": spec["lora_alpha"], "lora_dropout": 0.0, "extra_trainable": [],
            "learning_rate": spec["learning_rate"], "warmup_ratio": 0.0, "dtype": "float32",
        },
        "data": {
            "shards": spec["shards"], "task": "classification", "batch_size": spec["batch_size"],
            "num_workers": spec["num_workers"], "max_images": spec["max_images"], "cutoff_len": spec["cutoff_len"],
            "min_pixels": spec["min_pixels"], "max_pixels": spec["max_pixels"],
        },
    }


def run_once(variant: str, flags: str | None, spec: dict, pythons: dict, work: Path) -> dict:
    """One cold training run of `variant` (dentvlm when `flags` is not None); its measurements."""
    run_dir = Path(tempfile.mkdtemp(prefix=f"{variant}-", dir=work))
    result_file = run_dir / "steps.json"
    env = run_environment(run_dir)
    if flags is not None:
        config = run_dir / "config.yaml"
        config.write_text(json.dumps(dentvlm_config(spec, result_file, run_dir / "root")))
        command = [sys.executable, "-m", "dentvlm", "fit", "--config", str(config), *shlex.split(flags)]
    else:
        spec_file = run_dir / "spec.json"
        spec_file.write_text(json.dumps({**spec, "output_dir": str(run_dir / "out")}))
        command = [str(pythons[PEER_ENV[variant]]), str(BENCH / "peers_runner.py"), variant, "train",
                   str(spec_file), str(result_file)]
    start, end, rss = launch(command, env, run_dir / "log.txt")
    return measure(json.loads(result_file.read_text()), start, end, rss, spec["warmup"])


def measure(result: dict, start: float, end: float, rss_kib: int, warmup: int) -> dict:
    steps = result["steps"]
    if len(steps) <= warmup:
        raise ValueError(f"{len(steps)} steps recorded, not more than the {warmup} warm-up steps")
    steady = steps[warmup:]
    samples = sum(s["samples"] for s in steady)
    losses = [s["loss"] for s in steps if s.get("loss") is not None]
    return {
        "rate": samples / (steps[-1]["time"] - steps[warmup - 1]["time"]),
        "cpu_ms": 1000 * (steps[-1]["cpu"] - steps[warmup - 1]["cpu"]) / samples,
        "wall": end - start, "first_step": steps[0]["time"] - start, "rss_mib": rss_kib / 1024,
        "padding": 1 - sum(s["real"] for s in steps) / sum(s["slots"] for s in steps),
        "padding_rows": sum(s.get("padding_rows", 0) for s in steps) / sum(s["slots"] for s in steps),
        "trainable": result["trainable"], "dtype": result["dtype"], "steps": len(steps),
        "loss_first": losses[0] if losses else float("nan"),
        "loss_last": statistics.mean(losses[-5:]) if losses else float("nan"),
    }


def check_same_work(exported, spec: dict, pythons: dict, work: Path) -> list[str]:
    """dentvlm's prompts equal LLaMA-Factory's qwen2_vl rendering; each peer's own preprocessing gives
    dentvlm's token ids; returns the summary lines."""
    from dentvlm.data.collate import ChatEncoder
    from dentvlm.model.build import load_processor

    processor = load_processor(spec["model"])
    check_rendering(exported, processor)
    encoder = ChatEncoder(processor, spec["cutoff_len"], "error", spec["min_pixels"], spec["max_pixels"])
    ours = []
    for item in exported:
        encoded = encoder(item.example, training=True)
        ours.append((encoded.input_ids.tolist(), encoded.label_ids.tolist()))
    tokenizer = processor.tokenizer
    newline, turn_end = tokenizer.encode("\n", add_special_tokens=False), tokenizer.convert_tokens_to_ids("<|im_end|>")
    if len(newline) != 1:
        raise AssertionError("the tokenizer splits a newline")
    lines = [f"prompts: dentvlm's chat template renders all {len(exported)} examples exactly as LLaMA-Factory's "
             "qwen2_vl template"]
    for tool in sorted({PEER_ENV[v] for v in spec["peers"]}):
        run_dir = Path(tempfile.mkdtemp(prefix=f"check-{tool}-", dir=work))
        spec_file, out = run_dir / "spec.json", run_dir / "tokens.json"
        spec_file.write_text(json.dumps({**spec, "output_dir": str(run_dir / "out")}))
        launch([str(pythons[tool]), str(BENCH / "peers_runner.py"), tool, "check", str(spec_file), str(out)],
               run_environment(run_dir), run_dir / "log.txt")
        lines.append(compare_tokens(tool, ours, json.loads(out.read_text()), newline[0], turn_end))
    return lines


def versions(pythons: dict) -> list[str]:
    ours = ["torch", "transformers", "peft", "lightning"]
    lines = ["dentvlm (this tree): " + " ".join(f"{p} {importlib.metadata.version(p)}" for p in ours)]
    packages = {"llamafactory": ["llamafactory", "transformers", "peft", "torch"],
                "trl": ["trl", "transformers", "peft", "torch"]}
    for tool, python in sorted(pythons.items()):
        code = VERSIONS.replace("{}", repr(packages[tool]))
        lines.append(f"{tool} venv: " + subprocess.run([str(python), "-c", code], capture_output=True, text=True,
                                                         check=True).stdout.strip())
    return lines


def table(results: dict[str, list[dict]], dentvlm: list[str]) -> list[str]:
    def spread(values, fmt):
        return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"

    lines = [f"| {'tool':<22} | runs | steady samples/s, median [min-max] | steady CPU ms/sample | wall s "
             "| first step s | peak RSS MiB | padding (rows) | trainable | loss first -> last 5 |",
             f"|{'-' * 24}|------|------------------------------------|---------------------|--------"
             "|--------------|--------------|----------------|-----------|----------------------|"]
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in ("wall", "first_step", "rss_mib", "padding",
                                                                    "padding_rows", "loss_first", "loss_last")}
        padding = f"{med['padding']:.1%} ({med['padding_rows']:.1%})"
        lines.append(f"| {name:<22} | {len(runs):>4} | {spread([r['rate'] for r in runs], '{:.2f}'):<34} | "
                     f"{spread([r['cpu_ms'] for r in runs], '{:.0f}'):<19} | "
                     f"{med['wall']:6.1f} | {med['first_step']:12.1f} | {med['rss_mib']:12.0f} | "
                     f"{padding:>14} | {runs[0]['trainable']:>9,} | "
                     f"{med['loss_first']:.2f} -> {med['loss_last']:.2f}{'':<8} |")
    lines.append("")
    for ours in dentvlm:
        for peer, runs in results.items():
            if peer in dentvlm:
                continue
            rate = [a["rate"] / b["rate"] for a, b in zip(results[ours], runs)]
            cpu = [b["cpu_ms"] / a["cpu_ms"] for a, b in zip(results[ours], runs)]
            rss = [a["rss_mib"] / b["rss_mib"] for a, b in zip(results[ours], runs)]
            lines.append(f"{ours} / {peer}: samples/s {statistics.median(rate):.2f}x (per pair {min(rate):.2f}-"
                         f"{max(rate):.2f}), samples per CPU second {statistics.median(cpu):.2f}x (per pair "
                         f"{min(cpu):.2f}-{max(cpu):.2f}), peak RSS {statistics.median(rss):.2f}x")
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default=str(REPO / "shards" / "demo"))
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--pairs", type=int, default=6, help="interleaved rounds (one run of every tool each)")
    parser.add_argument("--warmup", type=int, default=5, help="first steps left out of steady samples/s")
    parser.add_argument("--peers", default="llamafactory,llamafactory-grouped,trl",
                        help=f"comma-separated, of {sorted(PEER_ENV)}")
    parser.add_argument("--dentvlm", action="append", metavar="NAME=FLAGS",
                        help="a dentvlm variant: its name and extra `dentvlm fit` flags (repeatable; default: "
                             "'dentvlm=', its defaults, which group batches by length)")
    parser.add_argument("--lora-rank", type=int, default=16)
    parser.add_argument("--lora-alpha", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--envs", default=None, help="peer venv folder (default: $DENTVLM_CACHE/peers)")
    parser.add_argument("--work", default=None, help="folder for exports and run logs (default: a temporary one)")
    args = parser.parse_args()
    args.peers = [p for p in args.peers.split(",") if p]
    unknown = [p for p in args.peers if p not in PEER_ENV]
    if unknown:
        parser.error(f"unknown peers {unknown}; expected some of {sorted(PEER_ENV)}")
    args.dentvlm = dict(v.split("=", 1) for v in (args.dentvlm or ["dentvlm="]))
    return args


def main() -> None:
    args = parse_args()
    from dentvlm.model.build import load_processor, resolve_model_path

    work = Path(args.work or tempfile.mkdtemp(prefix="dentvlm-peers-"))
    work.mkdir(parents=True, exist_ok=True)
    model = str(resolve_model_path("tiny"))
    size = load_processor(model).image_processor.size
    spec = {"model": model, "shards": str(Path(args.shards).resolve()), "dataset_dir": str(work / "data"),
            "dataset_file": DATASET_FILE, "batch_size": args.batch_size, "steps": args.steps,
            "warmup": args.warmup, "learning_rate": args.learning_rate, "lora_rank": args.lora_rank,
            "lora_alpha": args.lora_alpha, "min_pixels": size["shortest_edge"], "max_pixels": size["longest_edge"],
            "max_images": 8, "cutoff_len": 4096, "num_workers": 1, "seed": 0, "peers": args.peers}
    envs = Path(args.envs) if args.envs else cache_dir() / "peers"
    pythons = {tool: ensure_env(tool, envs) for tool in sorted({PEER_ENV[p] for p in args.peers})}
    exported = export_sharegpt(Path(spec["shards"]), Path(spec["dataset_dir"]), max_images=spec["max_images"])
    header = [f"uptime at start: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}",
              *versions(pythons), *check_same_work(exported, spec, pythons, work)]
    print("\n".join(header), flush=True)
    variants = [*args.dentvlm, *args.peers]
    results: dict[str, list[dict]] = {v: [] for v in variants}
    loads = []
    for pair in range(args.pairs):
        order = variants[pair % len(variants):] + variants[: pair % len(variants)]
        loads.append(os.getloadavg())
        for variant in order:
            run = run_once(variant, args.dentvlm.get(variant), spec, pythons, work)
            results[variant].append(run)
            print(f"pair {pair + 1}/{args.pairs} {variant:<22} {run['rate']:6.2f} samples/s, "
                  f"{run['cpu_ms']:4.0f} CPU ms/sample, "
                  f"wall {run['wall']:5.1f} s, padding {run['padding']:.1%}, peak RSS {run['rss_mib']:.0f} MiB, "
                  f"{run['steps']} steps, trainable {run['trainable']:,} ({run['dtype']})", flush=True)
    loads.append(os.getloadavg())
    print(f"\n{len(exported)} training examples (demo shards, classification), batch {args.batch_size}, "
          f"{args.steps} steps (steady: after {args.warmup}), LoRA r={args.lora_rank} alpha={args.lora_alpha} on "
          f"every language-model linear layer, fp32, image pixels {spec['min_pixels']}-{spec['max_pixels']}, "
          f"1 DataLoader worker, OMP_NUM_THREADS=1, {args.pairs} interleaved pairs")
    print("\n".join(table(results, list(args.dentvlm))))
    print("steady CPU ms/sample: CPU time of the trainer and its worker after the warm-up, per training sample "
          "(less disturbed by other jobs than samples/s)")
    print("first step: process start to the end of the first optimizer step; padding: token positions of the "
          "training batches without a training token, (rows): of them in dentvlm's padding rows (repeats without "
          "labels that fill every epoch to whole batches); samples/s counts training samples only")
    print("load average (1/5/15 min) before each pair and at the end: "
          + ", ".join("/".join(f"{x:.2f}" for x in load) for load in loads))
    print(f"uptime at end: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    print("LLaMA-Factory and TRL also train on the newline after <|im_end|> (one more label token per example), "
          "so their losses differ slightly from dentvlm's.")
    for name, flags in args.dentvlm.items():
        print(f"dentvlm variant {name}: `dentvlm fit` {flags or '(defaults: data.group_by_length 8)'}")
    print(f"logs: {work}")


if __name__ == "__main__":
    main()
