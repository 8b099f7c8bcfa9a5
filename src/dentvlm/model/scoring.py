"""Per-class probabilities from the model itself, by teacher-forced scoring of every answer the task allows.

A classification answer is a label set written as the model was trained to write it: the conditions in
vocabulary order, comma-separated, or the none answer (single-label: one condition name). With K classes
there are 2^K sets (COde's six: 64), few enough to score them all. The model's probability of each set is
the product of its answer tokens' probabilities (the closing ``<|im_end|>`` included, so "caries" and
"caries, gingivitis" differ), normalised over the allowed sets; a class's probability is the summed
probability of the sets that contain it: an exact marginal under the model's own answer format, whose most
probable set is what greedy decoding tends to write. (A per-class "yes or no?" question would ask a
fine-tuned model something it was never trained to answer.)

Cost: the checkup's images and prompt are encoded once (one forward that fills the KV cache); all the
candidate answers then follow that prefix in one row per checkup, each attending to the prefix and to its
own tokens only (a block-diagonal 4-D mask, positions restarting after the prefix), in chunks sized so the
logits stay bounded. `benchmarks/class_scoring.py` puts the cost beside generation.
"""

from __future__ import annotations

import inspect
import itertools
import math
from dataclasses import dataclass

import torch

# Logits computed per continuation chunk: bounds the memory of scoring at ~1 GiB in float32.
CHUNK_LOGITS = 1 << 28
MAX_ANSWER_SETS = 256  # 2^8: up to 8 classes are scored exactly


@dataclass(frozen=True)
class AnswerSets:
    """Every answer the task allows: its text, its tokens (with the turn's end token) and its labels.

    Attributes:
        texts: Answer texts, e.g. "caries, gingivitis" or "none".
        tokens: (M, T) token ids of each answer + end token, right-padded with `pad_id`.
        lengths: (M,) real tokens of each answer.
        membership: (M, K) 1 where answer m names class k.
    """

    texts: list[str]
    tokens: torch.Tensor
    lengths: torch.Tensor
    membership: torch.Tensor


def answer_sets(classes: tuple[str, ...], multi_label: bool, none_answer: str, tokenizer) -> AnswerSets:
    """The allowed answers of the classification task (see the module docstring).

    Raises:
        ValueError: more classes than `MAX_ANSWER_SETS` allows to enumerate.
    """
    if multi_label and 2 ** len(classes) > MAX_ANSWER_SETS:
        raise ValueError(f"{len(classes)} classes make {2 ** len(classes)} multi-label answers; class probabilities "
                         f"are scored for up to {int(math.log2(MAX_ANSWER_SETS))} classes (model.score_classes: false "
                         "to evaluate without them)")
    if multi_label:
        subsets = [s for size in range(len(classes) + 1) for s in itertools.combinations(range(len(classes)), size)]
    else:
        subsets = [(k,) for k in range(len(classes))]
    texts = [", ".join(classes[k] for k in s) or none_answer for s in subsets]
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    encoded = [tokenizer.encode(text, add_special_tokens=False) + [end] for text in texts]
    longest = max(len(e) for e in encoded)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else end
    tokens = torch.full((len(encoded), longest), pad, dtype=torch.long)
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = torch.tensor(ids)
    membership = torch.zeros((len(subsets), len(classes)))
    for row, subset in enumerate(subsets):
        membership[row, list(subset)] = 1
    return AnswerSets(texts, tokens, torch.tensor([len(e) for e in encoded]), membership)


def prompt_positions(network: torch.nn.Module, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """The positions of the (left-padded) prompts, given explicitly to their forward, and (B,) the position
    of the token after each prompt. Qwen-VL: 3-D rope, whose positions run ahead of the token count after
    images; without images (or another model) the real tokens count from 0 and pads take 0 (left
    to the model, a prompt without images would count its pads too, and its answer would start early)."""
    model = getattr(network, "model", None)
    rope = hasattr(model, "get_rope_index")
    mask = inputs["attention_mask"]
    if rope and "image_grid_thw" in inputs:
        positions, _ = model.get_rope_index(inputs["input_ids"], image_grid_thw=inputs["image_grid_thw"],
                                            attention_mask=mask, mm_token_type_ids=inputs.get("mm_token_type_ids"))
    else:
        positions = (mask.long().cumsum(-1) - 1).clamp(min=0)
        positions = positions.unsqueeze(0).expand(3, -1, -1) if rope else positions
    real = mask.bool().unsqueeze(0) if positions.dim() == 3 else mask.bool()
    following = positions.masked_fill(~real, 0).amax(dim=-1)  # (3, B) or (B,)
    return positions, (following.amax(dim=0) if positions.dim() == 3 else following) + 1


def continuation_mask(prefix_mask: torch.Tensor, candidates: int, length: int, attention: str) -> torch.Tensor:
    """(B, 1, C*T, P + C*T) mask: each candidate's tokens see the prefix's real tokens and the earlier
    tokens of the same candidate, nothing else. Boolean (True: attend) for sdpa, additive float for eager,
    which adds it to the scores; flash attention takes no such mask.

    Raises:
        ValueError: the language model's attention implementation takes no 4-D mask.
    """
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"class probabilities are scored under sdpa or eager attention, not {attention!r}: set "
                         "model.attn_implementation sdpa (model.vision_attn_implementation may stay flash), or "
                         "model.score_classes false")
    batch, prefix = prefix_mask.shape
    block = torch.ones((length, length), dtype=torch.bool, device=prefix_mask.device).tril()
    own = torch.block_diag(*[block] * candidates)  # (C*T, C*T)
    seen = torch.cat([prefix_mask.bool()[:, None, :].expand(batch, candidates * length, prefix),
                      own.expand(batch, -1, -1)], dim=2)[:, None]
    if attention == "sdpa":
        return seen
    return torch.zeros(seen.shape, device=seen.device).masked_fill(~seen, torch.finfo(torch.float32).min)


