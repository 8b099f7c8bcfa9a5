"""`dentvlm export` checks the checkpoint folder before writing and the export after, and only then
creates `out` (issue class: an export without weights that exits 0)."""

import json
import shutil

import pytest
from safetensors.torch import load_file, save_file

from dentvlm.cli import main


@pytest.fixture
def folder(trained_run, tmp_path):
    """A copy of the trained run's last checkpoint folder, to damage."""
    copy = tmp_path / "ckpt" / "last"
    shutil.copytree(trained_run / "checkpoints" / "last", copy)
    return copy


def refuse(capsys, argv) -> str:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return next(line for line in err.splitlines() if line.startswith("dentvlm export: error: "))


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["false", "true"])
@pytest.mark.parametrize("remove", ["adapter_model.safetensors", "adapter_config.json", "processor_config.json"])
def test_incomplete_checkpoint_folder_is_refused_before_writing(folder, tmp_path, capsys, remove, merge):
    (folder / remove).unlink()
    line = refuse(capsys, ["export", str(folder), str(tmp_path / "out"), "--merge", merge])
    assert "incomplete checkpoint folder, missing" in line and remove in line
    assert not (tmp_path / "out").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no staging folder left either


@pytest.mark.slow
def test_a_processor_that_does_not_load(folder, tmp_path, capsys):
    (folder / "tokenizer.json").unlink()
    line = refuse(capsys, ["export", str(folder), str(tmp_path / "out")])
    assert "the processor (tokenizer, image processor) does not load" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_damaged_files_are_named(folder, tmp_path, capsys):
    weights = folder / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    assert "adapter_model.safetensors: not a readable safetensors file" in refuse(
        capsys, ["export", str(folder), str(tmp_path / "out")])
    (folder / "dentvlm.json").write_text("{broken")
    assert "dentvlm.json: not readable JSON" in refuse(capsys, ["export", str(folder), str(tmp_path / "out")])


@pytest.mark.slow
def test_missing_base_model_is_named(folder, tmp_path, capsys):
    """A base model that moved is named, with the flag that points at its new place (a moved tiny model
    is rebuilt instead: see tests/integration/test_base_model.py)."""
    description = json.loads((folder / "dentvlm.json").read_text())
    description["base_model"] = description["model_hparams"]["model_path"] = str(tmp_path / "moved-away")
    (folder / "dentvlm.json").write_text(json.dumps(description))
    for merge in ("true", "false"):
        line = refuse(capsys, ["export", str(folder), str(tmp_path / "out"), "--merge", merge])
        assert "moved-away" in line and "is not there any more; pass --base_model" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
@pytest.mark.parametrize("merge", ["false", "true"])
def test_adapter_that_does_not_load_is_caught(folder, tmp_path, capsys, merge):
    weights = load_file(folder / "adapter_model.safetensors")
    renamed = {key.replace("layers.0.", "layers.99."): value for key, value in weights.items()}
    assert renamed != weights
    save_file(renamed, folder / "adapter_model.safetensors", metadata={"format": "pt"})
    line = refuse(capsys, ["export", str(folder), str(tmp_path / "out"), "--merge", merge])
    assert "do not load into the base model" in line
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_good_export_is_checked_and_appears(folder, tmp_path):
    main(["export", str(folder), str(tmp_path / "out")])
    assert (tmp_path / "out" / "adapter_model.safetensors").is_file()
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "x").write_text("mine")
    with pytest.raises(SystemExit):
        main(["export", str(folder), str(tmp_path / "taken")])
    assert (tmp_path / "taken" / "x").read_text() == "mine"


def test_a_full_model_folder_missing_a_weight_does_not_pass_the_load_check(tiny_model_dir, tmp_path):
    """The check a merged export passes before it appears (also the merged model the merge error measures)."""
    from dentvlm.export import load_full_export

    folder = tmp_path / "merged"
    shutil.copytree(tiny_model_dir, folder)
    assert load_full_export(folder) is not None
    weights = load_file(folder / "model.safetensors")
    dropped = next(k for k in weights if k.endswith("mlp.down_proj.weight"))
    save_file({k: v for k, v in weights.items() if k != dropped}, folder / "model.safetensors",
              metadata={"format": "pt"})
    with pytest.raises(ValueError, match="weights did not load"):
        load_full_export(folder)
