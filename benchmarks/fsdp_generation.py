"""Generation under FSDP2 in two processes (gloo, CPU): every layer re-gathered for every new token
(`synced_gpus`, as evaluation did) against parameters gathered once per `generate` call
(`dentvlm.model.parallel.gathered_parameters`, the default). Same answers, samples/s side by side.

    python benchmarks/fsdp_generation.py --samples 32 --max_new_tokens 32
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

REPO = Path(__file__).resolve().parents[1]


def batches(samples: int, batch_size: int) -> list[dict]:
    from dentvlm.data.collate import pad_batch
    from dentvlm.data.datamodule import DentDataModule

    dm = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path="tiny", num_workers=0, max_images=4)
    dm.setup()
    items = [e for _, e in zip(range(samples), dm.stream("test", "classification", training=False))]
    return [pad_batch(items[i : i + batch_size], dm.encoder.pad_id) for i in range(0, len(items), batch_size)]


def rank_main(rank: int, args, init: str, out: str) -> None:
    from torch.distributed.device_mesh import init_device_mesh
    from transformers import AutoModelForImageTextToText

    from dentvlm.model.build import load_processor
    from dentvlm.model.generation import generation_config
    from dentvlm.model.inputs import model_inputs
    from dentvlm.model.parallel import gathered_parameters, prepare_for_calls_outside_forward, shard_model
    from dentvlm.model.tiny import ensure_tiny_model

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init}", rank=rank, world_size=2)
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(ensure_tiny_model()).eval()
    tokenizer = load_processor("tiny").tokenizer
    model.generation_config = generation_config(args.max_new_tokens, 1, tokenizer)
    shard_model(model, init_device_mesh("cpu", (2,)))
    prepare_for_calls_outside_forward(model)
    mine = batches(args.samples, args.batch_size)[rank::2]
    result = {}
    for name, gathered in (("re-gathered per token", False), ("gathered once per call", True)):
        answers, start = [], time.perf_counter()
        for batch in mine:
            inputs = model_inputs(batch, generation=True)
            with torch.no_grad(), gathered_parameters(model, gathered):
                output = model.generate(**inputs, synced_gpus=not gathered)
            answers += tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        dist.barrier()
        result[name] = {"seconds": time.perf_counter() - start, "answers": answers}
    gathered_results = [None, None]
    dist.all_gather_object(gathered_results, result)
    if rank == 0:
        Path(out).write_text(json.dumps(gathered_results))
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--max_new_tokens", type=int, default=32)
    args = parser.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        out = f"{tmp}/result.json"
        mp.spawn(rank_main, args=(args, f"{tmp}/init", out), nprocs=2, join=True)
        ranks = json.loads(Path(out).read_text())
    names = list(ranks[0])
    print(f"tiny model, FSDP2 over 2 CPU processes, {args.samples} demo test prompts, batch {args.batch_size}, "
          f"up to {args.max_new_tokens} new tokens (random weights: long answers)")
    for name in names:
        seconds = max(r[name]["seconds"] for r in ranks)
        print(f"  {name:<24} {args.samples / seconds:6.2f} samples/s ({seconds:.1f} s)")
    same = all(r[names[0]]["answers"] == r[names[1]]["answers"] for r in ranks)
    first, second = (max(r[n]["seconds"] for r in ranks) for n in names)
    print(f"  speed-up {first / second:.2f}x; identical answers: {same}")


if __name__ == "__main__":
    main()
