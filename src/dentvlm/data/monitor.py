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
        self.sums: torch.Tensor | None = None  # this epoch's SUMS, on the device
        self.max_tokens: torch.Tensor | None = None

    # per-epoch sums of: image tokens of real rows, real rows, rows scaled down, answers cut, samples
    # dropped, padding rows, tokens
    SUMS = ("image_tokens", "real_rows", "scaled_down", "truncated", "dropped", "padding_rows", "tokens")

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Summed on the device, logged once per epoch: seven `log` calls per step cost more host time
        # than this whole callback needs (Lightning's per-call bookkeeping, a few ms a step).
        self.sums = torch.zeros(len(self.SUMS), dtype=torch.float64, device=pl_module.device)  # exact counts
        self.max_tokens = torch.zeros((), device=pl_module.device)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        stats = batch.get("stats") if isinstance(batch, dict) else None
        if stats is None:
            return
        padding = batch["is_padding"].float()
        tokens = stats["image_tokens"].float() * (1 - padding)  # masked by multiplication: no host copy
        self.sums += torch.stack([tokens.sum(), (1 - padding).sum(), stats["scaled"].float().sum(),
                                  stats["truncated"].float().sum(), stats["dropped"].float().sum(),
                                  padding.sum(), stats["tokens"].float().sum()]).double()
        self.max_tokens = torch.maximum(self.max_tokens, tokens.max())
        step_end = (batch_idx + 1) % trainer.accumulate_grad_batches == 0
        if step_end and (trainer.global_step + 1) % max(1, trainer.log_every_n_steps) == 0:
            self._check(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.sums is None:
            return
        self._check(trainer)
        sums = dict(zip(self.SUMS, self.sums))
        real = int(sums["real_rows"])  # once per epoch: the weight of this rank's mean
        log = dict(on_step=False, on_epoch=True, sync_dist=True)  # Lightning reduces over ranks
        pl_module.log("data/image_tokens_mean", sums["image_tokens"] / max(real, 1), batch_size=max(real, 1), **log)
        pl_module.log("data/image_tokens_max", self.max_tokens, reduce_fx="max", **log)
        for name in ("scaled_down", "truncated", "dropped", "padding_rows", "tokens"):
            pl_module.log(f"data/{name}", sums[name], reduce_fx="sum", **log)

    def _check(self, trainer: L.Trainer) -> None:
        if self.sums is None:
            return
        dropped = self.sums[self.SUMS.index("dropped")].clone()
        dropped = int(trainer.strategy.reduce(dropped, reduce_op="sum"))  # every rank takes part
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
