"""The loss projects one hidden state per label token onto the vocabulary: each row's own answer
positions, not the union of every row's (reports: ~1,600 positions x 152 k words per row at 7B)."""

import pytest
import torch
import torch.nn.functional as F

from dentvlm.data.collate import IGNORE_INDEX, pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.inputs import model_inputs
from dentvlm.model.loss import answer_loss
from tests.conftest import DEMO_SHARDS


@pytest.fixture(scope="module")
def batch(tiny_model_dir):
    """Two reports and three classification answers: answers of very different lengths and places."""
    items = []
    for task, count in (("report", 2), ("classification", 3)):
        dm = DentDataModule(shards=str(DEMO_SHARDS), processor_path=str(tiny_model_dir), num_workers=0, task=task)
        dm.setup()
        items += [e for _, e in zip(range(count), dm.stream("val", task, training=False))]
    return pad_batch(items, pad_id=0, merge=2)


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForImageTextToText

    torch.manual_seed(0)
    return AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa")


def test_loss_equals_full_logits_cross_entropy(batch, model):
    labels = batch["labels"]
    with torch.no_grad():
        loss, tokens = answer_loss(model, model_inputs(batch), labels, batch["loss_positions"], batch["loss_pairs"])
        full = model(**model_inputs(batch), use_cache=False).logits  # (B, L, V): every position
    expected = F.cross_entropy(full[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=IGNORE_INDEX,
                               reduction="sum")
    assert tokens.item() == (labels != IGNORE_INDEX).sum().item()
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-4)


def test_lm_head_sees_one_hidden_state_per_label_token(batch, model):
    seen = []
    handle = model.get_output_embeddings().register_forward_hook(lambda m, args, out: seen.append(out.shape))
    try:
        with torch.no_grad():
            answer_loss(model, model_inputs(batch), batch["labels"], batch["loss_positions"], batch["loss_pairs"])
    finally:
        handle.remove()
    rows, union = batch["labels"].shape[0], len(batch["loss_positions"])
    labelled = (batch["labels"] != IGNORE_INDEX).sum().item()
    assert seen == [torch.Size([1, labelled, model.config.text_config.vocab_size])]
    assert labelled < rows * union / 2  # what the union alone would have projected, at least twice over


def test_the_hook_is_removed_and_pairs_are_computed_when_not_given(batch, model):
    with torch.no_grad():
        given = answer_loss(model, model_inputs(batch), batch["labels"], batch["loss_positions"], batch["loss_pairs"])
        computed = answer_loss(model, model_inputs(batch), batch["labels"])
        logits = model(**model_inputs(batch), logits_to_keep=1).logits
    assert given[0].item() == pytest.approx(computed[0].item()) and given[1] == computed[1]
    assert logits.shape[:2] == (batch["labels"].shape[0], 1)  # no hook left behind on lm_head
