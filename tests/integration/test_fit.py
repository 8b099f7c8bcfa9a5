"""`dentvlm fit` through the real CLI on the tiny model and the demo shards."""

import json
import re
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from dentvlm.cli import main

from .conftest import REPO, fit_args


@pytest.mark.slow
def test_fit_writes_self_describing_checkpoints(trained_run):
    checkpoints = trained_run / "checkpoints"
    assert (checkpoints / "last.ckpt").is_file()
    folder = checkpoints / "last"
    for name in ("adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "processor_config.json",
                 "chat_template.jinja", "labels.json", "config.yaml", "dentvlm.json"):
        assert (folder / name).is_file(), name
    description = json.loads((folder / "dentvlm.json").read_text())
    assert description["finetune"] == "lora" and description["global_step"] == 6
    assert json.loads((folder / "labels.json").read_text())["classes"][:2] == ["malocclusion", "gingivitis"]
    assert "model_path: tiny" in (folder / "config.yaml").read_text()
    adapter = load_file(folder / "adapter_model.safetensors")
    assert any("lora_A" in k for k in adapter) and any("visual" in k for k in adapter)
    # the Lightning checkpoint holds trainable weights only (frozen base weights stay in the base model)
    state = torch.load(checkpoints / "last.ckpt", weights_only=True)["state_dict"]
    assert state and all("lora_" in k or "modules_to_save" in k for k in state)
    assert len(state) == len(adapter)


