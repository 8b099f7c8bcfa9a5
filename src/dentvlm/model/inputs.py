"""The model's keyword inputs from a collated batch, and the vision keep-alive for FSDP2.

Under FSDP2 every forward is collective: each FSDP unit all-gathers its parameters on every rank
at once. Qwen-VL runs its vision tower only when a batch has images, so a rank whose batch has
none (a checkup without photographs, a text-only ablation on some ranks) would skip the vision
tower's all-gathers that the other ranks wait in, and hang. `with_vision_keepalive` gives such a
batch one masked-out image of a single token: the vision tower runs everywhere, in the same order
(embeddings, then vision, then layers) and with gradients flowing through it, and the image changes
no output that counts (attention never sees it, its position has no label).
"""

from __future__ import annotations

import torch

from dentvlm.data.collate import IGNORE_INDEX


def model_inputs(batch: dict, generation: bool = False) -> dict:
    """The model's keyword inputs from a collated batch (the generation prompt when `generation`)."""
    prefix = "gen_" if generation else ""
    inputs = {
        "input_ids": batch[prefix + "input_ids"],
        "attention_mask": batch[prefix + "attention_mask"],
        "mm_token_type_ids": batch[prefix + "mm_token_type_ids"],
    }
    if "pixel_values" in batch:
        inputs["pixel_values"] = batch["pixel_values"]
        inputs["image_grid_thw"] = batch["image_grid_thw"]
    return inputs


def with_vision_keepalive(inputs: dict, labels: torch.Tensor | None, image_token_id: int, vision_config,
                          left: bool) -> tuple[dict, torch.Tensor | None]:
    """`inputs` (and `labels`) with one masked single-token image added when they hold no image.

    Args:
        inputs: Model inputs from `model_inputs`.
        labels: (B, L) training labels, or None (generation).
        image_token_id: The tokenizer's image placeholder id (``<|image_pad|>``).
        vision_config: The model's vision config (patch_size, temporal_patch_size, in_channels,
            spatial_merge_size).
        left: Add the column at the left (left-padded generation prompts) rather than the right.
    """
    if "pixel_values" in inputs:
        return inputs, labels
    ids = inputs["input_ids"]
    rows = ids.shape[0]
    merge = vision_config.spatial_merge_size
    channels = getattr(vision_config, "in_channels", getattr(vision_config, "in_chans", 3))
    patch_dim = channels * vision_config.temporal_patch_size * vision_config.patch_size**2

    def add_column(tensor: torch.Tensor, last_row_value: int, other_value: int) -> torch.Tensor:
        column = torch.full((rows, 1), other_value, dtype=tensor.dtype, device=tensor.device)
        column[-1] = last_row_value
        return torch.cat([column, tensor] if left else [tensor, column], dim=1)

    out = dict(inputs)
    out["input_ids"] = add_column(ids, image_token_id, int(ids[-1, 0 if left else -1]))
    out["attention_mask"] = add_column(inputs["attention_mask"], 0, 0)  # nothing attends to it
    out["mm_token_type_ids"] = add_column(inputs["mm_token_type_ids"], 1, 0)
    # One image of merge x merge patches: merge^2 patches make one token after the merger.
    out["pixel_values"] = torch.zeros((merge * merge, patch_dim), device=ids.device)
    out["image_grid_thw"] = torch.tensor([[1, merge, merge]], device=ids.device)
    if labels is not None:
        labels = add_column(labels, IGNORE_INDEX, IGNORE_INDEX)
    return out, labels
