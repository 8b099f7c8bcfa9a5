"""One setting moves a whole run; progress in a log file is plain lines; a run that fails before its first
batch leaves nothing behind (issue classes: --trainer.default_root_dir does not move a run; what a
newcomer sees)."""

import os
import re
import subprocess
import sys

import pytest

from dentvlm.cli import main

from ..conftest import DEMO_SHARDS
from .conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")
SHORT = ["--data.shards", str(DEMO_SHARDS), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
         "--trainer.limit_val_batches", "1", "--model.generate_samples", "2", "--trainer.log_every_n_steps", "1",
         "--data.num_workers", "0"]


def dentvlm(cwd, *args) -> subprocess.CompletedProcess:
    """The real command in its own process, output to pipes (not a terminal), as under nohup or a scheduler."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "dentvlm", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env=env)


def files(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


@pytest.mark.slow
def test_default_root_dir_moves_everything_and_progress_is_plain_lines(tmp_path):
    cwd, run = tmp_path / "cwd", tmp_path / "elsewhere" / "run-a"
    cwd.mkdir()
    fit = dentvlm(cwd, "fit", "--config", TINY, "--trainer.default_root_dir", str(run), *SHORT)
    assert fit.returncode == 0, fit.stderr[-3000:]
    lines = fit.stdout.splitlines()
    assert any(line.endswith("] epoch 1/1 batch 1/2 step 1: loss " + line.split("loss ")[-1])
               for line in lines if "batch 1/2" in line)
    assert any("epoch 1/1 done in" in line and "val/classification/loss" in line for line in lines)
    assert not re.search(r"Epoch \d+/\d+|it/s", fit.stdout)  # no progress-bar frames in a log file
    assert "dentvlm fit: done, 1 epochs (2 optimizer steps)" in fit.stdout
    assert f"last checkpoint: {run / 'checkpoints' / 'last.ckpt'}" in fit.stdout and "wandb sync" in fit.stdout
    test = dentvlm(cwd, "test", "--config", TINY, "--trainer.default_root_dir", str(run), "--ckpt_path", "last",
                   "--data.shards", str(DEMO_SHARDS), "--data.num_workers", "0", "--results.baselines", "[]",
                   "--trainer.limit_test_batches", "1", "--model.max_new_tokens", "2", "--results.bootstrap", "0")
    assert test.returncode == 0, test.stderr[-3000:]
    assert any("test done" in line for line in test.stdout.splitlines())
    written = files(run)
    for expected in ("checkpoints/last.ckpt", "checkpoints/last/adapter_model.safetensors", "config.yaml",
                     "csv/version_0/metrics.csv", "results/metrics.json", "results/report.md", "results/config.yaml"):
        assert expected in written, (expected, written)
    assert any(name.startswith("wandb/offline-run-") for name in written)
    # the test's resolved config lies beside its results; the training config stays as fit saved it
    import yaml

    trained, tested = (yaml.safe_load((run / name).read_text()) for name in ("config.yaml", "results/config.yaml"))
    assert trained["results"]["bootstrap"] == 1000 and tested["results"]["bootstrap"] == 0
    assert files(cwd) == []  # nothing in the working directory: no runs/tiny, results/tiny, lightning_logs


def test_explicit_paths_still_win(capsys, tmp_path):
    import yaml

    with pytest.raises(SystemExit):
        main(["fit", "--config", TINY, "--trainer.default_root_dir", str(tmp_path / "root"),
              "--trainer.callbacks.dirpath", str(tmp_path / "ckpts"), "--print_config"])
    config = yaml.safe_load(capsys.readouterr().out)
    checkpoint = next(c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("AdapterCheckpoint"))
    assert checkpoint["init_args"]["dirpath"] == str(tmp_path / "ckpts")
    assert [logger["init_args"]["save_dir"] for logger in config["trainer"]["logger"]] == [str(tmp_path / "root")] * 2
    assert config["results"]["out_dir"] == str(tmp_path / "root" / "results")


FAIL = "--trainer.callbacks+=tests.integration.helpers.FailOnTrainStart"


@pytest.mark.slow
@pytest.mark.parametrize("with_config", [True, False], ids=["tiny-config-wandb", "no-config-lightning-logs"])
def test_a_run_failing_before_its_first_batch_leaves_nothing(tmp_path, monkeypatch, capsys, with_config):
    from .helpers import FailOnTrainStart  # noqa: F401  (imported by class path)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "keep.txt").write_text("an earlier folder of the user's")
    config = ["--config", TINY] if with_config else []
    with pytest.raises(SystemExit) as info:
        main(["fit", *config, *SHORT, FAIL])
    assert info.value.code == 1
    assert "planted failure before the first batch" in capsys.readouterr().err
    assert files(tmp_path) == ["runs/keep.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs"]
