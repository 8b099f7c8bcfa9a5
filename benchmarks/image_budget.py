"""What a recipe's data settings do to COde-shaped checkups: drops before the per-sample image budget
(every image at max_pixels; a sample over cutoff_len whose cut would split an image or the prompt was
dropped) and after it (images scaled down per sample, never below min_pixels), with image tokens per
sample, on a synthetic release of the "code" profile run through the real processor geometry.

    python benchmarks/image_budget.py --config configs/qwen7b.yaml --checkups 120
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import yaml

from dentvlm.data.datamodule import DentDataModule
from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards
from dentvlm.synth import write_synthetic_release

KEYS = ("cutoff_len", "max_images", "image_modalities", "min_pixels", "max_pixels")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/qwen7b.yaml")
    parser.add_argument("--checkups", type=int, default=120)
    parser.add_argument("--task", default="classification")
    args = parser.parse_args()
    data = yaml.safe_load(Path(args.config).read_text())["data"]
    settings = {key: data[key] for key in KEYS if key in data}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        release = write_synthetic_release(Path(tmp) / "release", num_checkups=args.checkups, seed=7, profile="code")
        build_shards(release, Path(tmp) / "shards", salt="bench", val=0.0, test=0.0, policy=ImagePolicy(1024),
                     progress=False)
        made = time.perf_counter() - start
        dm = DentDataModule(shards=str(Path(tmp) / "shards"), processor_path="tiny", num_workers=0, batch_size=1,
                            task=args.task, group_by_length=0, **settings)
        dm.setup()
        start = time.perf_counter()
        examples = list(dm.stream("train", args.task, training=True))
        encode = time.perf_counter() - start
    real = [e for e in examples if not e.is_padding]
    dropped = sum(e.dropped_before for e in examples)
    budget = dm.encoder.budget
    before = [old_outcome(e, dm.hparams.cutoff_len) for e in real]
    tokens = [e.image_tokens for e in real]
    images = [0 if e.image_grid_thw is None else len(e.image_grid_thw) for e in real]
    n = len(real) + dropped
    print(f"{args.config} ({args.task}): cutoff_len {dm.hparams.cutoff_len}, pixels per image "
          f"{budget.min_pixels}..{budget.max_pixels}, at most {dm.hparams.max_images} images")
    print(f"{n} COde-shaped training checkups ({statistics.mean(images):.2f} images shown on average, "
          f"up to {max(images)}); made in {made:.0f} s, encoded in {encode:.0f} s")
    print(f"  before: {before.count('dropped')} dropped ({100 * before.count('dropped') / n:.0f}%), "
          f"{before.count('truncated')} answers cut")
    print(f"  after:  {dropped} dropped, {sum(e.truncated for e in real)} answers cut, "
          f"{sum(e.scaled for e in real)} samples scaled down ({100 * sum(e.scaled for e in real) / n:.0f}%)")
    print(f"  image tokens per sample: mean {statistics.mean(tokens):.0f}, max {max(tokens)}; "
          f"sequence length mean {statistics.mean(len(e) for e in real):.0f}, max {max(len(e) for e in real)}")


def old_outcome(encoded, cutoff: int) -> str:
    """What the encoder did before the budget: every image at max_pixels; a sample over the cutoff
    was cut inside its answer when the cut fell after the prompt, else dropped."""
    extra = encoded.unscaled_image_tokens - encoded.image_tokens
    prompt, total = encoded.prompt_len + extra, len(encoded) + extra
    if total <= cutoff:
        return "kept"
    return "dropped" if prompt >= cutoff else "truncated"


if __name__ == "__main__":
    main()
