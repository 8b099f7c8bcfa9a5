"""FSDP2 sharding plan: the one function that wraps modules with `fully_shard`.

Each decoder layer and each vision block is its own FSDP unit (the classes the model lists in
`_no_split_modules`, so Qwen2-VL, Qwen2.5-VL and Qwen3-VL need no table of ours); so are the vision
tower as a whole (patch embedding, merger) and the input embeddings, because generation calls them
before the model's own forward, where the root unit would gather them; the root takes the rest
(final norm, lm_head). When lm_head shares its weight with the embeddings (Qwen2.5-VL-3B), the two
form one unit, so the shared parameter stays one parameter. Parameters are all-gathered per unit
just before use.

`load_sharded` builds the model for FSDP2 without a full copy per rank: rank 0 loads the weights,
the others build the same model on the meta device, and after sharding rank 0 broadcasts each
rank its shards.
"""

from __future__ import annotations

import contextlib

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
        mesh: The device mesh: 1-D (full sharding) or 2-D (replicate, shard) for hybrid sharding.
        param_dtype: All-gather and compute dtype (e.g. bfloat16); None keeps the stored dtype.
        reduce_dtype: Gradient reduce-scatter dtype.
        reshard_after_forward: Free an inner unit's gathered parameters after its forward (saves
            memory, costs a re-gather in backward). The root keeps FSDP2's own choice: it stays
            gathered from forward to backward (lm_head is needed again at once).
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    # Inner units take their inputs as they come: the root casts the model's floating inputs to the
    # compute dtype once, and casting again at every block would turn the vision tower's fp32 rotary
    # cos/sin (which it applies in fp32 on purpose) into bf16.
    inner = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype, cast_forward_inputs=False)
    root = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    blocks = block_class_names(model)
    units = [m for m in model.modules() if type(m).__name__ in blocks]
    if not units:
        raise ValueError(f"no module of the block classes {sorted(blocks)} found to shard")
    units += [m for m in model.modules() if type(m).__name__ in vision_tower_class_names(model)]
    embeddings, head = model.get_input_embeddings(), model.get_output_embeddings()
    tied = head is not None and head.weight is embeddings.weight
    units.append([embeddings, head] if tied else embeddings)
    for module in units:  # inner units first: an outer unit leaves already-sharded parameters alone
        fully_shard(module, mesh=mesh, mp_policy=inner, reshard_after_forward=reshard_after_forward)
    fully_shard(model, mesh=mesh, mp_policy=root)
    return len(units)


def vision_tower_class_names(model: torch.nn.Module) -> set[str]:
    """Class name of the vision tower, looking through a peft modules_to_save wrapper."""
    from dentvlm.model.build import vision_module_name

    name = vision_module_name(model)
    if name is None:
        return set()
    tower = model.get_submodule(name)
    tower = getattr(tower, "original_module", tower)
    return {type(tower).__name__}


def prepare_for_calls_outside_forward(model: torch.nn.Module) -> None:
    """FSDP2 sets up its units on the root's first forward. Generation may call inner units first
    (transformers encodes the images before the first forward; predict runs no loss forward before
    it), which would set an inner unit up as a root of its own: set up from the root now."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(model, FSDPModule):
        model._get_fsdp_state()._lazy_init()  # idempotent


@contextlib.contextmanager
def gathered_parameters(model: torch.nn.Module, enabled: bool = True):
    """Within the block, every FSDP2 unit of `model` holds its full parameters: one all-gather per
    unit on entry (a collective: every rank must enter), none per forward pass, so ranks may run
    different numbers of forwards (generation); resharded on exit."""
    if not enabled:
        yield
        return
    from torch.distributed.fsdp import FSDPModule

    units = [m for m in model.modules() if isinstance(m, FSDPModule)]
    inner = [unit for unit in units if unit is not model]  # the root is never resharded after forward
    prepare_for_calls_outside_forward(model)
    for unit in units:
        unit.unshard()
    for unit in inner:
        unit.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for unit in inner:
            unit.set_reshard_after_forward(True, recurse=False)  # as `shard_model` set them
        for unit in units:
            unit.reshard()


def load_sharded(load, build_on_meta, prepare, mesh, device: torch.device, **shard_kwargs) -> torch.nn.Module:
    """A model sharded with `shard_model` whose weights were read by rank 0 alone.

    Args:
        load: Returns the model with its weights (called on rank 0 only).
        build_on_meta: Returns the same architecture without weights (called on the other ranks
            under ``torch.device("meta")``).
        prepare: Applied to the model on every rank before sharding (e.g. LoRA wrapping); returns the
            module to shard (the Hugging Face model inside a peft wrapper) and the model to keep.
        mesh: The device mesh (see `shard_model`).
        device: This rank's device.
        **shard_kwargs: Passed to `shard_model`.

    Returns:
        The model from `prepare`, sharded and filled on every rank.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    rank0 = dist.get_rank() == 0
    if rank0:
        kept, network = prepare(load())
        full = network.state_dict()  # holds rank 0's full weights until they are broadcast
    else:
        with torch.device("meta"):
            kept, network = prepare(build_on_meta())
        full = {}
    shard_model(network, mesh, **shard_kwargs)
    if not rank0:
        network.to_empty(device=device)
    set_model_state_dict(network, full, options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
    for buffer in network.buffers():  # non-persistent buffers (rotary frequencies) are not in state dicts
        dist.broadcast(buffer.data, src=0)
    return kept
