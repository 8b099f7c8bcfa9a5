"""Faster computations of the same results, swapped into a loaded model.

Patch embedding. Qwen-VL embeds each 14 x 14 x 2-frame patch with a Conv3d whose kernel equals its stride and that
has no padding: one output per patch, i.e. a matrix product of the flattened patches with the
flattened kernel. The convolution path (mkldnn on the CPU, cuDNN's 3D kernels on GPUs) is several
times slower for this shape than the matrix product, which is also closer to a float64 reference.
The module keeps its `proj` weight (checkpoints, LoRA, FSDP2 and export see the same parameter).

Vision attention. Qwen2.5-VL's vision tower attends within windows (and, in a few blocks, within
whole images); with sdpa, transformers runs one attention call per window or image, ~90 small calls
per batch of COde-sized checkups and per block. Windows are mostly the same size (only edge windows
differ), so the fast path stacks the windows of each length into one batched sdpa call: the same
attention, a few calls per block. Flash attention already does it in one varlen call and keeps
transformers' forward.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F


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
    changed = 0
    for module in model.modules():
        if type(module).__name__ != "Qwen2_5_VLVisionAttention":
            continue
        if getattr(module.config, "_attn_implementation", None) != "sdpa":
            continue
        module.forward = types.MethodType(_vision_attention_forward, module)
        changed += 1
    return changed


def _vision_attention_forward(self, hidden_states: torch.Tensor, cu_seqlens: torch.Tensor,
                              position_embeddings: tuple[torch.Tensor, torch.Tensor] | None = None,
                              max_seqlen: int | None = None, **kwargs) -> torch.Tensor:
    """Qwen2_5_VLVisionAttention.forward (sdpa) with the windows of each length in one call."""
    from transformers.models.qwen2_5_vl.modeling_qwen2_5_vl import apply_rotary_pos_emb_vision

    seq_length = hidden_states.shape[0]
    query, key, value = self.qkv(hidden_states).reshape(seq_length, 3, self.num_heads, -1).permute(1, 0, 2, 3).unbind(0)
    cos, sin = position_embeddings
    query, key = apply_rotary_pos_emb_vision(query, key, cos, sin)  # each (seq, heads, head_dim)
    dropout = self.attention_dropout if self.training else 0.0
    starts, lengths = cu_seqlens[:-1].tolist(), (cu_seqlens[1:] - cu_seqlens[:-1]).tolist()  # one host copy, as before
    by_length: dict[int, list[int]] = {}
    for start, length in zip(starts, lengths):
        if length:
            by_length.setdefault(length, []).append(start)
    rows, outputs = [], []
    for length, group in by_length.items():
        device = query.device
        index = (torch.tensor(group, device=device)[:, None] + torch.arange(length, device=device)).flatten()
        q, k, v = (t[index].view(len(group), length, self.num_heads, -1).transpose(1, 2) for t in (query, key, value))
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, scale=self.scaling)  # (windows, heads, L, dim)
        outputs.append(out.transpose(1, 2).reshape(len(group) * length, -1))
        rows.append(index)
    order = torch.cat(rows)
    attn_output = torch.empty((seq_length, outputs[0].shape[-1]), dtype=outputs[0].dtype, device=query.device)
    attn_output = attn_output.index_copy(0, order, torch.cat(outputs))  # back to the patches' order
    return self.proj(attn_output)
