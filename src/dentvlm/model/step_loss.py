"""The loss of one optimizer step: token-weighted across micro-batches and ranks, checked for
non-finite values, without waiting for the device on every step.

Each micro-batch returns its *summed* token loss. Lightning divides it by the accumulation count,
DDP/FSDP2 average the gradients over ranks; `scale_gradients` then multiplies by
accumulation x ranks / (label tokens of the whole step, all ranks): the gradient of
Σ token losses / Σ tokens, as transformers' `num_items_in_batch` fix gives, so a long answer in one
micro-batch weighs per token what a short one in another does.

Everything stays on the device (one all-reduce per step, no host copy). A non-finite loss zeroes
that step's gradients (the weights stay finite) and is recorded; `report` copies the totals to the
host only when asked (every logging interval), and raises on every rank together.
"""

from __future__ import annotations

import torch


class StepLoss:
    """Per optimizer step: summed loss, label tokens and non-finite losses of its micro-batches."""

    def __init__(self):
        self.totals = torch.zeros(3, dtype=torch.float64)  # tokens, non-finite count, loss sum
        self.first_bad_step = torch.full((), -1, dtype=torch.long)

    def start(self, device: torch.device) -> None:
        """A new optimizer step begins."""
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)
        if self.first_bad_step.device != device:
            self.first_bad_step = self.first_bad_step.to(device)

    def add(self, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        loss = loss.detach().to(torch.float64)
        self.totals = self.totals + torch.stack([tokens.to(torch.float64), (~torch.isfinite(loss)).double(), loss])

    def scale_gradients(self, parameters, accumulate: int, ranks: int, step: int) -> None:
        """Rescale the accumulated gradients (see the module docstring); `step` is the optimizer step
        about to be taken (1-based), remembered if its loss was not finite."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals)  # collective, but no host copy
        tokens, nonfinite = self.totals[0], self.totals[1]
        scale = torch.where(nonfinite > 0, 0.0, accumulate * ranks / tokens.clamp(min=1)).float()
        grads = [p.grad for p in parameters if p.grad is not None]
        if grads:
            torch._foreach_mul_(grads, scale)
        bad = (nonfinite > 0) & (self.first_bad_step < 0)
        self.first_bad_step = torch.where(bad, torch.full_like(self.first_bad_step, step), self.first_bad_step)

    def report(self) -> float:
        """The step's token-weighted loss (a host copy); raises when any step since the last report
        had a non-finite loss. Every rank holds the same values, so all raise together."""
        tokens, _, loss = self.totals.tolist()
        bad = int(self.first_bad_step)
        if bad >= 0:
            raise FloatingPointError(
                f"non-finite training loss in the micro-batches of optimizer step {bad} (its gradients were "
                "zeroed); lower model.learning_rate, check the data, or use float32/bf16")
        return loss / max(tokens, 1.0)
