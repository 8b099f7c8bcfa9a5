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
