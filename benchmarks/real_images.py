"""Does the embedded recipe learn from images? A real-image task, not synthetic: scikit-learn's
handwritten digits (UCI, 8 x 8 scans that scikit-learn ships), digits 0-5 as six "conditions",
one photograph per checkup and the same neutral text for all, so the image is the only signal.

It writes the task as a release in the COde layout, shards it, fine-tunes the tiny model with
`configs/tiny.yaml` (single-label, images only) and evaluates it with `dentvlm test`.

    pip install scikit-learn && python benchmarks/real_images.py
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

NAMES = ("zero", "one", "two", "three", "four", "five")
CLASSES = [f"digit {name}" for name in NAMES]


def write_release(out: Path, per_class: int, seed: int) -> None:
    """Digits 0-5 as checkups: ``complete_dataset.csv`` + ``Images/Photographs/``."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    photos = out / "Images" / "Photographs"
    photos.mkdir(parents=True)
    (out / "Images" / "Radiographs").mkdir()
    rows = []
    for label, name in enumerate(CLASSES):
        chosen = rng.permutation(np.flatnonzero(digits.target == label))[:per_class]
        for index in chosen:
            pixels = (digits.images[index] * (255 / 16)).astype(np.uint8)  # 0-16 gray levels
            image = Image.fromarray(pixels).resize((112, 112), Image.Resampling.NEAREST).convert("RGB")
            file = f"D{index:05d}.jpg"
            image.save(photos / file, quality=95)
            rows.append({"checkup_id": f"C{index:05d}", "patient_id": f"P{index:05d}", "photographs": file,
                         "radiographs": "", "chief_complaint": "routine checkup", "anomalies_en": name})
    with (out / "complete_dataset.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def dentvlm(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "dentvlm", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_class", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--config", default="configs/tiny.yaml")
    parser.add_argument("--keep_results", default=None, help="copy the results folder (report.md, plots) here")
    parser.add_argument("extra", nargs="*", help="more `dentvlm fit` flags, e.g. --trainer.max_epochs=5")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_release(root / "release", args.per_class, args.seed)
        dentvlm("shard", str(root / "release"), str(root / "shards"), "--salt", "digits", "--classes",
                json.dumps(CLASSES), "--val", "0.15", "--test", "0.25", "--image_long_side", "112")
        run = ["--config", args.config, "--data.shards", str(root / "shards"), "--data.modality", "images",
               "--data.multi_label", "false", "--trainer.default_root_dir", str(root / "run"),
               "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir",
               str(root / "run"), "--trainer.callbacks.dirpath", str(root / "run" / "checkpoints"),
               "--results.out_dir", str(root / "results"), "--results.baselines", "[]", *args.extra]
        start = time.perf_counter()
        dentvlm("fit", *run)
        trained = time.perf_counter() - start
        dentvlm("test", *run, "--ckpt_path", "last")
        metrics = json.loads((root / "results" / "metrics.json").read_text())
        test = json.loads((root / "shards" / "manifest.json").read_text())["splits"]["test"]["labels"]
        if args.keep_results:
            shutil.copytree(root / "results", args.keep_results, dirs_exist_ok=True)
    result = metrics["variants"]["fine-tuned"]["classification"]
    majority = max(test.values()) / sum(test.values())
    low, high = result["ci"]["accuracy"]
    print(f"digits 0-5 (scikit-learn), images only, {args.per_class} per class, {sum(test.values())} test "
          f"checkups; fit {trained:.0f} s")
    print(f"accuracy {100 * result['accuracy']:.1f} [{100 * low:.1f}, {100 * high:.1f}], macro F1 "
          f"{100 * result['macro_f1']:.1f}, unparseable {result['unparseable']}; chance {100 / len(CLASSES):.1f}, "
          f"majority class {100 * majority:.1f}")
    clinical = metrics["variants"]["fine-tuned"].get("clinical", {})
    if "macro" in clinical.get("discrimination", {}):
        macro, ci = clinical["discrimination"]["macro"], clinical["discrimination"]["macro"]["ci"]
        youden = clinical["operating_points"]["youden"].get("macro", {})
        print(f"macro AUROC {100 * macro['auroc']:.1f} {_interval(ci.get('auroc'))}, macro AP "
              f"{100 * macro['average_precision']:.1f}, pooled ECE {100 * clinical['calibration']['pooled']:.1f}; at "
              f"Youden thresholds from the validation split: sensitivity {_rate(youden.get('sensitivity'))}, "
              f"specificity {_rate(youden.get('specificity'))}")


def _interval(bounds) -> str:
    return f"[{100 * bounds[0]:.1f}, {100 * bounds[1]:.1f}]" if bounds else ""


def _rate(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


if __name__ == "__main__":
    main()
