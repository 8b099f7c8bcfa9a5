"""dentvlm's side of the peer benchmark's timing: a Lightning callback that `dentvlm fit` loads by
class path (``--trainer.callbacks+=peers_clock.StepClock``, with benchmarks/ on PYTHONPATH).

It writes what `benchmarks/peers_runner.py` writes for the peers: per optimizer step the time after
the step, the training samples in the batch, and its real and total token positions.
"""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L

from peers_runner import step_record


class StepClock(L.Callback):
    """Per-step timestamps and batch statistics, written as JSON to `out` when training ends.

    Args:
        out: JSON file to write.
        warmup: Warm-up steps (CPU time is read at their end).
        steps: Training steps (CPU time is read at the last).
    """

    def __init__(self, out: str, warmup: int, steps: int):
        self.out, self.warmup, self.total = Path(out), warmup, steps
        self.steps: list[dict] = []
        self.pending: dict = {}
        self.trainable, self.dtype = 0, ""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        params = [p for p in pl_module.parameters() if p.requires_grad]
        self.trainable = sum(p.numel() for p in params)
        self.dtype = str(params[0].dtype) if params else ""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx: int) -> None:
        # Padding rows (repeats that even out ranks) are wasted positions, not training samples.
        mask, padding = batch["attention_mask"], batch["is_padding"]
        self.pending = {"samples": int((~padding).sum()), "real": int(mask[~padding].sum()),
                        "slots": int(mask.numel()), "padding_rows": int(mask[padding].sum())}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        loss = trainer.callback_metrics.get("train/loss")
        self.pending["loss"] = float(loss) if loss is not None else None
        self.steps.append(step_record(len(self.steps) + 1, self.warmup, self.total, self.pending))

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.out.write_text(json.dumps({"steps": self.steps, "trainable": self.trainable, "dtype": self.dtype}))
