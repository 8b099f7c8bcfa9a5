"""The patch embedding computed as a matrix product gives the convolution's output and gradients."""

import torch

from dentvlm.model.fast_paths import patch_embedding_as_matmul


def test_patch_embedding_as_matmul_equals_the_convolution(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    embed = model.model.visual.patch_embed
    torch.manual_seed(0)
    patches = torch.randn(300, embed.proj.weight[0].numel(), dtype=torch.float64)
    reference = torch.nn.functional.conv3d(
        patches.view(-1, *embed.proj.weight.shape[1:]), embed.proj.weight.double(), stride=embed.proj.stride
    ).view(300, -1)
    conv = embed(patches.float())
    conv.sum().backward()
    conv_grad = embed.proj.weight.grad.clone()
    embed.proj.weight.grad = None

    assert patch_embedding_as_matmul(model) == 1
    fast = embed(patches.float())
    fast.sum().backward()
    torch.testing.assert_close(fast, conv, rtol=1e-5, atol=1e-5)
    assert (fast.double() - reference).abs().max() <= (conv.double() - reference).abs().max()  # if anything, closer
    torch.testing.assert_close(embed.proj.weight.grad, conv_grad, rtol=1e-5, atol=1e-5)
