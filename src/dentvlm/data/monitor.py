"""`DataMonitor`: what the image budget did to the training data, and a stop when too much is lost.

Encoding runs in DataLoader workers, so each batch carries its statistics (`batch["stats"]`, see
`pad_batch`): image tokens per row, rows whose images were scaled below max_pixels, answers cut at
the cutoff, and samples dropped because they could not fit even at min_pixels.
"""

from __future__ import annotations

import lightning as L
import torch


class DataMonitor(L.Callback):
    """Logs ``data/*`` statistics of the training batches and stops a run that drops too many samples.

    Args:
        max_drop_fraction: Stop (on every rank together) once the training samples dropped this
            epoch pass this fraction of the split: a run that silently trains on part of its data is
            worse than one that stops. Checked at every logging step and at the end of each epoch.
    """

    def __init__(self, max_drop_fraction: float = 0.01):
        if not 0 <= max_drop_fraction <= 1:
            raise ValueError(f"data_monitor.max_drop_fraction must be in [0, 1], got {max_drop_fraction}")
        self.max_drop_fraction = max_drop_fraction
        self.dropped = 0.0

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.dropped = torch.zeros((), device=pl_module.device)  # stays on the device until a check

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stats = batch.get("stats") if isinstance(batch, dict) else None
        if stats is None:
            return
        real = (~batch["is_padding"]).float()
        rows = len(batch["meta"])  # a host-side count: logging must not wait for the device
        tokens = stats["image_tokens"].float()
        dropped = stats["dropped"].float()
        self.dropped = self.dropped + dropped
        log = dict(on_step=False, on_epoch=True, sync_dist=True, batch_size=rows)
        # masked by multiplication, not indexing: boolean indexing would copy the mask to the host
        pl_module.log("data/image_tokens_mean", (tokens * real).sum() / real.sum().clamp(min=1), **log)
        pl_module.log("data/image_tokens_max", (tokens * real).max(), reduce_fx="max", **log)
        pl_module.log("data/scaled_down", stats["scaled"].sum().float(), reduce_fx="sum", **log)
        pl_module.log("data/truncated", stats["truncated"].sum().float(), reduce_fx="sum", **log)
        pl_module.log("data/dropped", dropped, reduce_fx="sum", **log)
        pl_module.log("data/padding_rows", batch["is_padding"].sum().float(), reduce_fx="sum", **log)
        pl_module.log("data/tokens", stats["tokens"].float(), reduce_fx="sum", **log)
        step_end = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if step_end and (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._check(trainer)

    def _check(self, trainer: L.Trainer) -> None:
        if not torch.is_tensor(self.dropped):
            return
        dropped = int(trainer.strategy.reduce(self.dropped.clone(), reduce_op="sum"))  # every rank takes part
        datamodule = trainer.datamodule
        split = datamodule.split_size(datamodule.hparams.train_split, datamodule.task)
        if dropped > self.max_drop_fraction * split:
            hp = datamodule.hparams
            raise ValueError(  # bad data or settings: one line from the CLI
                f"{dropped} of {split} training samples dropped this epoch so far "
                f"({100 * dropped / max(1, split):.1f}%), over data_monitor.max_drop_fraction="
                f"{self.max_drop_fraction}: they do not fit data.cutoff_len={hp.cutoff_len} even with their images "
                f"at data.min_pixels={hp.min_pixels}; raise cutoff_len, or lower max_images or min_pixels"
            )
