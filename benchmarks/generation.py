"""Generation throughput: batched (left-padded, KV-cached) vs. one sample at a time, same samples.

    python benchmarks/generation.py [--samples 32] [--batch-size 8] [--max-new-tokens 32] [--task report]
"""

from __future__ import annotations

import argparse
import time

import torch

from dentvlm.data.collate import pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.module import DentVLM


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="shards/demo")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--task", default="classification")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = DentVLM(model_path="tiny", max_new_tokens=args.max_new_tokens)
    module.configure_model()
    module.eval()
    data = DentDataModule(shards=args.shards, processor_path="tiny", num_workers=0, task=args.task)
    data.setup()
    items = [item for _, item in zip(range(args.samples), iter(data.stream("test", args.task, training=False)))]
    pad = data.encoder.pad_id

    start = time.perf_counter()
    batched = []
    for i in range(0, len(items), args.batch_size):
        batched += module.generate(pad_batch(items[i : i + args.batch_size], pad))
    batched_rate = len(items) / (time.perf_counter() - start)
    start = time.perf_counter()
    single = [module.generate(pad_batch([item], pad))[0] for item in items]
    single_rate = len(items) / (time.perf_counter() - start)
    print(f"tiny model, {len(items)} {args.task} samples, up to {args.max_new_tokens} new tokens, greedy:")
    print(f"  batched (batch {args.batch_size}): {batched_rate:6.1f} samples/s")
    print(f"  one by one       : {single_rate:6.1f} samples/s  -> batched is {batched_rate / single_rate:.1f}x")
    print(f"  identical answers: {batched == single}")


if __name__ == "__main__":
    main()
