"""Qwen2.5-VL's vision-tower index tensors, computed where the batch is made (in the DataLoader
workers).

At the start of every forward, Qwen2.5-VL's vision tower derives from the images' patch grids the
patches' rotary positions, the order that groups them into attention windows, and the window and
image boundaries: a Python loop per image with some 35 tensor operations and host copies each, about
2,300 operations for a batch of 64 small images (~5 ms of a CPU training step; on a GPU as many
kernel launches and ~130 stalls). transformers accepts them precomputed, as `image_`-prefixed
keyword arguments of the model's forward (they reach the image tower only); the collator computes
them with transformers' own functions, and `dentvlm.model.inputs.model_inputs` passes them on when
the model's geometry is the one they were made for.
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
    try:  # both arrived in transformers 5.x: the functions, and the image_ prefix that routes their outputs
        from transformers.utils.generic import accepts_precomputed_kwargs  # noqa: F401
        from transformers.vision_utils import get_vision_window_index  # noqa: F401
    except ImportError:
        return None
    vision = config.vision_config
    return VisionGeometry(vision.spatial_merge_size, vision.window_size, vision.patch_size)


def vision_plan(image_grid_thw: torch.Tensor, geometry: VisionGeometry) -> dict:
    """The vision tower's precomputed inputs for a batch's images (`kwargs`, named as the model's
    forward takes them) and the geometry they were made for (`geometry`)."""
    from transformers.vision_utils import get_vision_cu_seqlens, get_vision_position_ids, get_vision_window_index

    window_index, cu_window_seqlens = get_vision_window_index(image_grid_thw, geometry.merge, geometry.window_size,
                                                              geometry.patch_size)
    cu_seqlens = get_vision_cu_seqlens(image_grid_thw)
    kwargs = {
        "image_position_ids": get_vision_position_ids(image_grid_thw, geometry.merge),
        "image_window_index": window_index,
        "image_cu_window_seqlens": cu_window_seqlens,
        "image_cu_seqlens": cu_seqlens,
        "image_max_seqlen": longest(cu_seqlens),  # flash attention's; it would copy them to the host
        "image_max_window_seqlen": longest(cu_window_seqlens),
    }
    return {"geometry": astuple(geometry), "kwargs": kwargs}


def longest(cu_seqlens: torch.Tensor) -> int:
    return int((cu_seqlens[1:] - cu_seqlens[:-1]).max()) if len(cu_seqlens) > 1 else 0
