"""The collator's vision plan is what Qwen2.5-VL's vision tower computes itself, and the tower uses it."""

import types

import pytest
import torch

from dentvlm.data.vision_plan import VisionGeometry, vision_geometry, vision_plan
from dentvlm.model.fast_paths import vision_plan_from_batch

# COde-sized photos as the 7B recipe's image budget leaves them, a small image and a radiograph-like one
GRIDS = torch.tensor([[1, 54, 72], [1, 40, 54], [1, 10, 14], [1, 36, 78]])


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    return model


def test_the_tower_gives_the_same_output_from_the_plan_without_computing_it(model, monkeypatch):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as modeling

    tower = model.model.visual
    geometry = vision_geometry(model.config)
    assert geometry == VisionGeometry(tower.spatial_merge_size, tower.window_size, tower.patch_size)
    pixels = torch.randn(int(GRIDS.prod(-1).sum()), tower.patch_embed.proj.weight[0].numel())
    with torch.no_grad():
        reference = tower(pixels, grid_thw=GRIDS).pooler_output
        assert vision_plan_from_batch(model) == 1
        computed = []  # whether transformers had to compute the window order itself

        def spy(*args, kwargs=None, **more):
            computed.append("window_index" not in (kwargs or {}))
            return original(*args, kwargs=kwargs, **more)

        original = modeling.get_vision_window_index
        monkeypatch.setattr(modeling, "get_vision_window_index", spy)
        planned = tower(pixels, grid_thw=GRIDS, vision_plan=vision_plan(GRIDS, geometry)).pooler_output
        unplanned = tower(pixels, grid_thw=GRIDS).pooler_output
    assert computed == [False, True]
    assert torch.equal(planned, reference) and torch.equal(unplanned, reference)


def test_a_plan_for_another_geometry_is_refused(model):
    vision_plan_from_batch(model)
    tower = model.model.visual
    plan = vision_plan(GRIDS, VisionGeometry(tower.spatial_merge_size, tower.window_size * 2, tower.patch_size))
    pixels = torch.zeros(int(GRIDS.prod(-1).sum()), tower.patch_embed.proj.weight[0].numel())
    with pytest.raises(ValueError, match="name different models"):
        tower(pixels, grid_thw=GRIDS, vision_plan=plan)


def test_only_qwen2_5_vl_gets_a_plan(model):
    assert vision_geometry(model.config) is not None
    assert vision_geometry(types.SimpleNamespace(model_type="qwen2_vl")) is None  # no window attention


def test_a_collated_batch_trains_the_same_with_its_plan(small_shards, tiny_model_dir, model):
    from dentvlm.data.datamodule import DentDataModule
    from dentvlm.model.inputs import PixelNormalizer, model_inputs

    dm = DentDataModule(shards=str(small_shards), processor_path=str(tiny_model_dir), batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm._loader(dm.stream("train", "classification", training=True))))
    assert batch["vision_plan"]["geometry"] == (2, model.config.vision_config.window_size, 14)
    vision_plan_from_batch(model)
    pixels = PixelNormalizer(dm.encoder.processor.image_processor)
    inputs = model_inputs(batch, pixels=pixels)
    without = {key: value for key, value in inputs.items() if key != "vision_plan"}
    with torch.no_grad():
        planned = model(**inputs, labels=batch["labels"]).loss
        unplanned = model(**without, labels=batch["labels"]).loss
    assert torch.isfinite(planned) and torch.equal(planned, unplanned)
