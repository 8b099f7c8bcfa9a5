"""Batched, left-padded, KV-cached generation gives the same answers as one-by-one generation."""

import pytest
import torch

from dentvlm.data.collate import pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.module import DentVLM

from .conftest import REPO


@pytest.mark.slow
@pytest.mark.parametrize("task", ["classification", "report"])
def test_batched_generation_equals_one_by_one(task):
    torch.manual_seed(0)
    module = DentVLM(model_path="tiny", max_new_tokens=24)  # random weights: long, varied answers
    module.configure_model()
    module.eval()
    data = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path="tiny", num_workers=0,
                          eval_batch_size=8, task=task, max_images=4)
    data.setup()
    stream = data.stream("test", task, training=False)
    items = [item for _, item in zip(range(8), iter(stream))]
    lengths = {int(item.prompt_len) for item in items}
    assert len(lengths) > 1  # prompts of different lengths: left padding is exercised
    pad = data.encoder.pad_id
    batched = module.generate(pad_batch(items, pad))
    single = [module.generate(pad_batch([item], pad))[0] for item in items]
    assert batched == single
    assert sum(len(answer) for answer in batched) > 8 * 20 and len(set(batched)) > 1


@pytest.mark.slow
def test_generation_uses_exactly_the_configured_settings(tiny_model_dir, tmp_path):
    """A checkpoint's own generation_config.json (Qwen2.5-VL ships sampling, repetition_penalty 1.05,
    top_k 1 ...) must not leak into evaluation: answers equal a hand-written greedy loop."""
    import json
    import shutil

    model_dir = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model_dir)
    (model_dir / "generation_config.json").write_text(json.dumps(
        {"do_sample": True, "temperature": 0.05, "repetition_penalty": 3.0, "no_repeat_ngram_size": 1,
         "max_new_tokens": 2, "num_beams": 3}))
    torch.manual_seed(0)
    module = DentVLM(model_path=str(model_dir), max_new_tokens=12)
    module.configure_model()
    module.eval()
    data = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path=str(model_dir), num_workers=0,
                          max_images=2)
    data.setup()
    item = next(iter(data.stream("test", "classification", training=False)))
    batch = pad_batch([item], data.encoder.pad_id)
    answer = module.generate(batch)[0]

    ids, types = batch["gen_input_ids"], batch["gen_mm_token_type_ids"]
    end = module.tokenizer.convert_tokens_to_ids("<|im_end|>")
    new = []
    with torch.no_grad():
        for _ in range(12):  # greedy, recomputing everything each step: no cache, no penalties
            logits = module.network(input_ids=ids, attention_mask=torch.ones_like(ids), mm_token_type_ids=types,
                                    pixel_values=module.pixels(batch["pixel_values"]),
                                    image_grid_thw=batch["image_grid_thw"]).logits
            token = int(logits[0, -1].argmax())
            if token == end:
                break
            new.append(token)
            ids = torch.cat([ids, torch.tensor([[token]])], dim=1)
            types = torch.cat([types, torch.zeros((1, 1), dtype=types.dtype)], dim=1)
    assert answer == module.tokenizer.decode(new, skip_special_tokens=True)
    assert len(new) == 12 and len(set(new)) < len(new)  # greedy repeats tokens that a penalty would forbid
