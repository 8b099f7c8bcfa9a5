import csv
import json
import shutil
import tarfile

import pytest
from PIL import Image

from dentvlm.ingest.common import IngestError
from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards, load_manifest

POLICY = ImagePolicy(long_side=48, jpeg_quality=80, max_source_pixels=5_000_000)


def damaged_copy(release, tmp_path):
    """The synthetic release with one of each kind of bad input, and patient names added."""
    root = tmp_path / "release"
    shutil.copytree(release, root)
    csv_path = root / "complete_dataset.csv"
    with csv_path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    photos = root / "Images" / "Photographs"
    first = lambda row: row["photographs"].split(",")[0]  # noqa: E731
    (photos / first(rows[0])).write_bytes(b"garbage")  # corrupt
    data = (photos / first(rows[1])).read_bytes()
    (photos / first(rows[1])).write_bytes(data[: len(data) // 3])  # truncated
    (photos / first(rows[2])).unlink()  # listed but absent
    Image.new("1", (4000, 4000)).save(photos / first(rows[3]), format="PNG")  # bomb under a .jpg name
    rows[4]["anomalies_en"] = ""  # empty diagnosis
    for number, row in enumerate(rows):
        row["patient_name"] = f"Zelda Testperson{number}"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root, rows


def shard(source, out, **kwargs):
    return build_shards(source, out, salt="s", val=0.2, test=0.2, policy=POLICY, max_count=5, workers=1,
                        progress=False, **kwargs)


def test_bad_inputs_are_skipped_counted_and_identity_never_leaves(synth_release, tmp_path, capsys):
    source, rows = damaged_copy(synth_release, tmp_path)
    manifest = shard(source, tmp_path / "out")
    assert manifest["skipped"] == {
        "checkups": {"empty_diagnosis": 1},
        "images": {"corrupt_image": 1, "decompression_bomb": 1, "missing_image": 1, "truncated_image": 1},
    }
    splits = manifest["splits"]
    assert sum(s["checkups"] for s in splits.values()) == len(rows) - 1
    assert "1 checkups skipped (empty_diagnosis: 1)" in capsys.readouterr().err
    assert manifest["source"]["columns_ignored"] == ["patient_name", "visit_date"]
    # no patient id, checkup id, name or source file name in any shard or the manifest
    blob = (tmp_path / "out" / "manifest.json").read_bytes()
    for tar_path in (tmp_path / "out").glob("*.tar"):
        with tarfile.open(tar_path) as tar:
            for member in tar.getmembers():
                blob += member.name.encode() + tar.extractfile(member).read()
    for row in rows:
        for value in (row["patient_id"], row["checkup_id"], row["patient_name"], row["photographs"].split(",")[0]):
            assert value.encode() not in blob, value


def test_strict_stops_at_the_first_bad_input_naming_it(synth_release, tmp_path):
    source, rows = damaged_copy(synth_release, tmp_path)
    with pytest.raises(IngestError, match=r"complete_dataset.csv row 5 .*empty 'anomalies_en'.*empty_diagnosis"):
        shard(source, tmp_path / "out", strict=True)
    csv_path = source / "complete_dataset.csv"
    csv_path.write_text(csv_path.read_text().replace(",,Zelda Testperson4", ",Caries,Zelda Testperson4"))
    # with the rows mended, the first bad image stops it, named by row and file
    with pytest.raises(IngestError, match=r"complete_dataset.csv row \d+ \(line \d+\): .*Photographs/C\d+_P1.jpg"):
        shard(source, tmp_path / "out2", strict=True)


def test_manifest_counts_and_patient_level_split(small_shards):
    manifest = load_manifest(small_shards)
    patients = {}
    total = 0
    for split, info in manifest["splits"].items():
        assert sum(s["samples"] for s in info["shards"]) == info["checkups"]
        assert all(s["samples"] <= 6 for s in info["shards"])
        for shard in info["shards"]:
            for sample in _records(small_shards / shard["file"]):
                assert patients.setdefault(sample["patient"], split) == split
                total += 1
        assert info["tasks"]["classification"] == sum(s["tasks"].get("classification", 0) for s in info["shards"])
    assert total == 40 and manifest["classes"][0] == "malocclusion"


def _records(path):
    with tarfile.open(path) as tar:
        for member in tar.getmembers():
            if member.name.endswith(".json"):
                yield json.loads(tar.extractfile(member).read())


def test_refuses_to_clobber(synth_release, small_shards, tmp_path):
    with pytest.raises(IngestError, match="already holds shards; pass --overwrite"):
        shard(synth_release, small_shards)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(IngestError, match="not a shard folder"):
        shard(synth_release, tmp_path)


def test_sharegpt_fixture_to_shards(sharegpt_fixture, tmp_path):
    manifest = build_shards(sharegpt_fixture, tmp_path, salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False)
    assert manifest["splits"]["train"]["tasks"] == {"chat": 6}
    assert manifest["splits"]["train"]["images"]["photograph"] == 8


def test_a_mistyped_shard_folder_is_answered_with_the_near_one(small_shards, tmp_path, monkeypatch):
    parent = tmp_path / "shards"
    shutil.copytree(small_shards, parent / "demo")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"did you mean shards/demo\?"):
        load_manifest("shard/demo")
    with pytest.raises(FileNotFoundError) as absolute:
        load_manifest(tmp_path / "shards" / "dem")
    assert f"did you mean {parent / 'demo'}?" in str(absolute.value)
    with pytest.raises(FileNotFoundError) as unrelated:
        load_manifest("elsewhere/demo")
    assert "did you mean" not in str(unrelated.value)
