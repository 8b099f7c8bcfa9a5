"""The progress bar of `dentvlm fit` in a terminal: epochs counted from 1, the last validation loss and
headline metric beside the training loss, and the whole run's remaining time; no `v_num` (a logger's
version string, which says nothing during training).

In a log file (not a terminal) `dentvlm.progress.LineProgress` prints plain lines instead.
"""

from __future__ import annotations

import time

from lightning.pytorch.callbacks import RichProgressBar

from dentvlm.progress import clock

# The validation numbers shown on the bar, in order of preference per kind.
VAL_LOSS = ("val/classification/loss", "val/report/loss", "val/chat/loss")
VAL_HEADLINE = (("val/classification/subset_accuracy", "val acc"), ("val/classification/accuracy", "val acc"),
                ("val/report/embedding_similarity", "val sim"))


def remaining(trainer, started: float) -> str | None:
    """h:mm:ss left in the whole fit, from the pace of the optimizer steps so far."""
    total, done = trainer.estimated_stepping_batches, trainer.global_step
    if not done or total == float("inf"):
        return None
    return clock((time.monotonic() - started) / done * max(0, total - done))


class DentProgressBar(RichProgressBar):
    """Lightning's rich progress bar with dentvlm's numbers (see the module docstring)."""

    def __init__(self):
        super().__init__()
        self._fit_started = time.monotonic()

    def on_fit_start(self, trainer, pl_module) -> None:
        self._fit_started = time.monotonic()
        super().on_fit_start(trainer, pl_module)

    @property
    def test_description(self) -> str:
        """Which variant `dentvlm test` is evaluating (fine-tuned, base, ...): it runs several."""
        variant = getattr(self.trainer.lightning_module, "variant", None)
        return f"Testing {variant}" if variant else "Testing"

    def _get_train_description(self, current_epoch: int) -> str:
        total = self.trainer.max_epochs
        return f"Epoch {current_epoch + 1}" + (f"/{total}" if total and total > 0 else "")

    def get_metrics(self, trainer, pl_module) -> dict:
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        if "loss" in items:  # the last optimizer step's, on every rank (see DentVLM.on_before_optimizer_step)
            items["train loss"] = items.pop("loss")
        logged = trainer.callback_metrics
        loss = next((key for key in VAL_LOSS if key in logged), None)
        if loss is not None:
            items["val loss"] = f"{float(logged[loss]):.4g}"
        headline = next(((key, label) for key, label in VAL_HEADLINE if key in logged), None)
        if headline is not None:
            items[headline[1]] = f"{100 * float(logged[headline[0]]):.1f}%"
        if trainer.training:
            left = remaining(trainer, self._fit_started)
            if left:
                items["run ETA"] = left
        return items
