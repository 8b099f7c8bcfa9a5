"""Batches as a few buffers between the DataLoader workers and the training process.

A worker hands each tensor of a batch to the main process through its own shared-memory segment
and file descriptor: with ~20 small tensors per batch (token ids, labels, positions, masks, the
vision plan, statistics) that costs ~5 ms per batch on the main process, a few percent of a CPU
training step and as many pinned buffers and host-to-device copies on a GPU. `to_wire` packs the
tensors into one flat buffer per dtype; `from_wire` gives back the same batch, its tensors as views
of those buffers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class _Slot:
    """Where one tensor lives in its dtype's buffer."""

    dtype: torch.dtype
    offset: int
    shape: tuple[int, ...]


@dataclass
class WireBatch:
    """A batch whose tensors are packed into `buffers` (one per dtype); `layout` is the batch with
    each tensor replaced by its `_Slot`."""

    buffers: dict[torch.dtype, torch.Tensor]
    layout: Any

    def pin_memory(self) -> WireBatch:
        """Called by the DataLoader's pinning thread (on GPU runs): pins the few buffers."""
        return WireBatch({dtype: buffer.pin_memory() for dtype, buffer in self.buffers.items()}, self.layout)


def to_wire(batch: Any, shared: bool = False) -> WireBatch:
    """Pack every tensor of `batch` (nested in dicts, lists and tuples) into one buffer per dtype;
    `shared` (in a worker) writes the buffers straight into shared memory, where sending them to the
    main process would otherwise copy them (the images: megabytes per batch)."""
    pieces: dict[torch.dtype, list[torch.Tensor]] = {}
    sizes: dict[torch.dtype, int] = {}

    def slot(value: Any) -> Any:
        if not isinstance(value, torch.Tensor):
            return value
        pieces.setdefault(value.dtype, []).append(value.reshape(-1))
        offset = sizes.get(value.dtype, 0)
        sizes[value.dtype] = offset + value.numel()
        return _Slot(value.dtype, offset, tuple(value.shape))

    layout = _map_leaves(batch, slot)
    buffers = {}
    for dtype, parts in pieces.items():
        buffers[dtype] = torch.empty(sizes[dtype], dtype=dtype)
        if shared and sizes[dtype]:
            buffers[dtype].share_memory_()
        torch.cat(parts, out=buffers[dtype])
    return WireBatch(buffers, layout)


def from_wire(wire: WireBatch) -> Any:
    """The batch `to_wire` packed, each tensor a view of its buffer."""

    def restore(value: Any) -> Any:
        if not isinstance(value, _Slot):
            return value
        return wire.buffers[value.dtype][value.offset : value.offset + math.prod(value.shape)].view(value.shape)

    return _map_leaves(wire.layout, restore)


def _map_leaves(value: Any, leaf: Callable[[Any], Any]) -> Any:
    """`value` with `leaf` applied to everything not a dict, list or tuple inside it."""
    if isinstance(value, dict):
        return {key: _map_leaves(item, leaf) for key, item in value.items()}
    if type(value) in (list, tuple):
        return type(value)(_map_leaves(item, leaf) for item in value)
    return leaf(value)
