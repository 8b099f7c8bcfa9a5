"""The fast paths give transformers' outputs and gradients: the patch embedding as a matrix product,
and the vision attention batched by window length."""

import pytest
import torch

from dentvlm.model.fast_paths import _window_plan, patch_embedding_as_matmul, vision_attention_by_length


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


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_vision_attention_by_window_length_equals_one_call_per_window(tiny_model_dir, dtype):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa", dtype=dtype)
    visual = model.model.visual
    visual.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    visual.train()  # checkpointing recomputes each block in backward, with the same cu_seqlens
    # COde-sized photos as the 7B recipe's image budget leaves them (1024 x 768 -> 54 x 72 patches,
    # windows of 8 x 8 patches with partial ones at the edges), a smaller one and a radiograph-like one
    grid = torch.tensor([[1, 54, 72], [1, 40, 54], [1, 10, 14], [1, 36, 78]])
    patch_dim = visual.patch_embed.proj.weight[0].numel()
    torch.manual_seed(0)
    pixels = torch.randn(int(grid.prod(-1).sum()), patch_dim, dtype=dtype)

    def run():
        model.zero_grad()
        out = visual(pixels, grid_thw=grid).pooler_output
        (out.float() * torch.linspace(-1, 1, out.numel()).view_as(out)).sum().backward()
        return out.detach(), {n: p.grad.clone() for n, p in visual.named_parameters() if p.grad is not None}

    reference, reference_grads = run()
    assert vision_attention_by_length(model) == len(visual.blocks)
    fast, fast_grads = run()
    tolerance = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(fast, reference, **tolerance)
    assert fast_grads.keys() == reference_grads.keys() and any("attn.qkv" in n for n in fast_grads)
    for name, grad in reference_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, **tolerance, msg=name)


def test_vision_attention_falls_back_to_transformers_for_other_implementations(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="eager")
    visual = model.model.visual
    grid = torch.tensor([[1, 20, 28]])
    pixels = torch.randn(560, visual.patch_embed.proj.weight[0].numel())
    with torch.no_grad():
        reference = visual(pixels, grid_thw=grid).pooler_output
        assert vision_attention_by_length(model) == len(visual.blocks)
        assert torch.equal(visual(pixels, grid_thw=grid).pooler_output, reference)  # eager's own forward


def test_window_plan_refuses_bounds_that_do_not_cover_the_patches():
    with pytest.raises(ValueError, match="do not cover 10 patches"):
        _window_plan(torch.tensor([0, 4, 8]), 10)
    order, groups = _window_plan(torch.tensor([0, 4, 8, 10, 10, 14]), 14)  # an empty window is skipped
    assert order.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13, 8, 9]
    assert [(windows, length, rows.tolist()) for windows, length, rows in groups] == [
        (3, 4, [0, 1, 2, 3, 4, 5, 6, 7, 10, 11, 12, 13]), (1, 2, [8, 9])]
