"""dentvlm's generation settings: the same everywhere a model answers (`dentvlm test`, serve, predict,
and every export, so vLLM or plain `generate` on a merged model answer as `dentvlm test` scored)."""

from __future__ import annotations

# Tokens that end an answer in Qwen-style chat templates: the turn end, and the document end that
# Qwen's own checkpoints also stop on.
END_TOKENS = ("<|im_end|>", "<|endoftext|>")


def end_token_ids(tokenizer) -> list[int]:
    """Every end token the tokenizer has: the chat turn end, the document end, and its eos token."""
    # a token the tokenizer lacks converts to None or to its unknown token's id: keep only round trips
    # (cheap, where get_vocab() builds the whole vocabulary on every generate call)
    ids = [i for token, i in zip(END_TOKENS, tokenizer.convert_tokens_to_ids(list(END_TOKENS)))
           if i is not None and tokenizer.convert_ids_to_tokens(i) == token]
    if tokenizer.eos_token_id is not None:
        ids.append(tokenizer.eos_token_id)
    if not ids:
        raise ValueError(f"the tokenizer has none of the end tokens {END_TOKENS} and no eos token: cannot tell "
                         "where an answer ends")
    return list(dict.fromkeys(ids))


def generation_config(max_new_tokens: int, num_beams: int, tokenizer):
    """The complete generation settings: set on the model (and written into exports), so that none of a
    checkpoint's own (e.g. Qwen2.5-VL's repetition_penalty 1.05 and top_k 1) fills in what is left unset."""
    from transformers import GenerationConfig

    ends = end_token_ids(tokenizer)
    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=False, num_beams=num_beams, num_return_sequences=1,
        repetition_penalty=1.0, length_penalty=1.0, no_repeat_ngram_size=0, temperature=1.0, top_k=50, top_p=1.0,
        pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ends[0], eos_token_id=ends,
    )
