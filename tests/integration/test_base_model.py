"""A checkpoint records its base model by folder and by identity (its config's hash): a moved copy is
found with --base_model (or rebuilt, for the tiny model) and accepted; a different model is refused."""

import json
import shutil

import pytest

from dentvlm.base_model import base_model_folder, identity
from dentvlm.cli import main


@pytest.fixture
def moved(trained_run, tmp_path):
    """A copy of the trained checkpoint whose base model folder has moved to `new/`."""
    folder = tmp_path / "ckpt"
    shutil.copytree(trained_run / "checkpoints" / "last", folder)
    description = json.loads((folder / "dentvlm.json").read_text())
    new = tmp_path / "new"
    shutil.copytree(description["base_model"], new)
    description["base_model"] = str(tmp_path / "old-place")  # gone
    description["model_hparams"]["model_path"] = str(tmp_path / "old-place")  # not the rebuildable "tiny"
    (folder / "dentvlm.json").write_text(json.dumps(description))
    return folder, new


def test_the_checkpoint_records_its_base_models_identity(trained_run):
    description = json.loads((trained_run / "checkpoints" / "last" / "dentvlm.json").read_text())
    assert description["base_model_identity"] == identity(description["base_model"])
    assert description["shard_images"] == {"image_long_side": 112, "jpeg_quality": 85}


def test_a_moved_base_model_is_asked_for_then_recognised(moved, capsys):
    folder, new = moved
    with pytest.raises(FileNotFoundError, match="pass --base_model"):
        base_model_folder(json.loads((folder / "dentvlm.json").read_text()), folder)
    with pytest.raises(SystemExit):
        main(["export", str(folder), str(folder.parent / "out")])
    assert "is not there any more; pass --base_model" in capsys.readouterr().err
    assert base_model_folder(json.loads((folder / "dentvlm.json").read_text()), folder, str(new)) == str(new)


@pytest.mark.slow
def test_export_and_predict_take_the_moved_base_model(moved, tmp_path):
    folder, new = moved
    main(["export", str(folder), str(tmp_path / "adapter"), "--base_model", str(new)])
    config = json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(new)  # where plain peft will look
    source = tmp_path / "new.jsonl"
    source.write_text(json.dumps({"checkup_id": "c1", "chief_complaint": "Bleeding gums"}) + "\n")
    main(["predict", str(folder), str(source), str(tmp_path / "preds"), "--base_model", str(new)])
    [line] = (tmp_path / "preds" / "predictions.jsonl").read_text().splitlines()
    assert json.loads(line)["checkup_id"] == "c1"


def test_serve_takes_the_moved_base_model(moved, monkeypatch):
    """The request checks (the context length is the base model's) and the worker's model load both find it."""
    import dentvlm.processes
    import dentvlm.serve.api
    from dentvlm.openai_chat import ImageLimits
    from dentvlm.serve.requests import ServingLimits
    from dentvlm.serve.server import build_server

    # a worker's signal settings (Ctrl+C ignored) would outlive this test in pytest and every process it starts
    monkeypatch.setattr(dentvlm.serve.api, "quiet_child", lambda: None)
    monkeypatch.setattr(dentvlm.processes, "die_with_parent", lambda: None)
    folder, new = moved
    limits = ServingLimits(ImageLimits(), 64, 16)
    with pytest.raises(FileNotFoundError, match="pass --base_model"):
        build_server(str(folder), limits)
    api = build_server(str(folder), limits, base_model=str(new)).lit_api
    api.setup("cpu")  # what each inference worker does
    assert api.model.base == str(new)


def test_a_different_model_is_refused(moved, trained_run, tmp_path, capsys):
    folder, new = moved
    other = tmp_path / "other"
    shutil.copytree(new, other)
    config = json.loads((other / "config.json").read_text())
    config["text_config"]["rope_theta"] = 12345.0  # another model, however alike its files look
    (other / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="not the base model this checkpoint was trained on"):
        base_model_folder(json.loads((folder / "dentvlm.json").read_text()), folder, str(other))
    with pytest.raises(SystemExit):
        main(["test", "--config", str(trained_run / "checkpoints" / "last" / "config.yaml"),
              "--ckpt_path", str(trained_run / "checkpoints" / "last.ckpt"), "--model.model_path", str(other),
              "--trainer.default_root_dir", str(tmp_path / "t")])
    assert "is not the base model" in capsys.readouterr().err
