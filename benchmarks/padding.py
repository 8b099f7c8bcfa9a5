"""Padding waste and training throughput: naive batching, length-grouped batching, and padding-free
packing (`data.packing`), measured side by side.

Every run reads the same demo shards with the tiny model's real processor and trains the tiny model
for the same number of steps with dentvlm's own loss (answer positions only, token-weighted):
forward + backward + AdamW, one process. Runs are interleaved and repeated; the median is printed.

    python benchmarks/padding.py [--shards shards/demo] [--batch-size 8] [--steps 12] [--repeats 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.build import load_processor, load_vlm
from dentvlm.model.inputs import PixelNormalizer, model_inputs
from dentvlm.model.loss import answer_loss

SETTINGS = {"naive padding": dict(group_by_length=0), "grouped by length": dict(group_by_length=8),
            "packed (padding-free)": dict(packing=True)}


def run(shards: str, batch_size: int, steps: int, settings: dict) -> tuple[float, float]:
    """(fraction of tokens that are padding, training samples/s) over `steps` steps."""
    data = DentDataModule(shards=shards, processor_path="tiny", batch_size=batch_size, num_workers=0, max_images=8,
                          **settings)
    data.setup()
    torch.manual_seed(0)
    model = load_vlm("tiny").train()
    pixels = PixelNormalizer(load_processor("tiny").image_processor)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    real = total = samples = 0
    elapsed = 0.0
    for step, batch in enumerate(data.train_dataloader()):
        if step == steps:
            break
        total += batch["input_ids"].numel()
        real += int(batch["stats"]["tokens"])
        samples += len(batch["meta"])
        start = time.perf_counter()
        loss, tokens = answer_loss(model, model_inputs(batch, pixels=pixels), batch["labels"], batch["loss_positions"])
        (loss / tokens).backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed += time.perf_counter() - start
    return 1 - real / total, samples / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="shards/demo")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[str, list] = {name: [] for name in SETTINGS}
    for _ in range(args.repeats):
        for name, settings in SETTINGS.items():
            results[name].append(run(args.shards, args.batch_size, args.steps, settings))
    print(f"batch {args.batch_size}, {args.steps} training steps of the tiny model on {args.shards}, "
          f"median of {args.repeats} interleaved runs, {torch.get_num_threads()} threads:")
    base = statistics.median(r[1] for r in results["naive padding"])
    for name, runs in results.items():
        speed = statistics.median(r[1] for r in runs)
        print(f"  {name:<22} {runs[0][0]:6.1%} of tokens are padding, {speed:6.1f} samples/s ({speed / base:.2f}x)")


if __name__ == "__main__":
    main()
