"""Qwen2.5-VL's vision-tower index tensors, computed where the batch is made (in the DataLoader
workers).

At the start of every forward, Qwen2.5-VL's vision tower derives from the images' patch grids the
patches' rotary positions, the order that groups them into attention windows, and the window and
image boundaries: a Python loop per image with some 35 tensor operations and host copies each, about
2,300 operations for a batch of 64 small images (~5 ms of a CPU training step; on a GPU as many
kernel launches and ~130 stalls). transformers accepts them precomputed; the collator computes them
with transformers' own functions, and the model's vision tower takes them from the batch
(`dentvlm.model.fast_paths.vision_plan_from_batch`).
"""

from __future__ import annotations

from dataclasses import astuple, dataclass

import torch


@dataclass(frozen=True)
class VisionGeometry:
    """What the plan depends on besides the grids: Qwen2.5-VL's vision config."""

    merge: int
    window_size: int
    patch_size: int


def vision_geometry(config) -> VisionGeometry | None:
    """The vision geometry of a Qwen2.5-VL model config; None for other models, or with a
    transformers that cannot take the plan precomputed."""
    if getattr(config, "model_type", None) != "qwen2_5_vl":
        return None
    try:
        from transformers.vision_utils import get_vision_window_index  # noqa: F401  (transformers >= 5.x)
    except ImportError:
        return None
    vision = config.vision_config
    return VisionGeometry(vision.spatial_merge_size, vision.window_size, vision.patch_size)


def vision_plan(image_grid_thw: torch.Tensor, geometry: VisionGeometry) -> dict:
    """The vision tower's precomputed inputs for a batch's images, under transformers' own keyword
    names, and the geometry they were made for (checked by the model)."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    window_index, cu_window_seqlens = get_vision_window_index(image_grid_thw, geometry.merge, geometry.window_size,
                                                              geometry.patch_size)
    cu_seqlens = get_vision_cu_seqlens(image_grid_thw)
    return {
        "position_ids": get_vision_position_ids(image_grid_thw, geometry.merge),
        "window_index": window_index,
        "cu_window_seqlens": cu_window_seqlens,
        "cu_seqlens": cu_seqlens,
        "max_seqlen": longest(cu_seqlens),  # flash attention's; it would copy them to the host
        "max_window_seqlen": longest(cu_window_seqlens),
        "geometry": astuple(geometry),
    }


def longest(cu_seqlens: torch.Tensor) -> int:
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if len(cu_seqlens) > 1 else 0
