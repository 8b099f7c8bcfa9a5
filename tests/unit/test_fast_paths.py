"""The fast paths give transformers' and peft's outputs and gradients: the patch embedding as a matrix
product, the vision attention batched by window length, LoRA updates added by one addmm."""

import pytest
import torch

from dentvlm.model.fast_paths import (
    _window_plan,
    lora_as_one_addmm,
    patch_embedding_as_matmul,
    vision_attention_by_length,
)


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
        torch.testing.assert_close(fast_grads[name], grad, **tolerance, msg=lambda m, name=name: f"{name}: {m}")


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


def lora_model(tiny_model_dir, dropout: float):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForImageTextToText

    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir)
    config = LoraConfig(r=8, lora_alpha=32, lora_dropout=dropout, init_lora_weights=False,  # B != 0: a real update
                        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    return get_peft_model(model, config)


def lora_loss_and_grads(model, ids: torch.Tensor, autocast: bool = False) -> tuple[torch.Tensor, dict]:
    model.zero_grad()
    torch.manual_seed(1)  # the same dropout masks
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        loss = model(input_ids=ids, labels=ids).loss
    loss.backward()
    return loss.detach().float(), {n: p.grad.float() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_lora_as_one_addmm_equals_peft(tiny_model_dir, dropout):
    model = lora_model(tiny_model_dir, dropout).train()
    ids = torch.randint(0, 1000, (3, 40), generator=torch.Generator().manual_seed(0))
    reference, reference_grads = lora_loss_and_grads(model, ids)
    layers = sum(1 for name, _ in model.named_modules() if name.endswith("lora_A"))
    assert layers == 34 and lora_as_one_addmm(model) == layers  # 4 x 7 language, 2 x 3 vision MLP
    fast, fast_grads = lora_loss_and_grads(model, ids)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-6)
    assert fast_grads.keys() == reference_grads.keys() and len(fast_grads) == 2 * 4 * 7  # vision: no grad
    for name, grad in reference_grads.items():
        torch.testing.assert_close(fast_grads[name], grad, rtol=1e-4, atol=1e-6,
                                   msg=lambda m, name=name: f"{name}: {m}")


def count_peft_forwards(monkeypatch) -> list:
    """Calls of peft's own LoRA forward (the fast path's fallback) from now on."""
    from peft.tuners.lora.layer import Linear

    calls, original = [], Linear.forward
    monkeypatch.setattr(Linear, "forward", lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    return calls


@pytest.mark.parametrize("precision", ["autocast", "bf16", "bf16 base, fp32 adapter"])
def test_lora_as_one_addmm_in_bf16_is_as_close_to_fp32_as_peft(tiny_model_dir, precision, monkeypatch):
    """bf16 under autocast (Lightning's bf16-mixed), everything in bf16 (FSDP2's param_dtype,
    bf16-true) and a float32 adapter on a bf16 base model (as peft loads one for inference): the fast
    path runs in each, and, since the two round differently (peft rounds the update, its scaling and
    the sum; addmm rounds once), each is compared with the float32 gradients."""
    model = lora_model(tiny_model_dir, 0.0).train()
    ids = torch.randint(0, 1000, (3, 40), generator=torch.Generator().manual_seed(0))
    exact_loss, exact = lora_loss_and_grads(model, ids)
    if precision != "autocast":
        for name, param in model.named_parameters():
            if precision == "bf16" or "lora_" not in name:
                param.data = param.data.bfloat16()
    autocast = precision == "autocast"
    peft_loss, peft_grads = lora_loss_and_grads(model, ids, autocast)
    lora_as_one_addmm(model)
    peft_calls = count_peft_forwards(monkeypatch)
    fast_loss, fast_grads = lora_loss_and_grads(model, ids, autocast)
    assert peft_calls == []

    def relative_errors(grads: dict) -> torch.Tensor:
        return torch.stack([(grads[n] - g).norm() / g.norm() for n, g in exact.items()])

    peft_errors, fast_errors = relative_errors(peft_grads), relative_errors(fast_grads)
    assert 0 < fast_errors.max() <= 1.1 * peft_errors.max()  # bf16 really ran, and no worse than peft's
    assert fast_errors.median() <= 1.1 * peft_errors.median()
    assert abs(fast_loss - exact_loss) <= 1.1 * abs(peft_loss - exact_loss) + 1e-3


def test_lora_as_one_addmm_keeps_peft_for_disabled_and_merged_adapters(tiny_model_dir, monkeypatch):
    model = lora_model(tiny_model_dir, 0.0).eval()
    ids = torch.randint(0, 1000, (2, 30))
    with torch.no_grad():
        base = model.get_base_model()(input_ids=ids).logits.clone()
        with model.disable_adapter():
            assert not torch.allclose(base, model(input_ids=ids).logits)  # the adapters change the output
        lora_as_one_addmm(model)
        peft_calls = count_peft_forwards(monkeypatch)
        with model.disable_adapter():
            without = model(input_ids=ids).logits
        assert len(peft_calls) == 4 * 7  # the language model's layers (the vision tower did not run)
        with_adapter = model(input_ids=ids).logits
        assert len(peft_calls) == 4 * 7
        model.merge_adapter()
        merged = model(input_ids=ids).logits
        assert len(peft_calls) == 2 * 4 * 7
    torch.testing.assert_close(with_adapter, base, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(merged, base, rtol=1e-4, atol=1e-4)
    assert not torch.allclose(without, base)
