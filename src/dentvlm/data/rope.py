"""Qwen2/2.5-VL's 3D rope positions, computed where the batch is made (in the DataLoader workers):
transformers' own `get_rope_index` copies every row to the host (`.tolist()`, `.item()` per image)
at the start of each forward, stalling the device once per micro-batch and once more per recompute.
"""

from __future__ import annotations

import torch

# Processors of the models whose rope `rope_positions` restates (Qwen3-VL, for one, numbers video
# frames differently): other models compute their own positions, and cannot be packed.
QWEN2_ROPE_PROCESSORS = ("Qwen2VLProcessor", "Qwen2_5_VLProcessor")


def knows_rope_of(processor) -> bool:
    return type(processor).__name__ in QWEN2_ROPE_PROCESSORS


def rope_positions(mm_token_type_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, merge: int) -> torch.Tensor:
    """(3, L) Qwen2/2.5-VL rope positions (temporal, height, width) of one unpadded sample with images.

    Text tokens count up by one on all three axes; an image of (t, h, w) patches takes
    t x (h / merge) x (w / merge) tokens whose positions are its grid coordinates offset by the
    position where it starts, and the text after it continues at start + max(h, w) / merge. This
    restates transformers' `get_rope_index` (a test checks they agree) so workers can compute it.
    """
    types = mm_token_type_ids.tolist()
    grids = iter(image_grid_thw.tolist() if image_grid_thw is not None else [])
    pieces, position, index = [], 0, 0
    while index < len(types):
        end = index
        while end < len(types) and types[end] == types[index]:
            end += 1
        if types[index] == 0:
            pieces.append(torch.arange(position, position + end - index).expand(3, -1))
            position += end - index
        else:
            t, h, w = next(grids)
            h, w = h // merge, w // merge
            grid = torch.stack(torch.meshgrid(torch.arange(t), torch.arange(h), torch.arange(w), indexing="ij"))
            pieces.append(grid.reshape(3, -1) + position)
            position += max(h, w)
        index = end
    return torch.cat(pieces, dim=1)
