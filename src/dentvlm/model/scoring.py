"""Per-class probabilities from the model itself, by teacher-forced scoring of every answer the task allows.

A classification answer is a label set written as the model was trained to write it: the conditions in
vocabulary order, comma-separated, or the none answer (single-label: one condition name). With K classes
there are 2^K sets (COde's six: 64), few enough to score them all. The model's probability of each set is
the product of its answer tokens' probabilities (the closing ``<|im_end|>`` included, so "caries" and
"caries, gingivitis" differ), normalised over the allowed sets; a class's probability is the summed
probability of the sets that contain it: an exact marginal under the model's own answer format, whose most
probable set is what greedy decoding tends to write. (A per-class "yes or no?" question would ask a
fine-tuned model something it was never trained to answer.)

Cost: the checkup's images and prompt are encoded once (one forward that fills the KV cache); the
candidate answers then follow that prefix as one prefix tree of tokens per checkup (answers that begin
alike share those tokens: 64 answers of up to ~30 tokens make a few hundred nodes), each token attending
to the prompt and its own earlier tokens only (a tree mask, positions counted from the prompt's end), in
forwards sized so the logits stay bounded (only a token that another follows needs its logits).
`benchmarks/class_scoring.py` puts the cost beside generation.
"""

from __future__ import annotations

import functools
import inspect
import itertools
from dataclasses import dataclass

import torch

# Logits computed per forward over answer tokens, in the model's compute dtype (0.5 GiB in bf16, 1 GiB in
# float32); one row's float32 log-normaliser is computed at a time.
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

    @functools.cached_property
    def trie(self) -> AnswerTrie:
        """The answers' prefix tree, built once (a frozen dataclass still has an instance dict to cache in)."""
        return AnswerTrie.of(self)


def check_class_count(classes: int, multi_label: bool) -> None:
    """Refuse a label vocabulary with more answers than `MAX_ANSWER_SETS` allows to enumerate."""
    if multi_label and 2 ** classes > MAX_ANSWER_SETS:
        raise ValueError(f"model.score_classes: {classes} classes make {2 ** classes} multi-label answers to score; "
                         f"up to {MAX_ANSWER_SETS} are scored (use fewer classes, or model.score_classes false)")


def check_attention(attention: str) -> None:
    """Refuse a language-model attention implementation that takes no 4-D mask (flash attention)."""
    if attention not in ("sdpa", "eager"):
        raise ValueError(f"model.score_classes scores class probabilities under sdpa or eager attention for the "
                         f"language model, not {attention!r}: set model.attn_implementation sdpa (the vision "
                         "tower may keep model.vision_attn_implementation flash_attention_2), or model.score_classes "
                         "false")


def answer_sets(classes: tuple[str, ...], multi_label: bool, none_answer: str, tokenizer) -> AnswerSets:
    """The allowed answers of the classification task (see the module docstring).

    Raises:
        ValueError: more classes than `MAX_ANSWER_SETS` allows to enumerate.
    """
    check_class_count(len(classes), multi_label)
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


@dataclass(frozen=True)
class AnswerTrie:
    """The allowed answers as a prefix tree of tokens: answers that begin alike ("malocclusion, ..." is how
    32 of the 64 begin) share their first tokens, so each distinct prefix is computed once. Nodes are in
    depth-first order, so each subtree under the prompt is a contiguous range.

    Attributes:
        tokens: (N,) the token of each node.
        parents: (N,) the parent node, -1 for a node that follows the prompt itself.
        depth: (N,) tokens after the prompt before this node.
        paths: (M, T) the node of each answer's t-th token, -1 past its end.
    """

    tokens: torch.Tensor
    parents: torch.Tensor
    depth: torch.Tensor
    paths: torch.Tensor

    @staticmethod
    def of(sets: AnswerSets) -> AnswerTrie:
        children: dict = {}
        for row in range(len(sets.texts)):
            node = children
            for token in sets.tokens[row, : sets.lengths[row]].tolist():
                node = node.setdefault(token, {})
        tokens, parents, depth, index = [], [], [], {}

        def visit(node: dict, parent: int, level: int, prefix: tuple) -> None:
            for token, below in node.items():
                index[prefix + (token,)] = len(tokens)
                tokens.append(token), parents.append(parent), depth.append(level)
                visit(below, index[prefix + (token,)], level + 1, prefix + (token,))

        visit(children, -1, 0, ())
        paths = torch.full(sets.tokens.shape, -1, dtype=torch.long)
        for row in range(len(sets.texts)):
            answer = tuple(sets.tokens[row, : sets.lengths[row]].tolist())
            paths[row, : len(answer)] = torch.tensor([index[answer[: t + 1]] for t in range(len(answer))])
        return AnswerTrie(torch.tensor(tokens), torch.tensor(parents), torch.tensor(depth), paths)

    def inner(self) -> torch.Tensor:
        """(N,) True for a node that another follows: only these nodes' logits are read (a leaf is an
        answer's end token)."""
        inner = torch.zeros(len(self.tokens), dtype=torch.bool)
        inner[self.parents[self.parents >= 0]] = True
        return inner

    def subtrees(self) -> list[tuple[int, int]]:
        """(first, end) node ranges of the subtrees under the prompt."""
        roots = (self.parents == -1).nonzero().flatten().tolist()
        return list(zip(roots, [*roots[1:], len(self.tokens)]))

    def seen(self, first: int, end: int) -> torch.Tensor:
        """(n, n) True where node i of the range may attend to node j: j is i or one of its ancestors."""
        n = end - first
        seen = torch.eye(n, dtype=torch.bool)
        for i in range(n):
            parent = int(self.parents[first + i])
            if parent >= first:
                seen[i] |= seen[parent - first]
        return seen


