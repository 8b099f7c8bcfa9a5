"""Which input carries the result? Fine-tune and test the same recipe three times on the demo
shards, with images only, text only, and both (`data.modality`), and print the test metrics side by side.

    python benchmarks/modality_ablation.py --config configs/tiny.yaml
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run(config: str, modality: str, root: Path, extra: list[str]) -> tuple[dict, float]:
    out = root / modality
    flags = ["--config", config, "--data.modality", modality, "--trainer.default_root_dir", str(out),
             "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(out),
             "--trainer.callbacks.dirpath", str(out / "checkpoints"), "--results.out_dir", str(out / "results"),
             "--results.baselines", "[]", *extra]
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dentvlm", "fit", *flags], check=True)
    seconds = time.perf_counter() - start
    subprocess.run([sys.executable, "-m", "dentvlm", "test", *flags, "--ckpt_path", "last"], check=True)
    metrics = json.loads((out / "results" / "metrics.json").read_text())
    return metrics["variants"]["fine-tuned"]["classification"], seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("extra", nargs="*", help="more flags for fit and test, e.g. --seed_everything=1")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for modality in ("images", "text", "both"):
            result, seconds = run(args.config, modality, Path(tmp), args.extra)
            rows.append((modality, result, seconds))
    print(f"{args.config} {' '.join(args.extra)}: demo test split")
    print("| modality | subset accuracy | F1 micro | F1 macro | fit s |")
    print("|---|---|---|---|---|")
    for modality, result, seconds in rows:
        low, high = result["ci"]["subset_accuracy"]
        print(f"| {modality} | {100 * result['subset_accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}] | "
              f"{100 * result['micro_f1']:.1f} | {100 * result['macro_f1']:.1f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
