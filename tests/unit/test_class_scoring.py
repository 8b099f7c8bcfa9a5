"""Class probabilities by teacher-forced scoring of every allowed answer: the cached, block-masked scoring
gives the log-probability that scoring each answer in a forward of its own gives, the marginals are sums
over answer sets, and the most probable answer is what greedy decoding writes."""

import pytest
import torch

from dentvlm.data.collate import pad_batch
from dentvlm.data.datamodule import DentDataModule
from dentvlm.labels import LabelParser
from dentvlm.model.generation import generation_config
from dentvlm.model.inputs import PixelNormalizer, model_inputs
from dentvlm.model.scoring import answer_sets, class_probabilities, score_answers
from tests.conftest import DEMO_SHARDS


@pytest.fixture(scope="module")
def setup(tiny_model_dir):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_pretrained(tiny_model_dir, attn_implementation="sdpa").eval()
    processor = AutoProcessor.from_pretrained(tiny_model_dir)
    dm = DentDataModule(shards=str(DEMO_SHARDS), processor_path=str(tiny_model_dir), num_workers=0)
    dm.setup()
    items = [e for _, e in zip(range(3), dm.stream("test", "classification", training=False))]
    batch = pad_batch(items, dm.encoder.pad_id)
    inputs = model_inputs(batch, generation=True, pixels=PixelNormalizer(processor.image_processor))
    return model, processor, dm, inputs


