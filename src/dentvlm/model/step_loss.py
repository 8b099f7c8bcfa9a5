"""The loss of one optimizer step: token-weighted across micro-batches and ranks, checked for
non-finite losses and gradients, without waiting for the device on every step.

Each micro-batch returns its *summed* token loss. Lightning divides it by the accumulation count,
DDP/FSDP2 average the gradients over ranks; `scale_gradients` then multiplies by
accumulation x ranks / (label tokens of the whole step, all ranks): the gradient of
Σ token losses / Σ tokens, as transformers' `num_items_in_batch` fix gives, so a long answer in one
micro-batch weighs per token what a short one in another does.

Per micro-batch nothing leaves the device. Per optimizer step one all-reduce and one small host copy
(tokens, non-finite losses, loss, non-finite gradients) decide the step. A step with a non-finite loss,
or a finite loss whose gradients are not finite (an overflow in backward), is skipped on every rank
together: its gradients are dropped before clipping or the optimizer could spread NaN into the
weights (clipping divides by a NaN norm; multiplying NaN gradients by zero would not help either).
"""

from __future__ import annotations

import torch

TOKENS, NONFINITE_LOSS, LOSS, NONFINITE_GRAD = range(4)


class StepLoss:
    """Per optimizer step: summed loss, label tokens and non-finite losses of its micro-batches."""

    def __init__(self):
        self.totals = torch.zeros(4, dtype=torch.float64)

    def start(self, device: torch.device) -> None:
        """A new optimizer step begins."""
        self.totals = torch.zeros(4, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        loss = loss.detach().to(torch.float64)
        if self.totals.device != loss.device:  # e.g. resumed inside an accumulation window: no start() yet
            self.totals = self.totals.to(loss.device)
        zero = torch.zeros((), dtype=torch.float64, device=loss.device)
        self.totals = self.totals + torch.stack([tokens.to(torch.float64), (~torch.isfinite(loss)).double(), loss,
                                                 zero])

    def scale_gradients(self, parameters, accumulate: int, ranks: int, check_gradients: bool = True) -> float | None:
        """Rescale the accumulated gradients (see the module docstring) and return the step's
        token-weighted loss, or None when the step must be skipped (its gradients are dropped).

        Args:
            check_gradients: Also skip a step whose gradients are not finite (False under a gradient
                scaler, which skips such fp16 steps itself and lowers its scale).
        """
        params = [p for p in parameters if p.grad is not None]
        if check_gradients and params:
            self.totals[NONFINITE_GRAD] += (~torch.isfinite(_local_norms([p.grad for p in params]))).any().double()
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals)
        tokens, nonfinite_loss, loss, nonfinite_grad = self.totals.tolist()  # the step's one host copy
        if nonfinite_loss or nonfinite_grad:  # the same on every rank, so every rank skips
            for param in params:
                param.grad = None
            return None
        if params:
            torch._foreach_mul_([p.grad for p in params], accumulate * ranks / max(tokens, 1.0))
        return loss / max(tokens, 1.0)

    def reason(self) -> str:
        """Why the last step was skipped (after `scale_gradients` returned None)."""
        return "a non-finite loss" if self.totals[NONFINITE_LOSS] else "non-finite gradients with a finite loss"


def _local_norms(grads: list[torch.Tensor]) -> torch.Tensor:
    """Norms of this rank's part of each gradient (an FSDP2 DTensor's local shard), one multi-tensor op:
    a norm is finite only when every element is (one huge enough to overflow the norm counts as not)."""
    return torch.stack(torch._foreach_norm([g.to_local() if hasattr(g, "to_local") else g for g in grads]))
