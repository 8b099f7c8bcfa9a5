"""`dentvlm predict`'s output folder: --overwrite replaces only what an earlier predict wrote, never the
source, its images or anything else of the user's; the new files replace the old ones by renames inside
the folder (so a separate mount at the folder cannot make a rename fail between deleting and moving)."""

import json

import pytest

from dentvlm.predict.output import MARKER, OUTPUTS, OutputFolder, check_output_folder


def publish(out, text):
    folder = OutputFolder(out)
    with folder as staging:
        for name in OUTPUTS:
            (staging / name).write_text(text)
        folder.publish()


def test_a_new_folder_gets_predicts_files_and_a_marker(tmp_path):
    out = tmp_path / "preds"
    check_output_folder(out, False, [tmp_path / "src.jsonl"])
    publish(out, "one")
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, MARKER])
    assert json.loads((out / MARKER).read_text())["files"] == list(OUTPUTS)


def test_overwrite_replaces_only_predicts_own_files(tmp_path):
    out = tmp_path / "preds"
    publish(out, "one")
    (out / "notes.txt").write_text("mine")
    (out / "images").mkdir()
    (out / "images" / "a.jpg").write_bytes(b"jpeg")
    check_output_folder(out, True, [tmp_path / "src.jsonl"])
    publish(out, "two")
    assert all((out / name).read_text() == "two" for name in OUTPUTS)
    assert (out / "notes.txt").read_text() == "mine" and (out / "images" / "a.jpg").read_bytes() == b"jpeg"


def test_overwrite_refuses_a_folder_predict_did_not_write(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "predictions.jsonl").write_text("someone else's")  # a name predict uses, but no marker
    with pytest.raises(FileExistsError, match="did not write"):
        check_output_folder(out, True, [tmp_path / "src.jsonl"])
    with pytest.raises(FileExistsError, match="--overwrite true"):
        check_output_folder(out, False, [tmp_path / "src.jsonl"])


@pytest.mark.parametrize("where", ["out", "parent", "image_root"])
def test_a_folder_holding_the_source_or_its_images_is_refused(tmp_path, where):
    export = tmp_path / "export"
    source = export / "new.jsonl"
    images = export / "Images"
    images.mkdir(parents=True)
    source.write_text("{}\n")
    out = {"out": export, "parent": tmp_path, "image_root": images}[where]
    publish_marker = out / MARKER  # even a folder an earlier predict wrote to
    publish_marker.write_text("{}")
    with pytest.raises(ValueError, match="holds the source or its images"):
        check_output_folder(out, True, [source, images])


def test_a_failed_first_run_leaves_no_folder_and_a_failed_rerun_keeps_the_old_files(tmp_path):
    out = tmp_path / "preds"
    with pytest.raises(RuntimeError), OutputFolder(out):
        raise RuntimeError("model failed")
    assert not out.exists()
    publish(out, "one")
    with pytest.raises(RuntimeError), OutputFolder(out):
        raise RuntimeError("model failed")
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, MARKER])
    assert (out / "predictions.jsonl").read_text() == "one"


def test_a_staging_folder_left_by_a_killed_run_is_not_the_users(tmp_path):
    out = tmp_path / "preds"
    out.mkdir()
    (out / ".dentvlm-predict.partial-x1").mkdir()
    check_output_folder(out, False, [tmp_path / "src.jsonl"])


def test_a_failure_while_swapping_puts_the_old_predictions_back(tmp_path, monkeypatch):
    """A rename failing half-way (old files moved aside, one new file in) moves everything back: never new
    predictions beside an old summary and marker."""
    import os

    out = tmp_path / "preds"
    publish(out, "one")
    calls = {"n": 0}
    real_replace = os.replace

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == len(OUTPUTS) + 2:  # marker and outputs moved aside, one new file moved in
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        publish(out, "two")
    monkeypatch.undo()
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, MARKER])  # no staging or aside folder
    assert all((out / name).read_text() == "one" for name in OUTPUTS)
