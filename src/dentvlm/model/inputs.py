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

from dataclasses import astuple

import torch

from dentvlm.data.collate import IGNORE_INDEX
from dentvlm.data.vision_plan import VisionGeometry


class PixelNormalizer:
    """The data workers send images as uint8 patches (a quarter of float32's bytes); this turns them
    into the processor's normalised float patches on the device: (pixel / 255 - mean) / std, each
    patch being (channels, temporal, patch, patch) values flattened, channel-major.

    Args:
        image_processor: The Qwen-VL image processor (image_mean, image_std, temporal_patch_size, patch_size).
    """

    def __init__(self, image_processor):
        per_channel = image_processor.temporal_patch_size * image_processor.patch_size**2
        mean = torch.tensor(image_processor.image_mean, dtype=torch.float64).repeat_interleave(per_channel)
        std = torch.tensor(image_processor.image_std, dtype=torch.float64).repeat_interleave(per_channel)
        # (pixel / 255 - mean) / std as one multiply-add: pixel x scale + shift (one pass over the
        # images instead of three; a batch of COde checkups is tens of millions of values)
        self.scale, self.shift = (1 / (255 * std)).float(), (-mean / std).float()  # (patch_dim,)
        self._on: dict = {}

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dtype != torch.uint8:  # already normalised (e.g. a batch made by the processor itself)
            return pixels
        if pixels.device not in self._on:  # one copy per device, not one per step
            self._on[pixels.device] = (self.scale.to(pixels.device), self.shift.to(pixels.device))
        scale, shift = self._on[pixels.device]
        return torch.addcmul(shift, pixels.float(), scale)


def model_inputs(batch: dict, generation: bool = False, pixels: PixelNormalizer | None = None,
                 vision: VisionGeometry | None = None) -> dict:
    """The model's keyword inputs from a collated batch (the generation prompt when `generation`);
    `pixels` normalises uint8 images from the data workers; `vision` (the model's geometry) passes
    the batch's vision plan on (`dentvlm.data.vision_plan`), after checking it was made for it.

    Raises:
        ValueError: The batch's vision plan was made for another vision geometry.
    """
    if generation:  # left-padded prompts: the mask keeps every row's pads out of its attention
        inputs = {"input_ids": batch["gen_input_ids"], "attention_mask": batch["gen_attention_mask"],
                  "mm_token_type_ids": batch["gen_mm_token_type_ids"]}
    else:
        # Training/evaluation rows are right-padded and attention is causal, so no real token ever
        # attends to a pad: the mask would change nothing that a label reads, and without it sdpa and
        # flash attention take their mask-free causal kernels. (Packed rows have no pads at all.)
        inputs = {"input_ids": batch["input_ids"], "mm_token_type_ids": batch["mm_token_type_ids"]}
        if "position_ids" in batch:  # made by the collator (packed rows: text + 3D positions)
            inputs["position_ids"] = batch["position_ids"]
        if vision is not None and "vision_plan" in batch:  # the vision tower's index tensors, made by the collator
            plan = batch["vision_plan"]
            if tuple(plan["geometry"]) != astuple(vision):
                raise ValueError(f"the batch's vision plan was made for (merge, window, patch) "
                                 f"{tuple(plan['geometry'])} but the model's vision tower has {astuple(vision)}: "
                                 "data.processor_path and model.model_path name different models")
            inputs.update(plan["kwargs"])
    if "pixel_values" in batch:
        inputs["pixel_values"] = pixels(batch["pixel_values"]) if pixels is not None else batch["pixel_values"]
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
    merge = vision_config.spatial_merge_size
    channels = getattr(vision_config, "in_channels", getattr(vision_config, "in_chans", 3))
    patch_dim = channels * vision_config.temporal_patch_size * vision_config.patch_size**2

    def add_column(tensor: torch.Tensor, last_row_value: int, other_value: int | None) -> torch.Tensor:
        """`tensor` with one more column: `last_row_value` in the last row, `other_value` (None: a copy
        of the edge column, masked out anyway; no device-to-host copy) in the others."""
        edge = tensor[:, :1] if left else tensor[:, -1:]
        column = edge.clone() if other_value is None else torch.full_like(edge, other_value)
        column[-1] = last_row_value
        return torch.cat([column, tensor] if left else [tensor, column], dim=1)

    out = dict(inputs)
    out["input_ids"] = add_column(ids, image_token_id, None)
    out["mm_token_type_ids"] = add_column(inputs["mm_token_type_ids"], 1, 0)
    if "position_ids" in inputs:  # packed: the dummy is one more sample, positions restarting at 0;
        positions = inputs["position_ids"]  # padded: a masked position
        zero = torch.zeros((positions.shape[0], positions.shape[1], 1), dtype=positions.dtype, device=ids.device)
        out["position_ids"] = torch.cat([zero, positions] if left else [positions, zero], dim=2)
    if "attention_mask" in inputs:
        out["attention_mask"] = add_column(inputs["attention_mask"], 0, 0)  # nothing attends to it
    # One image of merge x merge patches: merge^2 patches make one token after the merger.
    out["pixel_values"] = torch.zeros((merge * merge, patch_dim), device=ids.device)
    out["image_grid_thw"] = torch.tensor([[1, merge, merge]], device=ids.device)
    if labels is not None:
        labels = add_column(labels, IGNORE_INDEX, IGNORE_INDEX)
    return out, labels
