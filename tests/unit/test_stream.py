"""Rank/worker splitting of the stream, with every rank simulated in turn in this process.
(tests/integration/test_distributed_data.py runs the same in two real processes.)"""

from collections import Counter

import pytest

from dentvlm.data.datamodule import DentDataModule


def run_rank(shards, rank, world, workers, split="val", task="classification", batch_size=2, epoch=0, **kw):
    dm = DentDataModule(shards=str(shards), task=task, batch_size=batch_size, num_workers=workers, **kw)
    dm.rank, dm.world_size = rank, world
    loader = dm._loader(dm.stream(split, task, training=split == "train"))
    loader.epoch_fn = lambda: epoch
    batches = list(loader)
    assert len(batches) == len(loader)  # Lightning's progress total is exact
    return batches


def keys(batches, padding):
    return [e.key for b in batches for e in b if e.is_padding == padding]


@pytest.mark.parametrize("world, workers", [(1, 0), (2, 3), (3, 2)])
def test_evaluation_sees_every_sample_once_with_equal_batches_per_rank(small_shards, world, workers):
    dm = DentDataModule(shards=str(small_shards))
    expected = dm.split_size("val", "classification")
    per_rank = [run_rank(small_shards, r, world, workers) for r in range(world)]
    assert len({len(b) for b in per_rank}) == 1
    seen = [k for batches in per_rank for k in keys(batches, padding=False)]
    assert len(seen) == expected and len(set(seen)) == expected
    assert all(len(b) == 2 for batches in per_rank for b in batches)  # whole batches only


def test_more_workers_than_samples_still_yields_equal_batches(small_shards):
    per_rank = [run_rank(small_shards, r, 4, 4, batch_size=4) for r in range(4)]
    assert {len(b) for b in per_rank} == {4}
    seen = [k for batches in per_rank for k in keys(batches, padding=False)]
    assert len(seen) == len(set(seen)) == DentDataModule(shards=str(small_shards)).split_size("val", "classification")


def test_training_deals_shards_reshuffles_per_epoch_and_is_reproducible(small_shards):
    n_shards = len(DentDataModule(shards=str(small_shards)).manifest["splits"]["train"]["shards"])
    assert n_shards >= 4  # so 2 ranks x 2 workers deal whole shards
    epoch0 = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=0), False) for r in range(2)]
    again = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=0), False) for r in range(2)]
    epoch1 = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=1), False) for r in range(2)]
    assert epoch0 == again and epoch0 != epoch1
    assert not set(epoch0[0]) & set(epoch0[1])  # ranks read disjoint shards
    counts = Counter(k for rank in epoch0 for k in rank)
    assert max(counts.values()) == 1


def test_single_label_and_report_tasks_use_their_own_counts(small_shards):
    dm = DentDataModule(shards=str(small_shards), multi_label=False)
    single = dm.split_size("train", "classification")
    batches = run_rank(small_shards, 0, 1, 0, split="train", multi_label=False)
    examples = [e for b in batches for e in b if not e.is_padding]
    assert len(examples) == single and all(len(e.labels) == 1 for e in examples)
    report = [e for b in run_rank(small_shards, 0, 1, 0, task="report") for e in b]
    assert all(e.task == "report" and e.target.startswith("examination:") for e in report)


def test_manifest_that_disagrees_with_shards_fails_loudly(small_shards, tmp_path):
    import json
    import shutil

    copy = tmp_path / "shards"
    shutil.copytree(small_shards, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["splits"]["val"]["shards"][0]["tasks"]["classification"] += 1
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RuntimeError, match="the manifest says"):
        run_rank(copy, 0, 1, 0)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        DentDataModule(task="segmentation")
    with pytest.raises(ValueError, match="data.modality"):
        DentDataModule(modality="smell")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        _ = DentDataModule(shards="/nonexistent").manifest
