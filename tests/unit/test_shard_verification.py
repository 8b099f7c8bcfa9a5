"""The reader checks every shard it reads to the end against the manifest (sample count and SHA-256), in
training as in evaluation (issue class: silent sample loss when reading)."""

import json
import shutil
import tarfile

import pytest

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.shards import iter_shard
from dentvlm.sharding import load_manifest


@pytest.fixture
def shards(small_shards, tmp_path):
    copy = tmp_path / "shards"
    shutil.copytree(small_shards, copy)
    return copy


def read_all(shards, split, training, rank=0, world=1, workers=0, batch_size=2):
    data = DentDataModule(shards=str(shards), batch_size=batch_size, num_workers=workers)
    data.rank, data.world_size = rank, world
    loader = data._loader(data.stream(split, "classification", training=training))
    loader.epoch_fn = lambda: 0
    return [e for batch in loader for e in batch]


def first_shard(shards, split="train") -> tuple[dict, object]:
    entry = load_manifest(shards)["splits"][split]["shards"][0]
    return entry, shards / entry["file"]


def cut_after_sample(path, keep: int) -> None:
    """Truncate a shard right after its `keep`-th sample, at a member boundary, with no end marker."""
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    keys, end = [], 0
    for member in members:
        key = member.name.split(".", 1)[0]
        if key not in keys:
            if len(keys) == keep:
                break
            keys.append(key)
        end = member.offset_data + -(-member.size // 512) * 512
    with open(path, "r+b") as handle:
        handle.truncate(end)


def rewrite_without_last_sample(path) -> None:
    """A valid tar (end marker and all) holding one sample fewer."""
    with tarfile.open(path) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    last = members[-1][0].name.split(".", 1)[0]
    import io

    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for member, data in members:
            if member.name.split(".", 1)[0] != last:
                tar.addfile(member, io.BytesIO(data))


TRAINING_LAYOUTS = {"one-process": dict(world=1, workers=0), "dealt-shards": dict(world=2, workers=2)}


@pytest.mark.parametrize("layout", sorted(TRAINING_LAYOUTS))
@pytest.mark.parametrize("damage", ["cut-at-sample-boundary", "valid-tar-one-sample-fewer"])
def test_training_stops_on_a_shorter_shard_naming_it(shards, layout, damage):
    entry, path = first_shard(shards)
    assert entry["samples"] >= 2
    if damage == "cut-at-sample-boundary":
        cut_after_sample(path, entry["samples"] // 2)
    else:
        rewrite_without_last_sample(path)
    settings = TRAINING_LAYOUTS[layout]
    with pytest.raises(ValueError, match=rf"{entry['file']}: read \d+ samples, the manifest lists {entry['samples']}"):
        for rank in range(settings["world"]):
            read_all(shards, "train", training=True, rank=rank, world=settings["world"], workers=settings["workers"])


def test_evaluation_stops_too(shards):
    entry, path = first_shard(shards, "val")
    cut_after_sample(path, 1)
    with pytest.raises(ValueError, match=rf"{entry['file']}: read 1 samples"):
        read_all(shards, "val", training=False)


@pytest.mark.parametrize("delta", [-1, 1])
def test_manifest_counts_that_disagree_with_the_tars(shards, delta):
    manifest = json.loads((shards / "manifest.json").read_text())
    entry = manifest["splits"]["train"]["shards"][1]
    entry["samples"] += delta
    (shards / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match=rf"{entry['file']}: read {entry['samples'] - delta} samples"):
        read_all(shards, "train", training=True)


def test_a_changed_byte_fails_the_checksum(shards):
    entry, path = first_shard(shards, "test")
    data = bytearray(path.read_bytes())
    with tarfile.open(path) as tar:
        image = next(m for m in tar.getmembers() if m.name.endswith(".img0.jpg"))
    data[image.offset_data + image.size // 2] ^= 0x01  # same size, same count, other pixels
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"{entry['file']}: contents differ from the manifest's checksum"):
        read_all(shards, "test", training=False)


def test_an_intact_shard_reads_clean_and_checks_pass(shards):
    entry, path = first_shard(shards)
    samples = list(iter_shard(path, entry["samples"], entry["sha256"]))
    assert len(samples) == entry["samples"]


def test_old_and_hostile_manifests_are_refused_with_a_rebuild_hint(shards):
    manifest = json.loads((shards / "manifest.json").read_text())
    old = json.loads(json.dumps(manifest))
    old["version"] = 1
    for split in old["splits"].values():
        for shard in split["shards"]:
            del shard["sha256"]
    (shards / "manifest.json").write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"version 1, this dentvlm reads version 2; rebuild the shards with "
                                         r"`dentvlm shard"):
        load_manifest(shards)
    hostile = json.loads(json.dumps(manifest))
    hostile["splits"]["train"]["shards"][0]["file"] = "../../elsewhere/train-000000.tar"
    (shards / "manifest.json").write_text(json.dumps(hostile))
    with pytest.raises(ValueError, match="not shard file names"):
        load_manifest(shards)
    (shards / "manifest.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="not a readable manifest"):
        load_manifest(shards)


def test_a_missing_shard_is_named(shards):
    entry, path = first_shard(shards)
    path.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{entry['file']}: shard not found"):
        read_all(shards, "train", training=True)
