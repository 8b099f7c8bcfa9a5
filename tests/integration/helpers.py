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
