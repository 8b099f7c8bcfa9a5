"""Test-only callbacks, importable by class path from CLI configs."""

import lightning as L


class StopAfterSteps(L.Callback):
    """Ends training after `steps` optimizer steps, like a run killed right after a checkpoint."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class FailOnTrainStart(L.Callback):
    """Raises an expected error after the loggers have started and before the first batch."""

    def on_train_start(self, trainer, pl_module) -> None:
        raise ValueError("planted failure before the first batch")


class PoisonGradients(L.Callback):
    """Puts an infinity into one gradient after the backward of optimizer step `step` (1-based), leaving
    the loss finite: an fp16/bf16 overflow in backward looks like this."""

    def __init__(self, step: int):
        self.step = step

    def on_after_backward(self, trainer, pl_module) -> None:
        if trainer.global_step + 1 == self.step:
            param = next(p for p in pl_module.parameters() if p.grad is not None)
            param.grad.view(-1)[0] = float("inf")
