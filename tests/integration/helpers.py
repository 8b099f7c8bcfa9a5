"""Test-only callbacks, importable by class path from CLI configs."""

import lightning as L


class StopAfterSteps(L.Callback):
    """Ends training after `steps` optimizer steps, like a run killed right after a checkpoint."""

    def __init__(self, steps: int):
        self.steps = steps

    def on_train_batch_end(self, trainer, *args) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True
