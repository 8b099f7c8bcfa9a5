"""Padding-free packing: per-sample rope positions as transformers computes them, and a packed row
that trains exactly like the same samples padded (loss and every gradient)."""

import pytest
import torch

from dentvlm.data.collate import batch_extras, pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.packing import pack_batch, rope_positions
from dentvlm.model.inputs import model_inputs
from dentvlm.model.loss import answer_loss
from tests.conftest import DEMO_SHARDS


@pytest.fixture(scope="module")
def items(tiny_model_dir):
    """Demo training examples with 1-8 images of different sizes, a report (long answer) among them."""
    out = []
    for task, count in (("classification", 5), ("report", 2)):
        dm = DentDataModule(shards=str(DEMO_SHARDS), processor_path=str(tiny_model_dir), num_workers=0, task=task)
        dm.setup()
        out += [e for _, e in zip(range(count), dm.stream("train", task, training=True))]
    return out


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa")


def test_padded_batches_carry_the_positions_transformers_would_compute(items, model):
    """The collator computes the 3D rope positions (no host sync in the model's forward): the loss is
    the one transformers gets computing them itself."""
    with_positions = pad_batch(items, pad_id=0, merge=2)
    without = {k: v for k, v in with_positions.items() if k != "position_ids"}
    assert with_positions["position_ids"].shape == (3, *with_positions["input_ids"].shape)
    with torch.no_grad():
        ours = answer_loss(model, model_inputs(with_positions), with_positions["labels"])[0]
        theirs = answer_loss(model, model_inputs(without), without["labels"])[0]
    assert ours.item() == pytest.approx(theirs.item(), rel=1e-6)


def test_right_padded_rows_need_no_attention_mask(items, model):
    """Causal attention never lets a real token see the pads after it: the mask-free forward (what
    dentvlm trains with) gives the masked forward's loss and gradients."""
    batch = pad_batch(items, pad_id=0, merge=2)
    masked = dict(model_inputs(batch), attention_mask=batch["attention_mask"])
    assert "attention_mask" not in model_inputs(batch) and (batch["attention_mask"] == 0).any()
    results = []
    for inputs in (model_inputs(batch), masked):
        model.zero_grad()
        loss, tokens = answer_loss(model, inputs, batch["labels"], batch["loss_positions"])
        (loss / tokens).backward()
        results.append((loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}))
    (loss_free, grads_free), (loss_masked, grads_masked) = results
    assert loss_free == pytest.approx(loss_masked, rel=1e-5)
    for name, grad in grads_masked.items():
        torch.testing.assert_close(grads_free[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_rope_positions_are_transformers(items, model):
    assert len({0 if e.image_grid_thw is None else len(e.image_grid_thw) for e in items}) > 2
    for item in items:
        expected, _ = model.model.get_rope_index(item.input_ids[None], item.mm_token_type_ids[None],
                                                 image_grid_thw=item.image_grid_thw)
        assert torch.equal(rope_positions(item.mm_token_type_ids, item.image_grid_thw, 2), expected[:, 0])


def gradients(model, batch) -> tuple[float, dict]:
    model.zero_grad()
    loss, tokens = answer_loss(model, model_inputs(batch), batch["labels"], batch["loss_positions"])
    (loss / tokens).backward()
    return loss.item(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_a_packed_row_trains_like_the_padded_batch(items, model, attention):
    model.set_attn_implementation(attention)
    padded = pad_batch(items, pad_id=0)
    packed = {**batch_extras(items), **pack_batch(items, merge=2)}
    assert packed["input_ids"].shape == (1, sum(len(e) for e in items)) and "attention_mask" not in packed
    assert (padded["attention_mask"] == 0).sum() > 100  # the padded batch really pads
    loss_padded, grads_padded = gradients(model, padded)
    loss_packed, grads_packed = gradients(model, packed)
    assert loss_packed == pytest.approx(loss_padded, rel=1e-5)
    assert grads_packed.keys() == grads_padded.keys() and len(grads_padded) > 50
    for name, grad in grads_padded.items():
        torch.testing.assert_close(grads_packed[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_without_per_sample_positions_the_samples_would_see_each_other(items, model):
    """The check above can fail: positions that run on across samples (no restart) let every sample
    attend to the ones before it, and its answer logits change far beyond the tolerance above."""
    model.set_attn_implementation("sdpa")
    packed = {**batch_extras(items), **pack_batch(items, merge=2)}
    run_on = dict(packed, position_ids=torch.arange(packed["input_ids"].shape[1]).expand(4, 1, -1))
    with torch.no_grad():
        right, wrong = (model(**model_inputs(batch), logits_to_keep=packed["loss_positions"]).logits
                        for batch in (packed, run_on))
    assert (right - wrong).abs().max() > 1e-2


def test_loss_at_answer_positions_equals_the_full_logits_loss(items, model):
    """dentvlm projects only the positions that predict an answer token onto the vocabulary; the loss
    and every gradient equal transformers' own loss over full logits."""
    model.set_attn_implementation("sdpa")
    batch = pad_batch(items, pad_id=0)
    inputs = model_inputs(batch)
    model.zero_grad()
    loss, tokens = answer_loss(model, inputs, batch["labels"], batch["loss_positions"])
    classification = pad_batch(items[:5], pad_id=0)  # short answers: a few positions of each row
    assert len(classification["loss_positions"]) < classification["input_ids"].shape[1] // 10
    (loss / tokens).backward()
    ours = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    full = model(**inputs, labels=batch["labels"])  # logits at every position, mean over label tokens
    full.loss.backward()
    assert (loss / tokens).item() == pytest.approx(full.loss.item(), rel=1e-5)
    for name, grad in ours.items():
        torch.testing.assert_close(grad, model.get_parameter(name).grad, rtol=1e-4, atol=1e-6, msg=name)
