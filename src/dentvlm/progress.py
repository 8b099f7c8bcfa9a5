"""Plain progress lines for runs whose output is not a terminal (a job scheduler, ``nohup``, a log file).

A progress bar redraws one line with carriage returns; written to a file it shows nothing useful (and,
block-buffered, often nothing at all until the end). There, this callback turns the bar off and prints
a flushed line every `every_n_steps` training steps, one per epoch with its metrics, and the same for
standalone validation, test and predict runs.
"""

from __future__ import annotations

import math
import sys
import time

import lightning as L
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.trainer.states import TrainerFn

MODES = ("auto", "bar", "lines")


class LineProgress(L.Callback):
    """Progress as plain lines when stdout is not a terminal.

    Args:
        mode: auto (lines when stdout is not a terminal, else the progress bar), bar, or lines.
        every_n_steps: A line every this many training steps / evaluation batches (default: the
            trainer's log_every_n_steps).
    """

    def __init__(self, mode: str = "auto", every_n_steps: int | None = None):
        if mode not in MODES:
            raise ValueError(f"progress.mode must be one of {MODES}, got {mode!r}")
        if every_n_steps is not None and every_n_steps < 1:
            raise ValueError(f"progress.every_n_steps must be >= 1, got {every_n_steps}")
        self.mode, self.every_n_steps = mode, every_n_steps
        self.active = False
        self._start = self._epoch_start = 0.0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self.active = self.mode == "lines" or (self.mode == "auto" and not is_terminal(sys.stdout))
        if self.active:
            for callback in trainer.callbacks:
                if isinstance(callback, ProgressBar):
                    callback.disable()
        self._start = time.monotonic()

    def _every(self, trainer: L.Trainer) -> int:
        return self.every_n_steps or max(1, trainer.log_every_n_steps)

    def _print(self, trainer: L.Trainer, text: str) -> None:
        if self.active and trainer.is_global_zero:
            print(f"[{clock(time.monotonic() - self._start)}] {text}", flush=True)

    # ----- training ------------------------------------------------------------------------------
    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._epoch_start = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        done = batch_idx + 1
        if done % self._every(trainer) and done != trainer.num_training_batches:
            return
        rate = done / max(1e-9, time.monotonic() - self._epoch_start)
        loss = _metrics(trainer, ("loss",), per_step=True)  # the last optimizer step's loss (all ranks)
        self._print(trainer, f"epoch {trainer.current_epoch + 1}/{_total(trainer.max_epochs)} batch {done}/"
                             f"{_total(trainer.num_training_batches)} step {trainer.global_step}"
                             f"{loss} ({rate:.2f} batches/s)")

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        seconds = time.monotonic() - self._epoch_start
        self._print(trainer, f"epoch {trainer.current_epoch + 1}/{_total(trainer.max_epochs)} done in {seconds:.1f} s"
                             f"{_metrics(trainer, ('train/', 'val/'))}")

    # ----- standalone evaluation -----------------------------------------------------------------
    def _eval_batch(self, trainer, stage: str, batch_idx: int, dataloader_idx: int, totals) -> None:
        done = batch_idx + 1
        total = totals[dataloader_idx] if isinstance(totals, list) and dataloader_idx < len(totals) else None
        if done % self._every(trainer) == 0 or done == total:
            self._print(trainer, f"{stage} dataloader {dataloader_idx} batch {done}/{_total(total)}")

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:  # during fit, the epoch line reports
            self._eval_batch(trainer, "validate", batch_idx, dataloader_idx, trainer.num_val_batches)

    def on_test_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch(trainer, "test", batch_idx, dataloader_idx, trainer.num_test_batches)

    def on_predict_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        self._eval_batch(trainer, "predict", batch_idx, dataloader_idx, trainer.num_predict_batches)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.state.fn == TrainerFn.VALIDATING:
            self._print(trainer, f"validate done{_metrics(trainer, ('val/',))}")

    def on_test_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._print(trainer, f"test done{_metrics(trainer, ('test/',))}")


def is_terminal(stream) -> bool:
    """Whether `stream` is a terminal (False for files, pipes and closed or replaced streams)."""
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def clock(seconds: float) -> str:
    """h:mm:ss of `seconds`; "?" for NaN (no rate to estimate from yet)."""
    if seconds != seconds:
        return "?"
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes // 60:d}:{minutes % 60:02d}:{seconds:02d}"


def _total(value) -> str:
    return "?" if value is None or (isinstance(value, float) and math.isinf(value)) else str(int(value))


def _metrics(trainer: L.Trainer, prefixes: tuple[str, ...], per_step: bool = False) -> str:
    """``": name value, ..."`` for the scalar metrics whose names start with `prefixes`."""
    source = trainer.progress_bar_metrics if per_step else trainer.callback_metrics
    parts = []
    for name, value in sorted(source.items()):
        if name.startswith(prefixes) and getattr(value, "numel", lambda: 1)() == 1:
            parts.append(f"{name} {float(value):.4g}")
    return (": " + ", ".join(parts)) if parts else ""
