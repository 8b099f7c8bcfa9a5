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
from collections.abc import Callable

import torch
import torch.nn.functional as F


def apply_fast_paths(network: torch.nn.Module) -> None:
    """Every fast path, in place: training and inference must compute alike (served answers equal
    `dentvlm test`'s), so both load through here."""
    patch_embedding_as_matmul(network)
    vision_attention_by_length(network)
    lora_as_one_addmm(network)


def replace_forwards(model: torch.nn.Module, matches: Callable[[torch.nn.Module], bool], forward: Callable) -> int:
    """Give each module of `model` that `matches` the method `forward`; returns how many."""
    changed = 0
    for module in model.modules():
        if matches(module):
            module.forward = types.MethodType(forward, module)
            changed += 1
    return changed


def patch_embedding_as_matmul(model: torch.nn.Module) -> int:
    """Compute every patch embedding (a module with a stride == kernel, unpadded Conv3d `proj`, as
    Qwen2-VL/2.5-VL/3-VL have) as a matrix product; returns how many modules were changed."""
    def is_patch_convolution(module: torch.nn.Module) -> bool:
        conv = getattr(module, "proj", None)
        return (isinstance(conv, torch.nn.Conv3d) and type(module).__name__.endswith("PatchEmbed")
                and tuple(conv.kernel_size) == tuple(conv.stride) and not any(conv.padding) and conv.groups == 1)

    return replace_forwards(model, is_patch_convolution, _patch_embed_forward)


def _patch_embed_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
    """(patches, channels x frames x height x width) -> (patches, embed_dim), as the convolution."""
    weight = self.proj.weight  # (embed_dim, channels, frames, height, width)
    out = hidden_states.to(weight.dtype) @ weight.reshape(weight.shape[0], -1).T
    return out if self.proj.bias is None else out + self.proj.bias


def vision_attention_by_length(model: torch.nn.Module) -> int:
    """Batch Qwen2.5-VL's sdpa vision attention by window length (see the module docstring);
    returns how many attention modules were changed."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import Qwen2_5_VLVisionAttention

    return replace_forwards(model, lambda module: isinstance(module, Qwen2_5_VLVisionAttention),
                            _vision_attention_forward)


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


def lora_as_one_addmm(model: torch.nn.Module) -> int:
    """Add each peft LoRA `Linear`'s update with one `addmm` (see the module docstring); returns how
    many layers were changed."""
    try:
        from peft.tuners.lora.layer import Linear as LoraLinear
    except ImportError:  # no peft: no LoRA layers
        return 0
    return replace_forwards(
        model, lambda module: type(module) is LoraLinear and isinstance(module.get_base_layer(), torch.nn.Linear),
        _lora_linear_forward)


def _lora_linear_forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
    """peft's LoRA `Linear.forward` for one active plain adapter, the update added by `addmm`.

    As in peft, the adapter computes in its own dtype (a float32 adapter on a bfloat16 base model,
    as peft loads one, adds its update in float32 and casts the sum back); under autocast, in the
    autocast dtype."""
    adapters = self.active_adapters
    name = adapters[0] if len(adapters) == 1 else None
    if (args or kwargs or self.disable_adapters or self.merged or name not in self.lora_A
            or name in self.lora_variant or self.lora_B[name].bias is not None):
        return type(self).forward(self, x, *args, **kwargs)  # mixed batches, DoRA, several adapters...
    down_weight, up_weight = self.lora_A[name].weight, self.lora_B[name].weight
    if down_weight.dtype != up_weight.dtype and not torch.is_autocast_enabled(x.device.type):
        return type(self).forward(self, x, *args, **kwargs)
    result = self.base_layer(x)
    down = F.linear(self.lora_dropout[name](self._cast_input_dtype(x, down_weight.dtype)), down_weight)
    out = torch.addmm(result.reshape(-1, result.shape[-1]).to(down.dtype), down.reshape(-1, down.shape[-1]),
                      up_weight.T, alpha=self.scaling[name])
    return out.view(result.shape).to(result.dtype)
