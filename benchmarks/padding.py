"""Padding waste and training throughput: naive batching vs. dentvlm's length-grouped batching.

Both runs read the same demo shards in the same order with the tiny model's real processor and
train the tiny model for the same number of steps (forward + backward + AdamW), one process.

    python benchmarks/padding.py [--shards shards/demo] [--batch-size 8] [--steps 12] [--group 8]
"""

from __future__ import annotations

import argparse
import time

import torch

from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.build import load_vlm
from dentvlm.model.inputs import model_inputs


def run(shards: str, batch_size: int, steps: int, group: int) -> tuple[float, float]:
    data = DentDataModule(shards=shards, processor_path="tiny", batch_size=batch_size, num_workers=0,
                          group_by_length=group, max_images=8)
    data.setup()
    torch.manual_seed(0)
    model = load_vlm("tiny").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    real = padded = samples = 0
    elapsed = 0.0
    for step, batch in enumerate(data.train_dataloader()):
        if step == steps:
            break
        mask = batch["attention_mask"]
        real, padded, samples = real + int(mask.sum()), padded + mask.numel(), samples + mask.shape[0]
        start = time.perf_counter()
        model(**model_inputs(batch), labels=batch["labels"]).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        elapsed += time.perf_counter() - start
    return 1 - real / padded, samples / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="shards/demo")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--group", type=int, default=8, help="batches per length-sorted window")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    naive = run(args.shards, args.batch_size, args.steps, group=0)
    grouped = run(args.shards, args.batch_size, args.steps, group=args.group)
    print(f"batch {args.batch_size}, {args.steps} training steps of the tiny model on {args.shards}:")
    print(f"  naive padding       : {naive[0]:6.1%} of tokens are padding, {naive[1]:6.1f} samples/s")
    print(f"  grouped by length x{args.group}: {grouped[0]:6.1%} of tokens are padding, {grouped[1]:6.1f} samples/s "
          f"({grouped[1] / naive[1]:.2f}x)")


if __name__ == "__main__":
    main()
