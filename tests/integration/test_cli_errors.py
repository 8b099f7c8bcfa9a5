"""How the real `dentvlm` command refuses (issue classes: errors are tracebacks; what a newcomer sees):
expected errors are one line naming file/row/key and exit 1, tracebacks only for bugs or --debug;
usage errors are short, with "did you mean"; checks that can fail do so before the model is built."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dentvlm import commands
from dentvlm.cli import main
from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards

from ..conftest import DEMO_SHARDS
from .conftest import REPO

TINY = str(REPO / "configs" / "tiny.yaml")


def refusal(capsys, argv) -> str:
    """Run `main(argv)`, expect exit 1, and return the one error line (no traceback anywhere)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    [line] = [line for line in err.splitlines() if ": error: " in line]
    assert line.startswith(f"dentvlm {argv[0]}: error: ")
    return line


def test_shard_errors_are_one_line(capsys, tmp_path, synth_release):
    assert "no complete_dataset.csv found" in refusal(capsys, ["shard", str(tmp_path / "nope"), str(tmp_path / "o")])
    (tmp_path / "notes.txt").write_text("mine")
    assert "not a shard folder" in refusal(capsys, ["shard", str(synth_release), str(tmp_path), "--salt", "s"])
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)  # nested past Python's recursion limit
    assert "deep.json: JSON nested too deeply" in refusal(capsys, ["shard", str(deep), str(tmp_path / "o2")])
    line = refusal(capsys, ["shard", str(synth_release), str(tmp_path / "o3"), "--image_long_side", "9000"])
    assert "long_side must be <=" in line


def test_strict_error_names_row_and_file_on_one_line(capsys, tmp_path, synth_release):
    import shutil

    root = tmp_path / "release"
    shutil.copytree(synth_release, root)
    bad = sorted((root / "Images" / "Photographs").iterdir())[0]
    bad.write_bytes(b"garbage")
    line = refusal(capsys, ["shard", str(root), str(tmp_path / "out"), "--strict", "true", "--salt", "s",
                            "--workers", "1"])
    assert "complete_dataset.csv row" in line and bad.name in line and "corrupt_image" in line


def test_debug_flag_and_environment_show_the_traceback(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError):
        main(["export", str(tmp_path / "nothing.ckpt"), str(tmp_path / "out"), "--debug"])
    monkeypatch.setenv("DENTVLM_DEBUG", "1")
    with pytest.raises(FileNotFoundError):
        main(["export", str(tmp_path / "nothing.ckpt"), str(tmp_path / "out")])


def test_bugs_keep_their_traceback(monkeypatch, tmp_path):
    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(commands, "write_synthetic_release", broken, raising=False)
    import dentvlm.synth

    monkeypatch.setattr(dentvlm.synth, "write_synthetic_release", broken)
    with pytest.raises(ZeroDivisionError):
        main(["synth", str(tmp_path / "x")])


