"""Padding-free training batches: a batch's samples concatenated into one row.

Each sample keeps its own positions (text positions restart at 0, and Qwen-VL's 3D rope positions
are computed per sample), and attention stays inside each sample: transformers reads the restarting
text positions as packed sequences and builds a block-diagonal causal mask (sdpa, eager) or varlen
`cu_seqlens` (flash attention). This is ms-swift's `padding_free` and LLaMA-Factory's `neat_packing`
for one batch: the batch keeps its sample count, so every rank still runs the same number of steps
(variable-count packing would break the equal batch counts that FSDP needs), and no token is padding.
"""

from __future__ import annotations

import torch

from dentvlm.data.collate import IGNORE_INDEX, Encoded, loss_pairs, loss_positions
from dentvlm.data.rope import rope_positions


def pack_batch(items: list[Encoded], merge: int) -> dict:
    """One row holding every item of the batch (see the module docstring).

    Returns the training keys of a collated batch: input_ids, labels, mm_token_type_ids (1, T),
    position_ids (4, 1, T) — text positions first, then the 3 rope axes — and no attention mask.
    Padding rows keep their tokens (every rank runs the same work) with labels -100.
    """
    ids, labels, types, positions = [], [], [], []
    for item in items:
        rope = rope_positions(item.mm_token_type_ids, item.image_grid_thw, merge)
        ids.append(item.input_ids)
        labels.append(torch.full_like(item.label_ids, IGNORE_INDEX) if item.is_padding else item.label_ids)
        types.append(item.mm_token_type_ids)
        positions.append(torch.cat([torch.arange(len(item)).unsqueeze(0), rope]))
    batch = {
        "input_ids": torch.cat(ids).unsqueeze(0),
        "labels": torch.cat(labels).unsqueeze(0),
        "mm_token_type_ids": torch.cat(types).unsqueeze(0),
        "position_ids": torch.cat(positions, dim=1).unsqueeze(1),  # (4, 1, T)
    }
    batch["loss_positions"] = loss_positions(batch["labels"])
    batch["loss_pairs"] = loss_pairs(batch["labels"], batch["loss_positions"])
    return batch
