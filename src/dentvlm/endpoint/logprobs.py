"""Class probabilities of an endpoint's answer, estimated from its token log-probabilities.

A local model is teacher-forced on every allowed answer (`dentvlm.model.scoring`, exact). An API only
returns, for each token it generated, that token's log-probability and the top alternatives
(`logprobs: true, top_logprobs: 20`; vLLM and OpenAI give them). From those, for an answer written as
trained (conditions in vocabulary order, comma-separated, or the none answer):

- each *slot* (the answer's start, and after each comma) is a point where the model chose which condition
  to name next; the alternatives at the slot's first token, matched to the condition names they begin,
  give the probability q_slot(c) of naming condition c there (an alternative that begins several names
  is split between them equally);
- multi-label: P(c) = 1 - prod(1 - q_slot(c)) over the slots where c could still come (no later condition
  named before it); single-label: the first slot's q(c), normalised over the conditions.

This is an estimate (the alternatives beyond the top 20 and the paths not taken are unseen), stated as
such in the results; an answer whose slots name nothing recognisable gives None, never zeros.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import exp, prod

SEPARATOR_CHARS = " ,;:\n\t"


@dataclass(frozen=True)
class TokenChoice:
    """One generated token: its text and the top alternatives at its position as (text, log-probability)."""

    text: str
    alternatives: tuple[tuple[str, float], ...]


def slot_tokens(tokens: list[TokenChoice]) -> list[int]:
    """Indices of the tokens that begin an answer slot: the one holding the answer's first character, and
    the one holding the first non-separator character after each comma."""
    starts, position = [], 0
    for token in tokens:
        starts.append(position)
        position += len(token.text)
    text = "".join(token.text for token in tokens)
    slots, want = [], True  # at the start, a slot begins at the first non-separator character
    for index, char in enumerate(text):
        if char == ",":
            want = True
        elif want and char not in SEPARATOR_CHARS:
            holder = max(i for i, start in enumerate(starts) if start <= index)
            if not slots or slots[-1] != holder:
                slots.append(holder)
            want = False
    return slots


def choices(alternatives: tuple[tuple[str, float], ...], names: list[str]) -> dict[str, float]:
    """Probability of beginning each of `names` at a slot, from its alternatives."""
    found = dict.fromkeys(names, 0.0)
    for text, logprob in alternatives:
        start = text.lower().lstrip(SEPARATOR_CHARS)
        if not start:
            continue
        matches = [n for n in names if n.startswith(start) or start.startswith(n)]
        for name in matches:
            found[name] += exp(logprob) / len(matches)
    return found


def estimated_probabilities(tokens: list[TokenChoice], classes: tuple[str, ...], multi_label: bool
                            ) -> dict[str, float] | None:
    """Per class, the estimated probability (see the module docstring), or None without evidence."""
    names = [c.lower() for c in classes]
    slots = slot_tokens(tokens)
    if not slots:
        return None
    if not multi_label:
        first = choices(tokens[slots[0]].alternatives, names)
        total = sum(first.values())
        return {c: first[n] / total for c, n in zip(classes, names)} if total > 0 else None
    misses = {name: [] for name in names}
    chosen = -1  # index of the last condition named so far
    for slot in slots:
        eligible = names[chosen + 1:]
        q = choices(tokens[slot].alternatives, eligible)
        for name in eligible:
            misses[name].append(1 - min(1.0, q[name]))
        named = choices(((tokens[slot].text, 0.0),), eligible)  # what the answer wrote at this slot
        written = [name for name, weight in named.items() if weight > 0]
        if len(written) != 1:
            break  # the none answer, or free text: later slots say nothing about the conditions
        chosen = names.index(written[0])
    if all(not values for values in misses.values()):
        return None
    return {c: 1 - prod(misses[n]) for c, n in zip(classes, names)}
