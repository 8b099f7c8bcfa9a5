"""`--overwrite` builds beside the target and swaps in only a complete build; it deletes only the files
the old manifest lists (issue class: data loss on rebuild)."""

import json
import shutil

import pytest

from dentvlm.ingest.common import IngestError
from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards, load_manifest

POLICY = ImagePolicy(long_side=32, jpeg_quality=80)


def shard(source, out, **kwargs):
    kwargs = {"max_count": 5, **kwargs}
    return build_shards(source, out, salt="s", val=0.2, test=0.2, policy=POLICY, workers=1, progress=False,
                        **kwargs)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def built(synth_release, tmp_path):
    out = tmp_path / "shards"
    shard(synth_release, out)
    return out


def broken_release(synth_release, tmp_path):
    root = tmp_path / "broken"
    shutil.copytree(synth_release, root)
    victim = sorted((root / "Images" / "Photographs").iterdir())[7]
    victim.write_bytes(b"not a jpeg")
    return root


def test_failed_rebuild_leaves_the_old_dataset_untouched(synth_release, built, tmp_path):
    before = snapshot(built)
    with pytest.raises(IngestError, match="corrupt_image"):
        shard(broken_release(synth_release, tmp_path), built, overwrite=True, strict=True, max_count=3)
    assert snapshot(built) == before
    assert load_manifest(built)["splits"]["train"]["checkups"] > 0
    assert not [p for p in tmp_path.iterdir() if ".building-" in p.name]  # the build folder is gone


def test_disk_full_while_writing_leaves_it_too(synth_release, built, tmp_path, monkeypatch):
    before = snapshot(built)
    from dentvlm import sharding

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(sharding, "_write_json_atomic", disk_full)
    with pytest.raises(OSError, match="No space left"):
        shard(synth_release, built, overwrite=True)
    assert snapshot(built) == before


def test_overwrite_deletes_only_what_the_old_manifest_lists(synth_release, built):
    (built / "my-backup-2023.tar").write_bytes(b"precious")
    (built / "README.md").write_text("notes")
    (built / "train-000000.tar.partial").write_bytes(b"leftover of an older tool")
    old_shards = {p.name for p in built.glob("*-0000*.tar")}
    assert len(old_shards) > 5
    shard(synth_release, built, overwrite=True, max_count=1000)  # fewer, bigger shards
    names = {p.name for p in built.iterdir()}
    assert {"my-backup-2023.tar", "README.md", "train-000000.tar.partial"} <= names
    assert (built / "my-backup-2023.tar").read_bytes() == b"precious"
    listed = {s["file"] for split in load_manifest(built)["splits"].values() for s in split["shards"]}
    assert listed == {"train-000000.tar", "val-000000.tar", "test-000000.tar"}
    assert {n for n in names if n.endswith(".tar")} == listed | {"my-backup-2023.tar"}  # old extra shards gone


def test_refuses_shard_named_files_its_manifest_does_not_list(synth_release, built):
    (built / "train-000099.tar").write_bytes(b"someone else's")
    before = snapshot(built)
    with pytest.raises(IngestError, match=r"train-000099.tar.*does not list"):
        shard(synth_release, built, overwrite=True)
    assert snapshot(built) == before


def test_refuses_when_the_old_manifest_cannot_say_what_to_delete(synth_release, built):
    manifest = json.loads((built / "manifest.json").read_text())
    manifest["splits"]["train"]["shards"][0]["file"] = "../../home/user/thesis.tar"
    (built / "manifest.json").write_text(json.dumps(manifest))
    before = snapshot(built)
    with pytest.raises(IngestError, match="cannot tell which files are shards"):
        shard(synth_release, built, overwrite=True)
    assert snapshot(built) == before
    (built / "manifest.json").write_text("{not json")
    with pytest.raises(IngestError, match="cannot tell which files are shards"):
        shard(synth_release, built, overwrite=True)


def test_new_folder_and_empty_folder(synth_release, tmp_path):
    nested = tmp_path / "a" / "b" / "shards"
    shard(synth_release, nested)
    assert load_manifest(nested)["version"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    shard(synth_release, empty)
    assert (empty / "manifest.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "empty"]  # no build folders left
    (tmp_path / "file").write_text("x")
    with pytest.raises(IngestError, match="not a folder"):
        shard(synth_release, tmp_path / "file")


def test_a_failure_while_swapping_puts_the_old_dataset_back(synth_release, built, monkeypatch):
    """Renames can fail half-way (a full inode table, a permission, another mount): everything already
    moved goes back, and no old file was deleted before its replacement was in place."""
    import dentvlm.shard_folder as shard_folder

    before = snapshot(built)
    calls = {"n": 0}
    real_replace = shard_folder.os.replace

    def flaky(src, dst):
        calls["n"] += 1
        if calls["n"] == len(before) + 2:  # every old file moved aside, one new file moved in
            raise OSError(28, "No space left on device")
        real_replace(src, dst)

    monkeypatch.setattr(shard_folder.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        shard(synth_release, built, overwrite=True, seed=5)
    monkeypatch.undo()
    assert snapshot(built) == before
    assert [p.name for p in built.iterdir() if p.name.startswith(".")] == []  # no build or aside folder left
