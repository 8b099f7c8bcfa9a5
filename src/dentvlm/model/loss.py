"""The training loss: summed cross-entropy over answer tokens, computed at answer positions only.

A classification answer is ~10 tokens of a 4,096-token sequence, yet the usual causal-LM loss
projects every position onto the ~152 k-word vocabulary (the 7B recipe's largest memory term). Here
the model keeps only the hidden states of positions that predict a label (`logits_to_keep`), so
`lm_head` and the fp32 cross-entropy see those alone.

The loss is a *sum* with its token count, not a mean: the module divides by the label tokens of the
whole optimizer step (all micro-batches, all ranks), so long and short answers weigh per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dentvlm.data.collate import IGNORE_INDEX, loss_positions


def answer_loss(network: torch.nn.Module, inputs: dict, labels: torch.Tensor,
                positions: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed cross-entropy of `labels` and the number of label tokens.

    Args:
        network: The Hugging Face model (called through its own forward, so FSDP2's root hooks run).
        inputs: Its keyword inputs (`model_inputs`).
        labels: (B, L) targets aligned with ``inputs["input_ids"]``; -100 where there is none.
        positions: `loss_positions(labels)`, when the collator computed it on the CPU already
            (computing it here syncs the device with the host).
    """
    if positions is None:
        positions = loss_positions(labels)
    positions = positions.to(labels.device)
    logits = network(**inputs, logits_to_keep=positions, use_cache=False).logits  # (B, K, V)
    targets = labels[:, positions + 1]  # (B, K): the token each kept position predicts
    loss = F.cross_entropy(logits.flatten(0, 1).float(), targets.flatten(), ignore_index=IGNORE_INDEX,
                           reduction="sum")
    return loss, (targets != IGNORE_INDEX).sum()