def continuation_mask(prefix_mask: torch.Tensor, seen: torch.Tensor, attention: str) -> torch.Tensor:
    """(B, 1, n, P + n) mask: each answer token sees the prompt's real tokens and its own earlier tokens (its
    ancestors in the trie), nothing else. Boolean (True: attend) for sdpa, additive float for eager, which
    adds it to the scores; flash attention takes no such mask.

    Raises:
        ValueError: the language model's attention implementation takes no 4-D mask.
    """
    check_attention(attention)
    batch, prefix = prefix_mask.shape
    n = seen.shape[0]
    allowed = torch.cat([prefix_mask.bool()[:, None, :].expand(batch, n, prefix),
                         seen.to(prefix_mask.device).expand(batch, -1, -1)], dim=2)[:, None]
    if attention == "sdpa":
        return allowed
    return torch.zeros(allowed.shape, device=allowed.device).masked_fill(~allowed, torch.finfo(torch.float32).min)


def text_attention(network: torch.nn.Module) -> str:
    """The language model's attention implementation (a model may give its vision tower another)."""
    config = getattr(network.config, "text_config", None) or network.config
    return getattr(config, "_attn_implementation", None) or "sdpa"


def chunks(trie: AnswerTrie, rows: int, vocabulary: int) -> list[list[tuple[int, int]]]:
    """How the nodes are scored, so that each forward's logits (rows x its inner nodes x vocabulary) stay
    within `CHUNK_LOGITS`: groups of whole, consecutive subtrees, each a list of contiguous pieces scored by
    one forward each. Subtrees are grouped while the budget allows (COde's six classes with Qwen's tokenizer:
    100 inner nodes in all, one group up to evaluation batch 17); a subtree over the budget is a group of its
    own, its pieces each attending to the earlier pieces through the cache. The result depends only on its
    arguments, so every rank runs as many forwards (FSDP2)."""
    budget = max(1, CHUNK_LOGITS // (rows * vocabulary))
    inner = trie.inner().tolist()
    groups: list[list[tuple[int, int]]] = []
    for first, end in trie.subtrees():
        cost = sum(inner[first:end])
        if groups and len(groups[-1]) == 1 and sum(inner[groups[-1][0][0]:end]) <= budget:
            groups[-1] = [(groups[-1][0][0], end)]
        elif cost <= budget:
            groups.append([(first, end)])
        else:
            pieces, begin, taken = [], first, 0
            for node in range(first, end):
                if taken + inner[node] > budget and node > begin:
                    pieces.append((begin, node))
                    begin, taken = node, 0
                taken += inner[node]
            groups.append([*pieces, (begin, end)])
    return groups


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
                    logits_to_keep=1).logits[:, -1].float().log_softmax(-1)  # (B, V)
    trie = sets.trie
    inner = trie.inner()
    tokens = trie.tokens.to(device)
    node_logp = torch.zeros((batch, len(trie.tokens)), device=device)  # log p(node's token | prompt, ancestors)
    roots = (trie.parents == -1).nonzero().flatten()
    node_logp[:, roots.to(device)] = first[:, trie.tokens[roots].to(device)]
    depth = trie.depth.to(device)
    vocabulary = network.get_output_embeddings().weight.shape[0]
    attention, rope = text_attention(network), hasattr(getattr(network, "model", None), "get_rope_index")
    for group in chunks(trie, max_rows or batch, vocabulary):
        first = group[0][0]
        for begin, end in group:
            positions = start[:, None] + depth[None, begin:end]  # (B, n): each token after its ancestors
            if rope:  # text tokens take one position on all three rope axes
                positions = positions.unsqueeze(0).expand(3, -1, -1)
            seen = trie.seen(first, end)[begin - first:]  # this piece's nodes over the group's so far (cached)
            mask = continuation_mask(inputs["attention_mask"], seen, attention)
            ids = tokens[None, begin:end].expand(batch, -1)
            kept = inner[begin:end].nonzero().flatten()  # piece positions whose logits are read (host indices)
            logits = network(input_ids=ids, attention_mask=mask, position_ids=positions, **cached, use_cache=True,
                             logits_to_keep=kept.to(device)).logits  # (B, kept, V): what follows each inner node
            normaliser = torch.stack([row.float().logsumexp(-1) for row in logits])  # (B, kept), a row at a time
            inside = ((trie.parents >= begin) & (trie.parents < end)).nonzero().flatten()  # parent in this piece
            slot = torch.searchsorted(kept, trie.parents[inside] - begin).to(device)  # the parent's row in `kept`
            token = trie.tokens[inside].to(device)
            node_logp[:, inside.to(device)] = logits[:, slot, token].float() - normaliser[:, slot]
        cache.crop(prefix - cache.get_seq_length())  # back to the prompt (a negative count removes tokens)
    paths = trie.paths.to(device)
    chosen = node_logp[:, paths.clamp(min=0)]
    return torch.where(paths >= 0, chosen, torch.zeros((), device=device)).sum(-1)  # (B, M)


def class_probabilities(log_scores: torch.Tensor, sets: AnswerSets) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K) marginal probability of each class, and (B,) the probability mass the model puts on the
    allowed answers at all (a diagnostic: a base model's free-text answers leave it small)."""
    mass = log_scores.logsumexp(-1)
    weights = (log_scores - mass[:, None]).exp()  # (B, M), normalised over the allowed answers
    return weights @ sets.membership.to(weights), mass.exp()
