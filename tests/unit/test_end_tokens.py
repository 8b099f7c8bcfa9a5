"""Which tokens end an answer: every end token the tokenizer really has, never its unknown token."""

from tokenizers import Tokenizer, models
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from dentvlm.model.build import resolve_model_path
from dentvlm.model.generation import END_TOKENS, end_token_ids


def test_the_tiny_tokenizer_ends_on_both_end_tokens_and_eos():
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path("tiny"))
    vocabulary = tokenizer.get_vocab()
    assert set(end_token_ids(tokenizer)) == {vocabulary[t] for t in END_TOKENS} | {tokenizer.eos_token_id}


def test_a_missing_end_token_is_not_replaced_by_the_unknown_token():
    words = models.WordLevel({"[UNK]": 0, "<|im_end|>": 1, "a": 2}, unk_token="[UNK]")
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(words), unk_token="[UNK]")
    assert tokenizer.convert_tokens_to_ids("<|endoftext|>") == 0  # what a plain lookup would have kept
    assert end_token_ids(tokenizer) == [1]
