"""What one optimizer step does: train mode, real gradient checkpointing, active LoRA dropout, and a
loss that weighs every answer token the same across micro-batches and ranks."""

import subprocess
import sys

import lightning as L
import pytest
import torch

from dentvlm.data.collate import IGNORE_INDEX
from dentvlm.data.datamodule import DentDataModule
from dentvlm.model.module import DentVLM

from .conftest import REPO
from .grad_probe import run_step, two_examples


@pytest.fixture(scope="module")
def examples():
    return two_examples()


@pytest.fixture(scope="module")
def one_batch(examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "grads.pt"
    run_step([[examples]], out)
    return torch.load(out)


def assert_same_gradients(actual: dict, expected: dict) -> None:
    assert actual.keys() == expected.keys() and len(expected) > 10
    for name, grad in expected.items():
        torch.testing.assert_close(actual[name], grad, rtol=2e-4, atol=1e-7, msg=name)


def test_answers_differ_in_length(examples):
    short, long = ((e.label_ids != IGNORE_INDEX).sum().item() for e in examples)
    assert long > 10 * short  # so a mean of micro-batch means would weigh them very differently


def test_accumulated_micro_batches_give_the_gradient_of_one_batch(examples, one_batch, tmp_path):
    run_step([[[examples[0]], [examples[1]]]], tmp_path / "grads.pt", accumulate=2)
    assert_same_gradients(torch.load(tmp_path / "grads.pt"), one_batch)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp2"])
def test_two_ranks_give_the_gradient_of_one_batch(one_batch, tmp_path, strategy):
    out = tmp_path / "grads.pt"
    result = subprocess.run([sys.executable, "-m", "tests.integration.grad_probe", strategy, str(out)], cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert_same_gradients(torch.load(out), one_batch)


class ModeProbe(L.Callback):
    """Records the model's mode in each stage, LoRA dropout's mode, and decoder-layer forward calls
    made during the backward pass (gradient checkpointing recomputes each layer there)."""

    def __init__(self):
        self.train_modes, self.val_modes, self.dropout_modes = [], [], []
        self.calls, self.calls_after_forward, self.recomputed = 0, None, []

    def on_train_start(self, trainer, pl_module) -> None:
        # A layer's first inner module, before it runs: transformers checkpoints a layer's forward, not
        # its __call__, so the layer's own hooks do not run again on recompute, and recompute stops
        # early once it has what backward needs, so a post-forward hook may never see it.
        for layer in pl_module.network.model.language_model.layers:
            layer.self_attn.register_forward_pre_hook(self._count)

    def _count(self, *args) -> None:
        self.calls += 1

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.train_modes.append(pl_module.network.training)
        self.dropout_modes += [m.training for n, m in pl_module.named_modules() if n.endswith("lora_dropout.default")]
        self.calls = 0

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        self.calls_after_forward = self.calls

    def on_after_backward(self, trainer, pl_module) -> None:
        self.recomputed.append(self.calls - self.calls_after_forward)

    def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        self.val_modes.append(pl_module.network.training)


def test_training_is_in_train_mode_with_checkpointing_and_dropout_at_work():
    L.seed_everything(0)
    module = DentVLM(model_path="tiny", gradient_checkpointing=True, lora_dropout=0.5, generate_samples=0)
    data = DentDataModule(shards=str(REPO / "shards" / "demo"), processor_path="tiny", num_workers=0, batch_size=2,
                          max_images=2)
    probe = ModeProbe()
    trainer = L.Trainer(accelerator="cpu", max_steps=2, limit_val_batches=1, val_check_interval=1,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False, callbacks=[probe])
    trainer.fit(module, datamodule=data)
    layers = len(module.network.model.language_model.layers)
    assert probe.train_modes == [True, True] and probe.val_modes and not any(probe.val_modes)
    assert probe.dropout_modes and all(probe.dropout_modes)
    assert probe.recomputed == [layers, layers]  # every checkpointed layer ran again in backward

    # LoRA dropout really drops in train mode: the same batch gives two different losses
    batch = next(iter(data.train_dataloader()))
    module.train()
    with torch.no_grad():
        first, second = module.loss_terms(batch)[0], module.loss_terms(batch)[0]
    module.eval()
    with torch.no_grad():
        third, fourth = module.loss_terms(batch)[0], module.loss_terms(batch)[0]
    assert first != second and third == fourth
