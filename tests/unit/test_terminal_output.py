"""What `dentvlm fit` shows in a terminal: epochs from 1, validation numbers and the run's ETA on the bar,
no v_num; and its end-of-fit summary."""

from types import SimpleNamespace

import torch

from dentvlm.fit_summary import FitSummary
from dentvlm.progress_bar import DentProgressBar


def fake_trainer(**overrides):
    values = dict(max_epochs=10, callback_metrics={"val/classification/loss": torch.tensor(0.45),
                                                   "val/classification/subset_accuracy": torch.tensor(0.7125)},
                  progress_bar_metrics={"loss": 0.5}, loggers=[], training=True, estimated_stepping_batches=100,
                  global_step=25, sanity_checking=False, current_epoch=2, checkpoint_callbacks=[],
                  default_root_dir="runs/x", interrupted=False, is_global_zero=True)
    return SimpleNamespace(**{**values, **overrides})


def test_the_bar_counts_epochs_from_one_and_shows_validation_and_eta(monkeypatch):
    bar = DentProgressBar()
    trainer = fake_trainer()
    monkeypatch.setattr(DentProgressBar, "trainer", property(lambda self: trainer))
    assert bar._get_train_description(0) == "Epoch 1/10"
    bar._fit_started -= 50  # 25 steps in 50 s: 75 left take 150 s
    items = bar.get_metrics(trainer, None)
    assert "v_num" not in items and items["train loss"] == 0.5
    assert items["val loss"] == "0.45" and items["val acc"] == "71.2%"
    assert items["run ETA"] == "0:02:30"


def test_the_fit_summary_names_the_best_epoch_checkpoints_and_logs():
    from lightning.pytorch.callbacks import ModelCheckpoint

    summary = FitSummary()
    checkpoint = ModelCheckpoint(monitor="val/classification/loss", mode="min")
    checkpoint.best_model_path, checkpoint.last_model_path = "runs/x/checkpoints/epoch=1.ckpt", "runs/x/last.ckpt"
    for epoch, loss in ((0, 0.9), (1, 0.4), (2, 0.6)):
        summary.on_validation_end(fake_trainer(current_epoch=epoch, callback_metrics={
            "val/classification/loss": torch.tensor(loss), "val/classification/subset_accuracy": torch.tensor(0.1)}),
            None)
    text = summary.summary(fake_trainer(checkpoint_callbacks=[checkpoint], current_epoch=3, global_step=30))
    assert text.startswith("dentvlm fit: done, 3 epochs (30 optimizer steps)")
    assert "best epoch 2: val/classification/loss 0.4, val/classification/subset_accuracy 0.1" in text
    assert "best checkpoint: runs/x/checkpoints/epoch=1.ckpt" in text and "last checkpoint: runs/x/last.ckpt" in text


def test_the_test_bar_names_the_variant(monkeypatch):
    bar = DentProgressBar()
    trainer = fake_trainer(lightning_module=SimpleNamespace(variant="base_few_shot"))
    monkeypatch.setattr(DentProgressBar, "trainer", property(lambda self: trainer))
    assert bar.test_description == "Testing base_few_shot"
