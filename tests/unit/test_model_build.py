import json

import pytest
import torch

from dentvlm.model.build import load_vlm, resolve_model_path, vision_module_name
from dentvlm.model.finetune import FinetuneSpec, apply_finetuning, language_linear_names, parameter_counts
from dentvlm.model.parallel import block_class_names, vision_tower_class_names


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    return str(tiny_model_dir)


def test_tiny_model_is_a_real_qwen25vl_of_the_promised_size(tiny):
    model = load_vlm(tiny)
    assert type(model).__name__ == "Qwen2_5_VLForConditionalGeneration"
    assert 1_000_000 <= sum(p.numel() for p in model.parameters()) <= 5_000_000
    assert resolve_model_path("tiny").is_dir()


def test_clear_errors_for_missing_or_non_vision_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="is not a directory"):
        resolve_model_path(str(tmp_path / "nope"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_path(str(tmp_path / "empty"))
    text_only = tmp_path / "qwen2"
    text_only.mkdir()
    (text_only / "config.json").write_text(json.dumps({"model_type": "qwen2", "hidden_size": 8}))
    with pytest.raises(ValueError, match="model type 'qwen2' is not a vision-language model"):
        load_vlm(str(text_only))
    with pytest.raises(ValueError, match="model.dtype"):
        load_vlm("tiny", dtype="int3")


def test_all_linear_lora_targets_the_language_model_only(tiny):
    model = load_vlm(tiny)
    names = language_linear_names(model)
    assert names and not any("visual" in n or n.endswith("lm_head") for n in names)
    assert {n.rsplit(".", 1)[-1] for n in names} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                     "up_proj", "down_proj"}
    peft_model = apply_finetuning(model, FinetuneSpec(lora_rank=4))
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n and "visual" not in n for n in trainable)


def test_vision_modes(tiny):
    lora_vision = apply_finetuning(load_vlm(tiny), FinetuneSpec(vision="lora", train_projector=True))
    trainable = [n for n, p in lora_vision.named_parameters() if p.requires_grad]
    assert any("visual.blocks" in n and "lora_" in n for n in trainable)
    assert any("merger.modules_to_save" in n for n in trainable)
    full_vision = apply_finetuning(load_vlm(tiny), FinetuneSpec(vision="full", extra_trainable=["lm_head"]))
    trainable = [n for n, p in full_vision.named_parameters() if p.requires_grad]
    assert any("visual.modules_to_save.default.blocks.0" in n for n in trainable)
    assert any("lm_head.modules_to_save" in n for n in trainable)


def test_full_finetuning_with_frozen_vision(tiny):
    model = apply_finetuning(load_vlm(tiny), FinetuneSpec(mode="full", vision="frozen"))
    vision = vision_module_name(model)
    for name, param in model.named_parameters():
        assert param.requires_grad == (not name.startswith(vision + ".")), name
    trainable, total = parameter_counts(model)
    assert 0 < trainable < total


def test_invalid_specs():
    with pytest.raises(ValueError, match="model.vision='lora' needs"):
        FinetuneSpec(mode="full", vision="lora")
    with pytest.raises(ValueError, match="model.finetune"):
        FinetuneSpec(mode="qlora")


def test_sharding_plan_finds_blocks_and_vision_tower_through_peft(tiny):
    model = apply_finetuning(load_vlm(tiny), FinetuneSpec(vision="full"))
    assert block_class_names(model) == {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"}
    assert vision_tower_class_names(model.get_base_model()) == {"Qwen2_5_VisionTransformerPretrainedModel"}
    assert isinstance(model.get_base_model().get_input_embeddings(), torch.nn.Embedding)
