from pathlib import Path

import pytest

from dentvlm.cli import main

REPO = Path(__file__).resolve().parents[2]


def fit_args(run_dir: Path, *extra: str) -> list[str]:
    """`dentvlm fit` on the tiny config, shortened, writing only under `run_dir`."""
    return [
        "fit", "--config", str(REPO / "configs" / "tiny.yaml"),
        "--trainer.max_epochs", "2", "--trainer.limit_train_batches", "3", "--trainer.limit_val_batches", "1",
        "--trainer.default_root_dir", str(run_dir),
        "--trainer.logger", "lightning.pytorch.loggers.CSVLogger", "--trainer.logger.save_dir", str(run_dir),
        "--trainer.callbacks.dirpath", str(run_dir / "checkpoints"),
        "--data.num_workers", "0", "--model.generate_samples", "4", *extra,
    ]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A short single-process LoRA fit of the tiny model on the demo shards."""
    run = tmp_path_factory.mktemp("run")
    main(fit_args(run))
    return run