def text_attention(network: torch.nn.Module) -> str:
    """The language model's attention implementation (a model may give its vision tower another)."""
    config = getattr(network.config, "text_config", None) or network.config
    return getattr(config, "_attn_implementation", None) or "sdpa"


@torch.no_grad()
def score_answers(network: torch.nn.Module, inputs: dict, sets: AnswerSets, max_rows: int | None = None
                  ) -> torch.Tensor:
    """(B, M) log-probability of each allowed answer after each generation prompt in `inputs` (left-padded,
    as `dentvlm.model.inputs.model_inputs(generation=True)` makes them).

    Args:
        max_rows: The most rows a batch may have (the configured evaluation batch size): the chunking depends
            on it, not on this batch's rows, so that every rank runs as many forwards (FSDP2).
    """
    from transformers import DynamicCache

    batch, prefix = inputs["input_ids"].shape
    device = inputs["input_ids"].device
    cache = DynamicCache()
    # transformers renamed past_key_values to cache (5.2x); the GPU image may run an earlier 5.x
    cached = {"cache" if "cache" in inspect.signature(network.forward).parameters else "past_key_values": cache}
    prefix_positions, start = prompt_positions(network, inputs)  # ..., (B,)
    first = network(**inputs, position_ids=prefix_positions, **cached, use_cache=True,
                    logits_to_keep=1).logits[:, -1].float()
    tokens, lengths = sets.tokens.to(device), sets.lengths.to(device)
    scores = first.log_softmax(-1)[:, tokens[:, 0]]  # (B, M): each answer's first token after the prompt
    length, total = tokens.shape[1], tokens.shape[0]
    vocabulary = network.get_output_embeddings().weight.shape[0]
    per_chunk = max(1, CHUNK_LOGITS // ((max_rows or batch) * length * vocabulary))
    attention, rope = text_attention(network), hasattr(getattr(network, "model", None), "get_rope_index")
    for begin in range(0, total, per_chunk):
        chunk = tokens[begin: begin + per_chunk]  # (C, T)
        count = chunk.shape[0]
        ids = chunk.reshape(1, -1).expand(batch, -1)  # (B, C*T): the candidates one after another
        offsets = torch.arange(length, device=device).repeat(count)  # positions restart for each candidate
        positions = start[:, None] + offsets[None]  # (B, C*T)
        if rope:  # text tokens take one position on all three rope axes
            positions = positions.unsqueeze(0).expand(3, -1, -1)
        mask = continuation_mask(inputs["attention_mask"], count, length, attention)
        logits = network(input_ids=ids, attention_mask=mask, position_ids=positions, **cached,
                         use_cache=True).logits.float()  # (B, C*T, V)
        cache.crop(prefix - cache.get_seq_length())  # back to the prompt (a negative count removes tokens)
        logp = logits.view(batch, count, length, -1)[:, :, :-1].log_softmax(-1)  # predicts tokens 1..T-1
        taken = logp.gather(-1, chunk[None, :, 1:, None].expand(batch, -1, -1, 1)).squeeze(-1)  # (B, C, T-1)
        real = torch.arange(1, length, device=device)[None] < lengths[begin: begin + count, None]  # (C, T-1)
        scores[:, begin: begin + count] += (taken * real).sum(-1)
    return scores


def class_probabilities(log_scores: torch.Tensor, sets: AnswerSets) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) marginal probability of each class, and (B,) the probability mass the model puts on the
    allowed answers at all (a diagnostic: a base model's free-text answers leave it small)."""
    mass = log_scores.logsumexp(-1)
    weights = (log_scores - mass[:, None]).exp()  # (B, M), normalised over the allowed answers
    return weights @ sets.membership.to(weights), mass.exp()
