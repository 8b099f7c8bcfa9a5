"""Faster computations of the same results, swapped into a loaded model.

Patch embedding. Qwen-VL embeds each 14 x 14 x 2-frame patch with a Conv3d whose kernel equals
its stride and that has no padding: one output per patch, i.e. a matrix product of the flattened
patches with the flattened kernel. The convolution path (mkldnn on the CPU, cuDNN's 3D kernels on GPUs) is several
times slower for this shape than the matrix product, which is also closer to a float64 reference.
The module keeps its `proj` weight (checkpoints, LoRA, FSDP2 and export see the same parameter).

Vision attention. Qwen2.5-VL's vision tower attends within windows (and, in a few blocks, within
whole images); with sdpa, transformers runs one attention call per window or image, ~90 small calls
per batch of COde-sized checkups and per block. Windows are mostly the same size (only edge windows
differ), so the fast path stacks the windows of each length into one batched sdpa call: the same
attention, a few calls per block. Flash attention already does it in one varlen call and keeps
transformers' forward.

Vision plan. Qwen2.5-VL's vision tower computes its patch positions, window order and boundaries
from the image grids at every forward (see `dentvlm.data.vision_plan`); the collator makes them in
the data workers, and the tower takes them from the batch's `vision_plan` when there is one.

LoRA. peft adds a LoRA layer's update as `result + lora_B(lora_A(x)) * scaling`: two passes over the
layer's whole (tokens x out_features) output, each into a fresh tensor, and one more in backward
for the scaling. `torch.addmm(result, down, B.T, alpha=scaling)` does the product, the scaling and
the sum in one kernel, and its backward scales only the rank-sized products. On the tiny model this
is a tenth of a CPU training step (28 LoRA layers); on GPUs it saves memory traffic of the same
size. Adapters stay peft's modules and parameters (checkpoints, export, FSDP2 and merging see no
difference); anything but one plain LoRA adapter on an `nn.Linear` keeps peft's forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


def apply_fast_paths(network: torch.nn.Module) -> None:
    """Every fast path, in place: training and inference must compute alike (served answers equal
    `dentvlm test`'s), so both load through here."""
    patch_embedding_as_matmul(network)
    vision_attention_by_length(network)
    vision_plan_from_batch(network)
    lora_as_one_addmm(network)


def patch_embedding_as_matmul(model: torch.nn.Module) -> int:
    """Compute every patch embedding (a module with a stride == kernel, unpadded Conv3d `proj`, as
    Qwen2-VL/2.5-VL/3-VL have) as a matrix product; returns how many modules were changed."""
    changed = 0
    for module in model.modules():
        conv = getattr(module, "proj", None)
        if not (isinstance(conv, torch.nn.Conv3d) and type(module).__name__.endswith("PatchEmbed")):
            continue
        if tuple(conv.kernel_size) != tuple(conv.stride) or any(conv.padding) or conv.groups != 1:
            continue
        module.forward = types.MethodType(_patch_embed_forward, module)
        changed += 1
    return changed


def _patch_embed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """(patches, channels x frames x height x width) -> (patches, embed_dim), as the convolution."""
    weight = self.proj.weight  # (embed_dim, channels, frames, height, width)
    out = hidden_states.to(weight.dtype) @ weight.reshape(weight.shape[0], -1).T
    return out if self.proj.bias is None else out + self.proj.bias


def vision_attention_by_length(model: torch.nn.Module) -> int:
    """Batch Qwen2.5-VL's sdpa vision attention by window length (see the module docstring);
    returns how many attention modules were changed."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention

    changed = 0
    for module in model.modules():
        if isinstance(module, Qwen2_5_VLVisionAttention):
            module.forward = types.MethodType(_vision_attention_forward, module)
            changed += 1
    return changed


def _window_plan(cu_seqlens: torch.Tensor, seq_length: int) -> tuple[torch.Tensor, list[tuple[int, int, torch.Tensor]]]:
    """(order, groups): per distinct window length, (windows, length, rows), `rows` (windows x
    length) indexing the patches on the device; `order` is every group's rows in turn. Made with one
    host copy of `cu_seqlens` and one copy back, and kept on the tensor: every window block (and its
    recompute in backward) gets the same `cu_seqlens`."""
    plan = getattr(cu_seqlens, "_dentvlm_window_plan", None)
    if plan is not None:
        return plan
    bounds = cu_seqlens.tolist()
    if bounds[0] != 0 or bounds[-1] != seq_length or any(b > e for b, e in zip(bounds, bounds[1:])):
        raise ValueError(f"vision attention: cu_seqlens {bounds[:4]}...{bounds[-1]} do not cover {seq_length} patches")
    starts: dict[int, list[int]] = {}
    for begin, end in zip(bounds, bounds[1:]):
        if end > begin:
            starts.setdefault(end - begin, []).append(begin)
    host = [(torch.tensor(group)[:, None] + torch.arange(length)).flatten() for length, group in starts.items()]
    order = torch.cat(host).to(cu_seqlens.device)  # the one copy to the device
    pieces = order.split([len(h) for h in host])
    groups = [(len(group), length, rows) for (length, group), rows in zip(starts.items(), pieces)]
    cu_seqlens._dentvlm_window_plan = order, groups
    return order, groups


def _vision_attention_forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                              position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                              max_seqlen: int | None = None, **kwargs) -> torch.Tensor:
    """Qwen2_5_VLVisionAttention.forward (sdpa) with the windows of each length in one call."""
    if self.config._attn_implementation != "sdpa":  # flash: one varlen call already; eager: its own
        return type(self).forward(self, hidden_states, cu_seqlens, position_embeddings, max_seqlen, **kwargs)
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    seq_length = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)  # each (seq, heads, head_dim)
    dropout = self.attention_dropout if self.training else 0.0
    order, groups = _window_plan(cu_seqlens, seq_length)
    outputs = []
    for windows, length, rows in groups:
        q, k, v = (t.index_select(0, rows).view(windows, length, self.num_heads, -1).transpose(1, 2)
                   for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scaling)  # (windows, heads, L, dim)
        outputs.append(out.transpose(1, 2).reshape(windows * length, -1))
    attn_output = torch.empty((seq_length, outputs[0].shape[-1]), dtype=outputs[0].dtype, device=query.device)
    attn_output = attn_output.index_copy(0, order, torch.cat(outputs))  # back to the patches' order
    return self.proj(attn_output)


def vision_plan_from_batch(model: torch.nn.Module) -> int:
    """Let Qwen2.5-VL's vision tower take a batch's `vision_plan` keyword (see the module
    docstring); returns how many towers were changed."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VisionTransformerPretrainedModel

    changed = 0
    for module in model.modules():
        if isinstance(module, Qwen2_5_VisionTransformerPretrainedModel):
            module.forward = types.MethodType(_vision_tower_forward, module)
            changed += 1
    return changed


def _vision_tower_forward(self, hidden_states: torch.Tensor, grid_thw: torch.Tensor, vision_plan: dict | None = None,
                          **kwargs):
    """The vision tower's forward, with the precomputed inputs of `vision_plan` (transformers pops
    them from its keyword arguments instead of computing them)."""
    if vision_plan is not None:
        geometry = (self.spatial_merge_size, self.window_size, self.patch_size)
        if tuple(vision_plan["geometry"]) != geometry:  # the data were prepared for another model
            raise ValueError(f"the batch's vision plan was made for (merge, window, patch) "
                             f"{tuple(vision_plan['geometry'])} but the model's vision tower has {geometry}: "
                             "data.processor_path and model.model_path name different models")
        kwargs.update((key, value) for key, value in vision_plan.items() if key != "geometry")
    return type(self).forward(self, hidden_states, grid_thw, **kwargs)


def lora_as_one_addmm(model: torch.nn.Module) -> int:
    """Add each peft LoRA `Linear`'s update with one `addmm` (see the module docstring); returns how
    many layers were changed."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no peft: no LoRA layers
        return 0
    changed = 0
    for module in model.modules():
        if type(module) is LoraLinear and isinstance(module.get_base_layer(), torch.nn.Linear):
            module.forward = types.MethodType(_lora_linear_forward, module)
            changed += 1
    return changed


def _lora_linear_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's LoRA `Linear.forward` for one active plain adapter, the update added by `addmm`."""
    adapters = self.active_adapters
    name = adapters[0] if len(adapters) == 1 else None
    if (args or kwargs or self.disable_adapters or self.merged or name not in self.lora_A
            or name in self.lora_variant or self.lora_B[name].bias is not None):
        return type(self).forward(self, x, *args, **kwargs)  # mixed batches, DoRA, several adapters...
    down_weight, up_weight = self.lora_A[name].weight, self.lora_B[name].weight
    same_dtype = x.dtype == self.base_layer.weight.dtype == down_weight.dtype == up_weight.dtype
    if not (same_dtype or torch.is_autocast_enabled(x.device.type)):  # peft promotes and casts back
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    down = F.linear(self.lora_dropout[name](x), down_weight)
    out = torch.addmm(result.reshape(-1, result.shape[-1]), down.reshape(-1, down.shape[-1]), up_weight.T,
                      alpha=self.scaling[name])
    return out.view(result.shape)
