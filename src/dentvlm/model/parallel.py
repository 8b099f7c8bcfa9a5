"""FSDP2 sharding plan: the one function that wraps modules with `fully_shard`.

Each decoder layer and each vision block is its own FSDP unit (the classes the model lists in
`_no_split_modules`, so Qwen2-VL, Qwen2.5-VL and Qwen3-VL need no table of ours); the root takes
the rest (embeddings, lm_head, merger). Parameters are all-gathered per unit just before use.
"""

from __future__ import annotations

import torch


def block_class_names(model: torch.nn.Module) -> set[str]:
    """Class names of the model's repeated blocks (decoder layers, vision blocks)."""
    base = model
    for attribute in ("base_model", "model"):  # peft wrappers keep the HF model one or two levels down
        names = getattr(base, "_no_split_modules", None)
        if names:
            return set(names)
        base = getattr(base, attribute, base)
    names = getattr(base, "_no_split_modules", None)
    if not names:
        raise ValueError(f"{type(model).__name__} does not list its blocks in _no_split_modules; cannot shard")
    return set(names)


def shard_model(
    model: torch.nn.Module,
    mesh,
    param_dtype: torch.dtype | None = None,
    reduce_dtype: torch.dtype | None = torch.float32,
    reshard_after_forward: bool = True,
) -> int:
    """Apply FSDP2 `fully_shard` per block and at the root; returns the number of blocks sharded.

    Args:
        model: The (possibly peft-wrapped) model; sharded in place.
        mesh: A 1-D device mesh of the data-parallel ranks.
        param_dtype: All-gather and compute dtype (e.g. bfloat16); None keeps the stored dtype.
        reduce_dtype: Gradient reduce-scatter dtype.
        reshard_after_forward: Free gathered parameters after forward (saves memory, costs a re-gather).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = block_class_names(model)
    count = 0
    for module in model.modules():
        if type(module).__name__ in blocks:
            fully_shard(module, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
            count += 1
    if count == 0:
        raise ValueError(f"no module of the block classes {sorted(blocks)} found to shard")
    fully_shard(model, mesh=mesh, mp_policy=policy, reshard_after_forward=reshard_after_forward)
    return count