def test_real_process_prints_one_line_and_exits_1(tmp_path):
    result = subprocess.run([sys.executable, "-m", "dentvlm", "shard", str(tmp_path / "nope"), str(tmp_path / "o"),
                             "--salt", "s"], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("dentvlm shard: error: ")


def test_a_trainer_command_error_is_the_only_line(tmp_path):
    """No library tips, hardware lines or deprecation warnings before the one line (there were a dozen)."""
    result = subprocess.run([sys.executable, "-m", "dentvlm", "fit", "--config", TINY, "--data.shards",
                             str(tmp_path / "nope"), "--trainer.default_root_dir", str(tmp_path / "run")],
                            capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    [line] = result.stderr.strip().splitlines()
    assert line.startswith("dentvlm fit: error: ") and "does not exist, so no manifest.json" in line


@pytest.mark.parametrize(
    "argv, wrong, right",
    [
        (["fit", "--config", TINY, "--model.lora_rnak", "4"], "--model.lora_rnak", "--model.lora_rank"),
        (["fit", "--config", TINY, "--data.batch_szie", "4"], "--data.batch_szie", "--data.batch_size"),
        (["test", "--config", TINY, "--trainer.max_epohcs", "1"], "--trainer.max_epohcs", "--trainer.max_epochs"),
        (["shard", "src", "out", "--strcit", "true"], "--strcit", "--strict"),
        (["export", "a", "b", "--mrege", "true"], "--mrege", "--merge"),
    ],
)
def test_misspelled_keys_are_short_with_did_you_mean(capsys, argv, wrong, right):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"{wrong}: did you mean {right}?" in err
    assert len(err.strip().splitlines()) <= 6, err  # not ~95 lines of usage


def test_misspelled_key_in_a_config_file(capsys, tmp_path):
    typo = tmp_path / "typo.yaml"
    typo.write_text("trainer:\n  max_epoch: 3\n")
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", TINY, "--config", str(typo)])
    err = capsys.readouterr().err
    assert info.value.code == 2 and "did you mean --trainer.max_epochs?" in err and len(err.splitlines()) <= 6


def test_unknown_command(capsys):
    with pytest.raises(SystemExit, match=r"unknown command 'fitt' \(did you mean 'fit'\?\)"):
        main(["fitt"])


@pytest.fixture
def no_model_build(monkeypatch):
    """Fail the test if anything starts building the model."""
    import dentvlm.model.build as build
    import dentvlm.model.module as module

    def refuse(*args, **kwargs):
        raise AssertionError("the model was built before the check")

    monkeypatch.setattr(build, "load_vlm", refuse)
    monkeypatch.setattr(module, "load_vlm", refuse)


def test_missing_checkpoint_fails_before_the_model_is_built(capsys, tmp_path, monkeypatch, no_model_build):
    monkeypatch.chdir(tmp_path)
    args = ["--config", TINY, "--data.shards", str(DEMO_SHARDS), "--trainer.default_root_dir", str(tmp_path / "r")]
    line = refusal(capsys, ["test", *args, "--ckpt_path", "/nope.ckpt"])
    assert "--ckpt_path /nope.ckpt: no such checkpoint" in line
    line = refusal(capsys, ["test", *args, "--ckpt_path", "last"])  # no run yet: no last checkpoint
    assert "no last checkpoint in" in line and str(tmp_path / "r" / "checkpoints") in line
    line = refusal(capsys, ["fit", *args, "--model.model_path", str(tmp_path / "no-model")])
    assert "no-model" in line and "is not a directory" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_missing_or_old_shards_fail_before_the_model_is_built(capsys, tmp_path, monkeypatch, no_model_build):
    monkeypatch.chdir(tmp_path)
    line = refusal(capsys, ["fit", "--config", TINY, "--data.shards", str(tmp_path / "none")])
    assert f"the folder {tmp_path / 'none'} does not exist, so no manifest.json" in line
    (tmp_path / "empty").mkdir()
    line = refusal(capsys, ["fit", "--config", TINY, "--data.shards", "empty"])  # relative: from the current folder
    assert f"the folder {tmp_path / 'empty'} exists but holds no manifest.json" in line
    assert f"relative paths are read from the current folder, {tmp_path}" in line
    old = tmp_path / "old"
    old.mkdir()
    manifest = json.loads((DEMO_SHARDS / "manifest.json").read_text())
    manifest["version"] = 1
    (old / "manifest.json").write_text(json.dumps(manifest))
    line = refusal(capsys, ["fit", "--config", TINY, "--data.shards", str(old)])
    assert "rebuild the shards with `dentvlm shard" in line


@pytest.fixture(scope="module")
def shards_without_val_and_test(tmp_path_factory, synth_release):
    out = tmp_path_factory.mktemp("train-only")
    build_shards(synth_release, out, salt="s", val=0, test=0, policy=ImagePolicy(long_side=48), workers=1,
                 progress=False)
    return out


def test_empty_validation_or_test_split_is_an_error(capsys, tmp_path, monkeypatch, shards_without_val_and_test,
                                                    no_model_build):
    monkeypatch.chdir(tmp_path)
    args = ["--config", TINY, "--data.shards", str(shards_without_val_and_test)]
    line = refusal(capsys, ["fit", *args])
    assert "the 'val' split has no samples for the classification task" in line
    assert "--trainer.limit_val_batches 0" in line
    line = refusal(capsys, ["test", *args])
    assert "the 'test' split has no samples" in line
    line = refusal(capsys, ["validate", *args, "--data.eval_tasks", "[report]"])
    assert "the 'val' split has no samples for the report task" in line


@pytest.fixture
def copied_demo(tmp_path):
    """A copy of the demo shards that a test may damage."""
    import shutil

    return Path(shutil.copytree(DEMO_SHARDS, tmp_path / "demo"))


@pytest.mark.parametrize("command, split", [("fit", "val"), ("fit", "train"), ("validate", "val"), ("test", "test"),
                                            ("test", "train")])  # test reads train for base_few_shot
def test_a_missing_listed_shard_fails_before_the_model_is_built(capsys, tmp_path, monkeypatch, copied_demo, command,
                                                               split, no_model_build):
    monkeypatch.chdir(tmp_path)
    (copied_demo / f"{split}-000000.tar").unlink()
    line = refusal(capsys, [command, "--config", TINY, "--data.shards", str(copied_demo)])
    assert f"{split} shard(s) that manifest.json lists are missing ({split}-000000.tar)" in line


def test_a_truncated_shard_fails_before_the_model_is_built(capsys, tmp_path, monkeypatch, copied_demo,
                                                          no_model_build):
    monkeypatch.chdir(tmp_path)
    shard = copied_demo / "val-000000.tar"
    shard.write_bytes(shard.read_bytes()[:-10240])
    line = refusal(capsys, ["fit", "--config", TINY, "--data.shards", str(copied_demo)])
    assert "val-000000.tar" in line and "truncated or not the shard that was written" in line


def test_a_split_the_command_does_not_read_is_not_required(capsys, tmp_path, monkeypatch, copied_demo):
    """`test` without few-shot reads only the test split: a missing training shard does not stop it
    before the model is built (it fails later, or not at all, only if it is read)."""
    from dentvlm.run_folder import check_shard_files
    from dentvlm.sharding import load_manifest

    (copied_demo / "train-000001.tar").unlink()
    manifest = load_manifest(copied_demo)
    check_shard_files(copied_demo, manifest, "test")
    with pytest.raises(FileNotFoundError, match="train-000001.tar"):
        check_shard_files(copied_demo, manifest, "train")


def test_fsdp2_runs_evaluate_without_inference_mode(capsys, tmp_path, monkeypatch):
    """Lightning's default inference_mode breaks FSDP2's all-gather on a GPU (measured on an H200:
    "Inference tensors do not track version counter" at the first test forward). Every shipped config
    must evaluate with inference_mode off; an explicit `true` under FSDP2 is refused before the model
    is built."""
    import yaml

    for config in sorted((REPO / "configs").glob("*.yaml")):
        if config.name == "multinode.yaml":  # an overlay on qwen7b.yaml
            args = ["--config", str(REPO / "configs" / "qwen7b.yaml"), "--config", str(config)]
        else:
            args = ["--config", str(config)]
        for command in ("fit", "validate", "test"):
            with pytest.raises(SystemExit):
                main([command, *args, "--print_config"])
            resolved = yaml.safe_load(capsys.readouterr().out)
            assert resolved["trainer"]["inference_mode"] is False, (config.name, command)
    monkeypatch.chdir(tmp_path)
    overlay = tmp_path / "fsdp2.yaml"
    overlay.write_text("trainer:\n  strategy:\n    class_path: lightning.pytorch.strategies.ModelParallelStrategy\n"
                       "  inference_mode: true\n")
    line = refusal(capsys, ["test", "--config", TINY, "--config", str(overlay)])
    assert "trainer.inference_mode: true fails under FSDP2" in line


def test_a_yaml_syntax_error_names_its_file_and_line(capsys, tmp_path):
    bad = tmp_path / "overlay.yaml"
    bad.write_text("model:\n  lora_rank: [1, 2\n")
    line = refusal(capsys, ["fit", "--config", TINY, "--config", str(bad)])
    assert f"{bad} line 3, column 1: not valid YAML" in line


def test_fit_help_shows_dentvlms_own_options_first(capsys):
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    lines = capsys.readouterr().out.splitlines()
    first = {key: next(i for i, line in enumerate(lines) if line.strip().startswith(key))
             for key in ("--model.model_path", "--data.shards", "--trainer.max_epochs")}
    assert first["--model.model_path"] < 40 and first["--data.shards"] < first["--trainer.max_epochs"]
    assert lines[0].startswith("usage: ") and len(lines[0]) < 120  # one usage line, not 137


def test_class_scoring_that_cannot_run_is_refused_before_the_model_is_built(capsys, tmp_path, monkeypatch,
                                                                          no_model_build):
    monkeypatch.chdir(tmp_path)
    line = refusal(capsys, ["test", "--config", TINY, "--data.shards", str(DEMO_SHARDS),
                            "--model.attn_implementation", "flash_attention_2"])
    assert "model.score_classes scores class probabilities under sdpa or eager" in line
    # without scoring, the same settings pass the checks (and fail later only for want of flash-attn)
    with pytest.raises(SystemExit) as info:
        main(["test", "--config", TINY, "--model.attn_implementation", "flash_attention_2",
              "--model.score_classes", "false", "--print_config"])
    assert info.value.code == 0


def test_fit_without_a_progress_bar_or_with_its_own(tmp_path):
    """Lightning refuses a bar callback with the bar off, and a second bar: dentvlm's own steps aside."""
    for extra in (["--trainer.enable_progress_bar", "false"],
                  ["--trainer.callbacks+=lightning.pytorch.callbacks.TQDMProgressBar"]):
        run = tmp_path / extra[0].split(".")[-1].split("=")[0]
        result = subprocess.run([sys.executable, "-m", "dentvlm", "fit", "--config", TINY, *extra,
                                 "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "1",
                                 "--trainer.limit_val_batches", "0", "--data.num_workers", "0",
                                 "--trainer.default_root_dir", str(run)],
                                capture_output=True, text=True, timeout=300, cwd=REPO)
        assert result.returncode == 0, result.stderr[-2000:]
