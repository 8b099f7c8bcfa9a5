"""The training loss: summed cross-entropy over answer tokens, computed at answer positions only.

A classification answer is ~10 tokens of a 4,096-token sequence, yet the usual causal-LM loss
projects every position onto the ~152 k-word vocabulary (the 7B recipe's largest memory term). Here
the model keeps only the hidden states of positions that predict a label in some row
(`logits_to_keep`), and a pre-hook on `lm_head` keeps, of those, each row's own (`loss_pairs`), so
`lm_head` and the fp32 cross-entropy see exactly one hidden state per label token.

The loss is a *sum* with its token count, not a mean: the module divides by the label tokens of the
whole optimizer step (all micro-batches, all ranks), so long and short answers weigh per token.
"""

from __future__ import annotations

import contextlib

import torch
import torch.nn.functional as F

from dentvlm.data.collate import loss_pairs, loss_positions


def answer_loss(network: torch.nn.Module, inputs: dict, labels: torch.Tensor,
                positions: torch.Tensor | None = None, pairs: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of `labels` and the number of label tokens.

    Args:
        network: The Hugging Face model (called through its own forward, so FSDP2's root hooks run).
        inputs: Its keyword inputs (`model_inputs`).
        labels: (B, L) targets aligned with ``inputs["input_ids"]``; -100 where there is none.
        positions: `loss_positions(labels)`, and `pairs`: `loss_pairs(labels, positions)`, when the
            collator computed them on the CPU already (computing them here syncs the device with the host).
    """
    if positions is None:
        positions = loss_positions(labels)
    if pairs is None:
        pairs = loss_pairs(labels, positions.to(labels.device))
    positions, pairs = positions.to(labels.device), pairs.to(labels.device)
    targets = labels[:, positions + 1].flatten().index_select(0, pairs)  # (N,) the token each kept pair predicts
    with own_positions_only(network.get_output_embeddings(), pairs):
        logits = network(**inputs, logits_to_keep=positions, use_cache=False).logits  # (1, N, V)
    loss = F.cross_entropy(logits[0].float(), targets, reduction="sum")
    return loss, pairs.new_full((), pairs.numel())  # a fill on the device: no host-to-device copy to wait for


@contextlib.contextmanager
def own_positions_only(head: torch.nn.Module, pairs: torch.Tensor):
    """While active, `head` (lm_head) projects only the `pairs` of the (B, K, H) hidden states it is
    given, as one (1, N, H) row: it still runs inside the model's forward (FSDP2 gathers its weight
    there), but on one hidden state per label token."""

    def keep_pairs(module, args):
        hidden = args[0]  # (B, K, H)
        return (hidden.flatten(0, 1).index_select(0, pairs).unsqueeze(0), *args[1:])  # (1, N, H)

    handle = head.register_forward_pre_hook(keep_pairs)
    try:
        yield
    finally:
        handle.remove()
