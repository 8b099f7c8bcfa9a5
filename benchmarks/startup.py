"""Start-up: seconds from launching `dentvlm fit` to its first training step, by phase.

Runs `dentvlm fit --config configs/tiny.yaml` for one step (in a fresh process, with the run's own
loggers) with a probe callback that prints, relative to the process start, when the model is built,
when training starts and when the first batch arrives; repeated, median printed.

    python benchmarks/startup.py [--repeats 3] [extra dentvlm fit flags ...]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightning as L

REPO = Path(__file__).resolve().parents[1]
PHASES = ("imports done", "model built", "fit started", "first batch")


def since_start() -> float:
    """Seconds since this process started (from /proc, so interpreter start-up counts too)."""
    ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
    uptime = float(Path("/proc/uptime").read_text().split()[0])
    return uptime - ticks / os.sysconf("SC_CLK_TCK")


class StartupProbe(L.Callback):
    """Prints `startup <phase> <seconds>` lines."""

    def __init__(self):
        print(f"startup imports done {since_start():.2f}", flush=True)

    def on_fit_start(self, trainer, pl_module) -> None:
        print(f"startup model built {since_start():.2f}", flush=True)

    def on_train_start(self, trainer, pl_module) -> None:
        print(f"startup fit started {since_start():.2f}", flush=True)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if batch_idx == 0:
            print(f"startup first batch {since_start():.2f}", flush=True)


def measure(config: str, extra: list[str]) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "dentvlm", "fit", "--config", config,
                   "--trainer.max_steps", "1", "--trainer.limit_val_batches", "0", "--trainer.default_root_dir",
                   tmp, "--trainer.callbacks+=benchmarks.startup.StartupProbe", *extra]
        start = time.perf_counter()
        out = subprocess.run(command, cwd=REPO, capture_output=True, text=True, check=True).stdout
        total = time.perf_counter() - start
    phases = {line.split(" ", 1)[1].rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
              for line in out.splitlines() if line.startswith("startup ")}
    return {**phases, "whole run (1 step, exit included)": total}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--config", default=str(REPO / "configs" / "tiny.yaml"))
    parser.add_argument("extra", nargs="*")
    args = parser.parse_args()
    runs = [measure(args.config, args.extra) for _ in range(args.repeats)]
    print(f"dentvlm fit --config {args.config} {' '.join(args.extra)}: median of {args.repeats}, "
          "seconds since the process started")
    for phase in runs[0]:
        print(f"  {phase:<36} {statistics.median(r[phase] for r in runs):6.2f}")


if __name__ == "__main__":
    main()
