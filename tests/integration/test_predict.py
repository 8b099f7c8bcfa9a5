"""`dentvlm predict` on checkups the model never saw: a COde-layout folder without anomalies_en, and a JSONL
file with a checkup without images, one with a corrupt image and one whose image path leaves its folder."""

import csv
import json

import pytest

from dentvlm.cli import main
from dentvlm.synth import write_synthetic_release

DIAGNOSIS_COLUMNS = ("anomalies_en", "diagnosis", "treatment_plan", "treatment_advice", "doctors_orders", "remarks")


@pytest.fixture(scope="module")
def clinic(tmp_path_factory):
    """Four new checkups in the COde layout, their diagnoses removed, plus a JSONL of three more."""
    root = tmp_path_factory.mktemp("clinic")
    release = write_synthetic_release(root / "export", num_checkups=4, seed=901, photo_size=(160, 120),
                                      radiograph_size=(160, 80))
    table = release / "complete_dataset.csv"
    with table.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns = [c for c in rows[0] if c not in DIAGNOSIS_COLUMNS]
    with table.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    photos = release / "Images" / "Photographs"
    (photos / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 64)
    first_photo = rows[0]["photographs"].split(",")[0].strip()
    lines = [
        {"checkup_id": "clinic-001", "age": 34, "gender": "female", "chief_complaint": "Bleeding gums",
         "photographs": [f"Images/Photographs/{first_photo}", "Images/Photographs/corrupt.jpg"]},
        {"checkup_id": "clinic-002", "age": "51", "chief_complaint": "A lower molar is missing",
         "examination": "46 missing, 36 intact"},
        {"checkup_id": "clinic-003", "chief_complaint": "Pain", "photographs": "../../outside.jpg"},
    ]
    jsonl = release / "new.jsonl"
    jsonl.write_text("".join(json.dumps(line) + "\n" for line in lines) + "{not json\n")
    return release, [r["checkup_id"] for r in rows]


def read(out):
    lines = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    return lines, json.loads((out / "summary.json").read_text())


@pytest.mark.slow
def test_predict_jsonl_with_missing_and_corrupt_images(trained_run, clinic, tmp_path, capsys):
    release, _ = clinic
    out = tmp_path / "pred"
    main(["predict", str(trained_run / "checkpoints" / "last.ckpt"), str(release / "new.jsonl"), str(out),
          "--tasks", "[classification, report]", "--max_new_tokens", "8"])
    lines, summary = read(out)
    assert [line["checkup_id"] for line in lines] == ["clinic-001", "clinic-002", "clinic-003"]  # source order
    first, second, third = lines
    assert first["images"] == {"used": 1, "not_shown": 0, "skipped": [{"position": 2, "modality": "photograph",
                                                                        "reason": "corrupt_image"}]}
    assert second["images"] == {"used": 0, "not_shown": 0, "skipped": []}  # no images: text only
    for line in (first, second):
        assert set(line["classification"]) == {"answer", "labels", "negated", "uncertain"}
        assert line["classification"]["answer"]
        assert set(line["report"]) == {"answer", "labels", "negated", "uncertain", "sections"}
        labels = line["classification"]["labels"]
        assert labels is None or set(labels) <= set(summary["classes"])
    assert third["skipped"] == "image_outside_source" and "outside" in third["message"]
    assert summary["checkups"] == {"read": 4, "predicted": 2,
                                   "skipped": {"image_outside_source": 1, "malformed_row": 1}}
    assert summary["images"] == {"used": 1, "not_shown": 0, "skipped": {"corrupt_image": 1}}
    assert summary["image_long_side"] == 112  # the demo shards the checkpoint was trained on
    err = capsys.readouterr().err
    assert "2 of 4 checkups predicted" in err and "corrupt.jpg" in err


@pytest.mark.slow
def test_predict_code_layout_without_diagnoses(trained_run, clinic, tmp_path):
    release, ids = clinic
    out = tmp_path / "pred"
    main(["predict", str(trained_run / "checkpoints" / "last"), str(release), str(out), "--max_new_tokens", "6",
          "--batch_size", "3"])
    lines, summary = read(out)
    assert [line["checkup_id"] for line in lines] == ids  # the clinic's own ids, in its order
    assert all("classification" in line and "report" not in line for line in lines)  # the checkpoint's task
    assert summary["checkups"]["predicted"] == 4 and summary["images"]["used"] >= 4
    # "used" counts what the model was shown: at most max_images per checkup, the rest is "not shown"
    assert all(line["images"]["used"] <= 8 for line in lines)
    assert summary["images"]["used"] == sum(line["images"]["used"] for line in lines)
    with pytest.raises(SystemExit):  # an existing output folder is never overwritten silently
        main(["predict", str(trained_run / "checkpoints" / "last"), str(release), str(out)])


@pytest.mark.slow
def test_predict_strict_stops_at_the_first_bad_row(trained_run, clinic, tmp_path, capsys):
    release, _ = clinic
    with pytest.raises(SystemExit):
        main(["predict", str(trained_run / "checkpoints" / "last"), str(release / "new.jsonl"),
              str(tmp_path / "pred"), "--strict", "true"])
    err = capsys.readouterr().err
    assert "new.jsonl line 1" in err and "corrupt_image" in err
    assert not (tmp_path / "pred").exists()


def test_predict_never_deletes_the_source_folder(clinic, tmp_path, capsys, monkeypatch):
    """--overwrite into the folder that holds the source JSONL and its images: refused, nothing touched
    (it used to delete the whole folder, source included, and exit 0)."""
    import dentvlm.inference.load as load

    monkeypatch.setattr(load, "load_for_inference", lambda *a, **k: pytest.fail("refused before loading the model"))
    release, _ = clinic
    before = sorted(p.relative_to(release) for p in release.rglob("*"))
    with pytest.raises(SystemExit) as info:
        main(["predict", "tiny", str(release / "new.jsonl"), str(release), "--overwrite", "true"])
    assert info.value.code == 1
    assert "holds the source or its images" in capsys.readouterr().err
    assert sorted(p.relative_to(release) for p in release.rglob("*")) == before


@pytest.mark.slow
def test_images_over_max_images_are_counted_as_not_shown(trained_run, clinic, tmp_path):
    release, _ = clinic
    out = tmp_path / "pred"
    main(["predict", str(trained_run / "checkpoints" / "last"), str(release), str(out), "--max_new_tokens", "2",
          "--max_images", "1"])
    lines, summary = read(out)
    assert all(line["images"]["used"] == 1 for line in lines)
    assert summary["images"]["not_shown"] == sum(line["images"]["not_shown"] for line in lines) > 0