def row_images(model, inputs, row):
    """The slice of images (and of their patches) that belong to batch row `row`: rows own consecutive
    images, and an image takes prod(grid) / merge^2 placeholder tokens."""
    grids = inputs["image_grid_thw"]
    merge = model.config.vision_config.spatial_merge_size ** 2
    tokens = (inputs["input_ids"] == model.config.image_token_id).sum(-1).tolist()
    per_image = [int(g.prod()) // merge for g in grids]
    bounds, seen = [0], 0
    for count in per_image:
        seen += count
        bounds.append(seen)
    first, last = bounds.index(sum(tokens[:row])), bounds.index(sum(tokens[: row + 1]))
    patches = [int(g.prod()) for g in grids]
    return slice(first, last), slice(sum(patches[:first]), sum(patches[:last]))


def brute_force(model, inputs, sets, row, answer):
    """The answer's log-probability from one forward over this prompt + this answer, no cache."""
    prompt = inputs["attention_mask"][row].bool()
    length = int(sets.lengths[answer])
    ids = torch.cat([inputs["input_ids"][row][prompt], sets.tokens[answer, :length]])
    types = torch.cat([inputs["mm_token_type_ids"][row][prompt], torch.zeros(length, dtype=torch.long)])
    images, patches = row_images(model, inputs, row)
    with torch.no_grad():
        logits = model(input_ids=ids[None], mm_token_type_ids=types[None], pixel_values=inputs["pixel_values"][patches],
                       image_grid_thw=inputs["image_grid_thw"][images]).logits[0].float()
    positions = torch.arange(len(ids) - length - 1, len(ids) - 1)
    return logits.log_softmax(-1)[positions, ids[-length:]].sum().item()


@pytest.mark.parametrize("multi_label", [True, False])
def test_cached_scoring_equals_one_forward_per_answer(setup, multi_label):
    model, processor, dm, inputs = setup
    sets = answer_sets(dm.classes, multi_label, "none", processor.tokenizer)
    assert len(sets.texts) == (64 if multi_label else 6)
    scores = score_answers(model, inputs, sets)
    for row in range(scores.shape[0]):
        for answer in (0, 1, len(sets.texts) - 1, len(sets.texts) // 2):
            expected = brute_force(model, inputs, sets, row, answer)
            assert scores[row, answer].item() == pytest.approx(expected, abs=2e-3), (row, sets.texts[answer])


def test_small_chunks_give_the_same_scores(setup, monkeypatch):
    import dentvlm.model.scoring as scoring

    model, processor, dm, inputs = setup
    sets = answer_sets(dm.classes, True, "none", processor.tokenizer)
    whole = score_answers(model, inputs, sets)
    monkeypatch.setattr(scoring, "CHUNK_LOGITS", 1)  # one inner node per forward: subtrees split into pieces
    groups = scoring.chunks(sets.trie, 3, model.config.text_config.vocab_size)
    assert max(len(group) for group in groups) > 10
    torch.testing.assert_close(score_answers(model, inputs, sets), whole, rtol=1e-4, atol=1e-4)


def test_chunks_cover_every_node_once_and_keep_each_forward_within_the_budget():
    import dentvlm.model.scoring as scoring

    sets = answer_sets(tuple("abcdefgh"), True, "none", FakeTokenizer())
    trie, inner = sets.trie, sets.trie.inner().tolist()
    for budget in (1, 7, 40, 10_000):
        groups = scoring.chunks(trie, 1, scoring.CHUNK_LOGITS // budget)
        pieces = [piece for group in groups for piece in group]
        assert [n for begin, end in pieces for n in range(begin, end)] == list(range(len(trie.tokens)))
        assert all(sum(inner[begin:end]) <= budget or end - begin == 1 for begin, end in pieces)
        for group in groups:  # a group is whole subtrees: no node's parent lies in an earlier group
            first, end = group[0][0], group[-1][1]
            assert all(trie.parents[n] == -1 or trie.parents[n] >= first for n in range(first, end))
    assert len(scoring.chunks(trie, 1, scoring.CHUNK_LOGITS // 10_000)) == 1


def test_marginals_sum_the_sets_that_hold_each_class():
    sets = answer_sets(("a", "b"), True, "none", FakeTokenizer())
    assert sets.texts == ["none", "a", "b", "a, b"]
    log_scores = torch.log(torch.tensor([[0.1, 0.2, 0.3, 0.4], [1.0, 1.0, 1.0, 1.0]]) * 0.5)
    probabilities, mass = class_probabilities(log_scores, sets)
    torch.testing.assert_close(probabilities, torch.tensor([[0.6, 0.7], [0.5, 0.5]]))
    torch.testing.assert_close(mass, torch.tensor([0.5, 2.0]))


def test_too_many_classes_for_exact_scoring_is_refused():
    with pytest.raises(ValueError, match="9 classes make 512 multi-label answers"):
        answer_sets(tuple("abcdefghi"), True, "none", FakeTokenizer())


def test_the_most_probable_answer_is_what_greedy_decoding_writes(setup):
    model, processor, dm, inputs = setup
    sets = answer_sets(dm.classes, True, "none", processor.tokenizer)
    scores = score_answers(model, inputs, sets)
    model.generation_config = generation_config(16, 1, processor.tokenizer)
    with torch.no_grad():
        output = model.generate(**inputs)
    answers = processor.tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    best = [sets.texts[i] for i in scores.argmax(-1).tolist()]
    for text, generated in zip(best, answers):
        if LabelParser(dm.classes).parse(generated.strip()) is not None and generated.strip() in sets.texts:
            assert text == generated.strip()  # greedy wrote an allowed answer: it is the most probable one


class FakeTokenizer:
    pad_token_id = 0

    def convert_tokens_to_ids(self, token):
        return 1

    def encode(self, text, add_special_tokens=False):
        return [2 + ord(c) % 50 for c in text]


def test_text_only_prompts_with_left_padding_score_as_alone(setup):
    """Without images the padded rows' positions must not count their pads (the answer would start early):
    each row scores as it does alone in a batch of its own."""
    from dentvlm.data.tasks import Example

    model, processor, dm, _ = setup
    texts = ["Which conditions?", "A much longer question about the gums, the teeth and the bite: which conditions?"]
    items = []
    for text in texts:
        example = Example(key="k", task="classification", images=[], target="none", messages=[
            {"role": "user", "content": [{"type": "text", "text": text}]},
            {"role": "assistant", "content": [{"type": "text", "text": "none"}]}])
        items.append(dm.encoder.encode(example, training=False))
    sets = answer_sets(dm.classes, True, "none", processor.tokenizer)
    together = score_answers(model, model_inputs(pad_batch(items, dm.encoder.pad_id), generation=True), sets)
    for row, item in enumerate(items):
        alone = score_answers(model, model_inputs(pad_batch([item], dm.encoder.pad_id), generation=True), sets)
        torch.testing.assert_close(together[row], alone[0], rtol=1e-4, atol=2e-4)


def test_the_answer_trie_shares_prefixes_and_rebuilds_every_answer(setup):
    from dentvlm.model.scoring import AnswerTrie

    _, processor, dm, _ = setup
    sets = answer_sets(dm.classes, True, "none", processor.tokenizer)
    trie = AnswerTrie.of(sets)
    assert len(trie.tokens) < int(sets.lengths.sum()) / 2  # shared prefixes: far fewer tokens to compute
    for row in range(len(sets.texts)):
        path = trie.paths[row, : sets.lengths[row]]
        torch.testing.assert_close(trie.tokens[path], sets.tokens[row, : sets.lengths[row]])
        assert trie.parents[path[0]] == -1 and all(trie.parents[path[1:]] == path[:-1])
    seen = trie.seen(0, len(trie.tokens))
    assert all(seen[i, i] for i in range(len(trie.tokens)))
    assert all(seen[i, trie.parents[i]] for i in range(len(trie.tokens)) if trie.parents[i] >= 0)
