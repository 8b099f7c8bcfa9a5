"""What class probabilities cost beside generating the answer, on the same test checkups and batches:
teacher-forced scoring of every allowed answer (`dentvlm.model.scoring`: one prompt forward, then all
candidate answers in one block-masked row per checkup) vs. greedy generation, and the naive alternative,
one forward per candidate answer (what scoring must not cost). With a checkpoint, also the agreement of the
most probable answer set with the generated answer.

    python benchmarks/class_scoring.py [--checkpoint runs/tiny/checkpoints/last.ckpt] [--samples 32]
"""

from __future__ import annotations

import argparse
import time

import torch

from dentvlm.data.collate import pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.labels import LabelParser
from dentvlm.model.inputs import model_inputs
from dentvlm.model.module import DentVLM
from dentvlm.model.scoring import answer_sets, score_answers


def load(checkpoint: str | None) -> DentVLM:
    if checkpoint is None:
        module = DentVLM(model_path="tiny", max_new_tokens=16)
        module.configure_model()
        return module.eval()
    module = DentVLM.load_from_checkpoint(checkpoint, max_new_tokens=16)
    module.configure_model()
    module.load_state_dict(torch.load(checkpoint, weights_only=True)["state_dict"], strict=False)
    return module.eval()


def timed(function, batches) -> tuple[list, float]:
    start = time.perf_counter()
    results = [function(batch) for batch in batches]
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="shards/demo")
    parser.add_argument("--checkpoint", default=None)
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--naive-samples", type=int, default=4, help="checkups scored one forward per answer")
    args = parser.parse_args()
    torch.manual_seed(0)
    module = load(args.checkpoint)
    data = DentDataModule(shards=args.shards, processor_path="tiny", num_workers=0)
    data.setup()
    items = [item for _, item in zip(range(args.samples), iter(data.stream("test", "classification", training=False)))]
    batches = [pad_batch(items[i: i + args.batch_size], data.encoder.pad_id)
               for i in range(0, len(items), args.batch_size)]
    sets = answer_sets(data.classes, True, "none", module.tokenizer)

    def score(batch):
        inputs = model_inputs(batch, generation=True, pixels=module.pixels)
        with torch.no_grad():
            return score_answers(module.network, inputs, sets, max_rows=args.batch_size)

    module.generate(batches[0])  # warm-up
    answers, generation = timed(module.generate, batches)
    scores, scoring = timed(score, batches)
    naive = naive_seconds(module, items[: args.naive_samples], sets, data.encoder.pad_id)
    n, m = len(items), len(sets.texts)
    print(f"{'tiny model' if args.checkpoint is None else args.checkpoint}, {n} demo test checkups, batch "
          f"{args.batch_size}, {m} allowed answers (multi-label, {len(data.classes)} classes):")
    print(f"  generation (greedy, up to 16 tokens) : {n / generation:7.2f} checkups/s")
    print(f"  class scoring (all {m} answers)       : {n / scoring:7.2f} checkups/s ({scoring / generation:.2f}x the "
          "generation time)")
    print(f"  one forward per answer (naive)       : {1 / naive:7.2f} checkups/s ({naive * n / scoring:.0f}x the "
          "scoring time)")
    parser_ = LabelParser(data.classes)
    best = [sets.texts[i] for s in scores for i in s.argmax(-1).tolist()]
    written = [a.strip() for batch in answers for a in batch]
    same = [parser_.parse(b) == parser_.parse(w) for b, w in zip(best, written)]
    print(f"  most probable answer set = generated answer's labels: {sum(same)} of {n} checkups")


def naive_seconds(module: DentVLM, items, sets, pad_id: int) -> float:
    """Seconds per checkup to score every answer with a forward of its own (prompt + answer)."""
    start = time.perf_counter()
    for item in items:
        prompt = item.input_ids[: item.prompt_len]
        for answer in range(len(sets.texts)):
            length = int(sets.lengths[answer])
            candidate = type(item)(**{**item.__dict__, "input_ids": torch.cat([prompt, sets.tokens[answer, :length]]),
                                      "label_ids": torch.full((item.prompt_len + length,), -100),
                                      "mm_token_type_ids": torch.cat([item.mm_token_type_ids[: item.prompt_len],
                                                                      torch.zeros(length, dtype=torch.long)])})
            batch = pad_batch([candidate], pad_id)
            with torch.no_grad():
                module.network(**model_inputs(batch, pixels=module.pixels), logits_to_keep=length + 1)
    return (time.perf_counter() - start) / max(1, len(items))


if __name__ == "__main__":
    main()
