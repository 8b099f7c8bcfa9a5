"""The collator's vision plan is what Qwen2.5-VL's vision tower computes itself, and the model uses it."""

import types

import pytest
import torch

from dentvlm.data.vision_plan import VisionGeometry, vision_geometry, vision_plan
from dentvlm.model.inputs import PixelNormalizer, model_inputs

# COde-sized photos as the 7B recipe's image budget leaves them, a small image and a radiograph-like one
GRIDS = torch.tensor([[1, 54, 72], [1, 40, 54], [1, 10, 14], [1, 36, 78]])


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa")


def test_the_tower_gives_the_same_output_from_the_plan_without_computing_it(model, monkeypatch):
    from transformers.models.qwen2_5_vl import modeling_qwen2_5_vl as modeling

    tower = model.model.visual
    geometry = vision_geometry(model.config)
    assert geometry == VisionGeometry(tower.spatial_merge_size, tower.window_size, tower.patch_size)
    pixels = torch.randn(int(GRIDS.prod(-1).sum()), tower.patch_embed.proj.weight[0].numel())
    computed = []  # whether transformers had to compute the window order and the positions itself

    def spy(function, key):
        def call(*args, kwargs=None, **more):
            computed.append(key not in (kwargs or {}))
            return function(*args, kwargs=kwargs, **more)
        return call

    monkeypatch.setattr(modeling, "get_vision_window_index", spy(modeling.get_vision_window_index, "window_index"))
    monkeypatch.setattr(modeling, "get_vision_position_ids", spy(modeling.get_vision_position_ids, "position_ids"))
    with torch.no_grad():
        planned = torch.cat(model.model.get_image_features(pixels, GRIDS, **vision_plan(GRIDS, geometry)["kwargs"])
                            .pooler_output)
        assert computed == [False, False]
        reference = torch.cat(model.model.get_image_features(pixels, GRIDS).pooler_output)
        assert computed[2:] == [True, True]
    assert torch.equal(planned, reference)


def test_only_qwen2_5_vl_gets_a_plan(model):
    assert vision_geometry(model.config) is not None
    assert vision_geometry(types.SimpleNamespace(model_type="qwen2_vl")) is None  # no window attention


@pytest.fixture(scope="module")
def batch(small_shards, tiny_model_dir):
    from dentvlm.data.datamodule import DentDataModule

    dm = DentDataModule(shards=str(small_shards), processor_path=str(tiny_model_dir), batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm._loader(dm.stream("train", "classification", training=True))))
    return batch, PixelNormalizer(dm.encoder.processor.image_processor)


def test_a_collated_batch_trains_the_same_with_its_plan(model, batch):
    batch, pixels = batch
    geometry = vision_geometry(model.config)
    assert batch["vision_plan"]["geometry"] == (2, model.config.vision_config.window_size, 14)
    planned, unplanned = model_inputs(batch, pixels=pixels, vision=geometry), model_inputs(batch, pixels=pixels)
    assert set(planned) - set(unplanned) == set(batch["vision_plan"]["kwargs"])  # without the geometry: no plan
    assert "image_window_index" in planned
    with torch.no_grad():
        losses = [model(**inputs, labels=batch["labels"]).loss for inputs in (planned, unplanned)]
    assert torch.isfinite(losses[0]) and torch.equal(*losses)


def test_a_plan_for_another_geometry_is_refused(model, batch):
    batch, pixels = batch
    geometry = vision_geometry(model.config)
    other = VisionGeometry(geometry.merge, geometry.window_size * 2, geometry.patch_size)
    with pytest.raises(ValueError, match="name different models"):
        model_inputs(batch, pixels=pixels, vision=other)
    assert "image_window_index" not in model_inputs(batch, generation=True, pixels=pixels, vision=geometry)
