"""The fast paths give transformers' outputs and gradients: the patch embedding as a matrix product,
and the vision attention batched by window length."""

import torch

from dentvlm.model.fast_paths import patch_embedding_as_matmul, vision_attention_by_length


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


def test_vision_attention_by_window_length_equals_one_call_per_window(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    visual = model.model.visual
    # COde-sized photos as the 7B recipe's image budget leaves them (1024 x 768 -> 54 x 72 patches,
    # windows of 8 x 8 patches with partial ones at the edges), a smaller one and a radiograph-like one
    grid = torch.tensor([[1, 54, 72], [1, 40, 54], [1, 10, 14], [1, 36, 78]])
    patch_dim = visual.patch_embed.proj.weight[0].numel()
    torch.manual_seed(0)
    pixels = torch.randn(int(grid.prod(-1).sum()), patch_dim)

    def run():
        model.zero_grad()
        out = visual(pixels, grid_thw=grid).pooler_output
        (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in visual.named_parameters() if p.grad is not None}

    reference, reference_grads = run()
    assert vision_attention_by_length(model) == len(visual.blocks)
    fast, fast_grads = run()
    torch.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert fast_grads.keys() == reference_grads.keys() and any("attn.qkv" in n for n in fast_grads)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-5, msg=name)


def test_vision_attention_keeps_transformers_forward_for_other_implementations(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert vision_attention_by_length(model) == 0
