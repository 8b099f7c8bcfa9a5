"""Faster computations of the same results, swapped into a loaded model.

Qwen-VL embeds each 14 x 14 x 2-frame patch with a Conv3d whose kernel equals its stride and that
has no padding: one output per patch, i.e. a matrix product of the flattened patches with the
flattened kernel. The convolution path (mkldnn on the CPU, cuDNN's 3D kernels on GPUs) is several
times slower for this shape than the matrix product, which is also closer to a float64 reference.
The module keeps its `proj` weight (checkpoints, LoRA, FSDP2 and export see the same parameter).
"""

from __future__ import annotations

import types

import torch


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
