"""The loss of one optimizer step: token-weighted across micro-batches and ranks, checked for
non-finite values, without waiting for the device on every step.

Each micro-batch returns its *summed* token loss. Lightning divides it by the accumulation count,
DDP/FSDP2 average the gradients over ranks; `scale_gradients` then multiplies by
accumulation x ranks / (label tokens of the whole step, all ranks): the gradient of
Σ token losses / Σ tokens, as transformers' `num_items_in_batch` fix gives, so a long answer in one
micro-batch weighs per token what a short one in another does.

Per micro-batch nothing leaves the device. Per optimizer step one all-reduce and one small host copy
(tokens, non-finite count, loss) decide the step: a non-finite loss drops the step's gradients and
raises on every rank together, before the optimizer (or clipping) could spread NaN into the weights
(multiplying NaN gradients by zero would not: NaN x 0 is NaN). With gradient accumulation that copy
comes once per `accumulate_grad_batches` micro-batches.
"""

from __future__ import annotations

import torch


class StepLoss:
    """Per optimizer step: summed loss, label tokens and non-finite losses of its micro-batches."""

    def __init__(self):
        self.totals = torch.zeros(3, dtype=torch.float64)  # tokens, non-finite count, loss sum

    def start(self, device: torch.device) -> None:
        """A new optimizer step begins."""
        self.totals = torch.zeros(3, dtype=torch.float64, device=device)

    def add(self, loss: torch.Tensor, tokens: torch.Tensor) -> None:
        loss = loss.detach().to(torch.float64)
        self.totals = self.totals + torch.stack([tokens.to(torch.float64), (~torch.isfinite(loss)).double(), loss])

    def scale_gradients(self, parameters, accumulate: int, ranks: int, step: int) -> float:
        """Rescale the accumulated gradients (see the module docstring) and return the step's
        token-weighted loss; `step` (the optimizer step about to be taken, 1-based) names a
        non-finite one in the error."""
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.all_reduce(self.totals)
        tokens, nonfinite, loss = self.totals.tolist()  # the step's one host copy
        params = [p for p in parameters if p.grad is not None]
        if nonfinite:  # the same on every rank, so every rank raises
            for param in params:
                param.grad = None
            raise FloatingPointError(
                f"non-finite training loss in the micro-batches of optimizer step {step} (the step was not "
                "taken); lower model.learning_rate, check the data, or use float32/bf16")
        if params:
            torch._foreach_mul_([p.grad for p in params], accumulate * ranks / max(tokens, 1.0))
        return loss / max(tokens, 1.0)