@pytest.mark.slow
def test_resume_continues_steps_and_schedule(tmp_path):
    from .helpers import StopAfterSteps  # noqa: F401  (imported by class path below)

    killed = tmp_path / "killed"
    stopper = ["--trainer.callbacks+=tests.integration.helpers.StopAfterSteps", "--trainer.callbacks.steps=3"]
    main(fit_args(killed, *stopper))
    first = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert first["global_step"] == 3
    main(fit_args(killed, "--ckpt_path", "last"))
    resumed = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    whole = tmp_path / "whole"
    main(fit_args(whole))
    uninterrupted = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == uninterrupted["global_step"] == 6
    assert resumed["lr_schedulers"][0]["last_epoch"] == uninterrupted["lr_schedulers"][0]["last_epoch"]
    for key, value in uninterrupted["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, rtol=1e-4, atol=1e-5)


@pytest.mark.slow
def test_non_finite_loss_skips_steps_then_stops(tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(fit_args(tmp_path, "--model.learning_rate", "1e6", "--trainer.gradient_clip_val", "null",
                      "--model.max_skipped_steps", "1"))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert re.search(r"dentvlm fit: error: optimizer step \d+ skipped for (a non-finite loss|non-finite gradients "
                     r"with a finite loss), 2 skipped steps in all "
                     r"\(over model.max_skipped_steps 1\)", err)
    assert "Traceback" not in err


@pytest.mark.slow
def test_non_finite_gradients_with_a_finite_loss_skip_the_step_and_training_goes_on(tmp_path, capsys):
    """Clipping would otherwise write NaN into every trainable weight (it divides by an infinite norm)."""
    poison = ["--trainer.callbacks+=tests.integration.helpers.PoisonGradients", "--trainer.callbacks.step=2",
              "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"]
    main(fit_args(tmp_path, *poison))
    assert "optimizer step 2 skipped for non-finite gradients with a finite loss (1 of at most 10)" in \
        capsys.readouterr().out
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 and state["dentvlm_skipped_steps"] == 1
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    assert state["optimizer_states"][0]["state"][0]["step"] == 2  # Adam took steps 1 and 3 only


@pytest.mark.slow
def test_the_gpu_recipes_precision_and_clipping_train(tmp_path):
    """configs/qwen*.yaml train in bf16-mixed with gradient clipping: the optimizer must allow
    clipping under mixed precision (Lightning refuses it for one that unscales itself, e.g. fused
    AdamW). The data statistics are logged once per epoch."""
    main(fit_args(tmp_path, "--trainer.precision", "bf16-mixed", "--trainer.gradient_clip_val", "1.0",
                  "--trainer.max_epochs", "1", "--trainer.limit_val_batches", "0"))
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3 and all(torch.isfinite(v).all() for v in state["state_dict"].values())
    import csv

    rows = list(csv.DictReader(next(tmp_path.rglob("metrics.csv")).open()))
    logged = {key: float(value) for row in rows for key, value in row.items() if value and key.startswith("data/")}
    assert logged["data/image_tokens_mean"] > 0 and logged["data/tokens"] > logged["data/image_tokens_max"] > 0
    assert logged["data/dropped"] == 0


FSDP2 = ["--trainer.strategy", "lightning.pytorch.strategies.ModelParallelStrategy",
         "--trainer.strategy.save_distributed_checkpoint", "false"]


@pytest.mark.slow
@pytest.mark.parametrize("strategy", [FSDP2, ["--trainer.strategy", "ddp"]], ids=["fsdp2", "ddp"])
def test_two_process_fit_on_cpu(tmp_path, strategy):
    args = fit_args(tmp_path, "--trainer.devices", "2", *strategy, "--trainer.max_epochs", "1")
    result = subprocess.run([sys.executable, "-m", "dentvlm", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "trainable of" in output and ("per shard" in output) == (strategy is FSDP2)
    state = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in state["state_dict"].values())
    # the gathered adapter has full (unsharded) shapes: it matches a single-process model's
    adapter = load_file(tmp_path / "checkpoints" / "last" / "adapter_model.safetensors")
    lora_a = next(v for k, v in adapter.items() if k.endswith("q_proj.lora_A.weight"))
    assert lora_a.shape == (16, 128)


def validate(run_dir, checkpoint, *extra: str) -> dict:
    """`dentvlm validate` of the trained tiny model on the demo val split; the logged metrics."""
    args = ["validate", "--config", str(REPO / "configs" / "tiny.yaml"), "--ckpt_path", str(checkpoint),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(run_dir), "--trainer.callbacks.dirpath", str(run_dir / "checkpoints"),
            "--data.num_workers", "0", "--data.eval_batch_size", "11", "--model.generate_samples", "-1", *extra]
    result = subprocess.run([sys.executable, "-m", "dentvlm", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    import csv

    rows = list(csv.DictReader((next(run_dir.rglob("metrics.csv"))).open()))
    return {key: float(value) for row in rows for key, value in row.items() if value and key.startswith("val/")}


@pytest.mark.slow
def test_two_rank_fsdp2_validation_with_an_all_padding_batch_matches_one_process(trained_run, tmp_path):
    # 45 val checkups, 2 ranks, batches of 11: rank 1 holds 22 checkups, so its third batch is all
    # padding (no label tokens). Every rank must still run every forward, or FSDP2 hangs.
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    single = validate(tmp_path / "one", checkpoint)
    sharded = validate(tmp_path / "two", checkpoint, "--trainer.devices", "2", *FSDP2)
    assert single.keys() == sharded.keys() and "val/classification/subset_accuracy" in single
    # every val checkup scored once: --model.generate_samples -1 beat the checkpoint's saved setting (4)
    assert single["val/classification/samples"] == 45
    for name, value in single.items():
        assert sharded[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


@pytest.mark.slow
def test_a_run_that_drops_too_many_checkups_stops_and_says_why(tmp_path, capsys):
    # prompts of the demo are 123-299 tokens with images at min_pixels: a cutoff of 200 drops about a quarter
    with pytest.raises(SystemExit) as info:
        main(fit_args(tmp_path, "--data.cutoff_len", "200", "--trainer.log_every_n_steps", "1"))
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert re.search(r"training samples dropped this epoch so far .* over data_monitor.max_drop_fraction=0.01.*"
                     r"data.cutoff_len=200", err) and "Traceback" not in err
    main(fit_args(tmp_path / "tolerant", "--data.cutoff_len", "200", "--data_monitor.max_drop_fraction", "0.5"))


@pytest.mark.slow
def test_the_same_command_trains_the_same_weights(trained_run, tmp_path):
    """The CPU run is deterministic on one machine: a second run of the fixture's command gives
    bit-identical trainable weights (so README figures can be reproduced, not just approached)."""
    main(fit_args(tmp_path))
    first = torch.load(trained_run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    second = torch.load(tmp_path / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


def test_results(run_dir, checkpoint, *extra: str) -> list[dict]:
    """`dentvlm test` (fine-tuned only) of the trained tiny model; its predictions.jsonl rows."""
    args = ["test", "--config", str(REPO / "configs" / "tiny.yaml"), "--ckpt_path", str(checkpoint),
            "--trainer.default_root_dir", str(run_dir), "--trainer.logger", "lightning.pytorch.loggers.CSVLogger",
            "--trainer.logger.save_dir", str(run_dir), "--data.num_workers", "0", "--data.eval_batch_size", "7",
            "--results.baselines", "[]", "--results.bootstrap", "0", "--model.max_new_tokens", "6", *extra]
    result = subprocess.run([sys.executable, "-m", "dentvlm", *args], cwd=REPO, capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    import json

    return [json.loads(line) for line in (run_dir / "results" / "predictions.jsonl").read_text().splitlines()]


test_results.__test__ = False  # a helper, not a test


@pytest.mark.slow
def test_two_rank_fsdp2_class_probabilities_gather_once_each(trained_run, tmp_path):
    """60 test and 45 validation checkups over 2 ranks in batches of 7: the ranks' last batches hold padding
    rows. Every checkup comes back exactly once, with the probabilities one process gives it (the
    scoring forwards are collective under FSDP2, padding rows included, and dropped after)."""
    checkpoint = trained_run / "checkpoints" / "last.ckpt"
    single = test_results(tmp_path / "one", checkpoint)
    sharded = test_results(tmp_path / "two", checkpoint, "--trainer.devices", "2", *FSDP2)
    for split, count in (("test", 60), ("val", 45)):
        keys = [r["key"] for r in sharded if r["split"] == split]
        assert len(keys) == len(set(keys)) == count, split
    one = {(r["split"], r["key"]): r for r in single if r["task"] == "classification"}
    two = {(r["split"], r["key"]): r for r in sharded if r["task"] == "classification"}
    assert one.keys() == two.keys()
    for key, row in one.items():
        assert two[key]["class_probabilities"] == pytest.approx(row["class_probabilities"], abs=1e-4), key
        assert two[key]["generated"] == row["generated"], key
