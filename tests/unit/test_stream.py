"""Rank/worker splitting of the stream, with every rank simulated in turn in this process.
(tests/integration/test_distributed_data.py runs the same in two real processes.)"""

import random
from collections import Counter
from dataclasses import dataclass

import pytest

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.stream import CheckupStream, _NextEpoch


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
    for batches in per_rank:  # whole batches, but the last of each worker may be short (no needless padding)
        workers = max(1, workers)
        assert all(len(b) == 2 for b in batches[:-workers]) and all(1 <= len(b) <= 2 for b in batches)


def test_more_workers_than_samples_still_yields_equal_batches(small_shards):
    per_rank = [run_rank(small_shards, r, 4, 4, batch_size=4) for r in range(4)]
    assert {len(b) for b in per_rank} == {4}
    seen = [k for batches in per_rank for k in keys(batches, padding=False)]
    assert len(seen) == len(set(seen)) == DentDataModule(shards=str(small_shards)).split_size("val", "classification")


def test_training_reads_every_sample_once_reshuffles_per_epoch_and_is_reproducible(small_shards):
    dm = DentDataModule(shards=str(small_shards))
    assert len(dm.manifest["splits"]["train"]["shards"]) >= 4  # 2 ranks x 2 workers: parts of several shards
    epoch0 = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=0), False) for r in range(2)]
    again = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=0), False) for r in range(2)]
    epoch1 = [keys(run_rank(small_shards, r, 2, 2, split="train", epoch=1), False) for r in range(2)]
    assert epoch0 == again and epoch0 != epoch1
    for epoch in (epoch0, epoch1):  # every training sample, once, whatever the epoch's shard order
        seen = [k for rank in epoch for k in rank]
        assert len(seen) == len(set(seen)) == dm.split_size("train", "classification")
    assert abs(len(epoch0[0]) - len(epoch0[1])) <= 2  # balanced: parts differ by a sample per worker


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
    with pytest.raises(ValueError, match="the manifest"):
        run_rank(copy, 0, 1, 0)


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="unknown task 'segmentation'"):
        DentDataModule(task="segmentation")
    with pytest.raises(ValueError, match="data.modality"):
        DentDataModule(modality="smell")
    with pytest.raises(FileNotFoundError, match="does not exist, so no manifest.json"):
        _ = DentDataModule(shards="/nonexistent").manifest


class DropSome:
    """make_example that drops (returns None for) every sample whose key is in `dropped`."""

    def __init__(self, maker, dropped):
        self.maker, self.dropped = maker, set(dropped)

    def __call__(self, sample, is_padding):
        if sample.checkup.key in self.dropped and not is_padding:
            return None
        return self.maker(sample, is_padding)


def test_dropped_samples_are_counted_and_padding_spreads_over_distinct_checkups(small_shards):
    dm = DentDataModule(shards=str(small_shards), batch_size=2, num_workers=0)
    stream = dm.stream("train", "classification", training=True)
    every = [e.key for e in stream]
    dropped = every[1::2][: len(every) // 2]  # half of the split cannot be encoded
    stream.make_example = DropSome(stream.make_example, dropped)
    examples = list(stream)
    batches = -(-len(examples) // stream.batch_size)
    assert batches == stream.samples_per_worker // stream.batch_size  # batch counts do not change
    real = [e for e in examples if not e.is_padding]
    padding = [e for e in examples if e.is_padding]
    assert {e.key for e in real} == set(every) - set(dropped)
    assert sum(e.dropped_before for e in examples) == len(dropped)  # every drop reported once
    counts = Counter(e.key for e in padding)
    assert max(counts.values()) - min(counts.values()) <= 1  # padding cycles through distinct checkups
    assert len(counts) == min(len(padding), len(real))


def label_purity(examples, batch_size: int) -> float:
    """Fraction of batches whose rows all have the same answer."""
    batches = [examples[i : i + batch_size] for i in range(0, len(examples), batch_size)]
    return sum(len({e.target for e in b}) == 1 for b in batches) / len(batches)


@dataclass
class Sized:
    """What grouping sees of an encoded example."""

    prompt_len: int
    target: str

    def __len__(self) -> int:
        return self.prompt_len + len(self.target.split())


def test_length_grouping_does_not_group_labels():
    """When the answer's length tracks the label (here: 1 to 4 words per class) and prompts are alike
    (one image and the same neutral text per sample, as in an image-only task), sorting by total
    length made one-label batches; prompt-length buckets in random order leave batches as mixed
    as no grouping does."""
    rng = random.Random(0)
    answers = ["caries", "dentition defect", "acute gingival papillitis", "none of the six"]
    examples = [Sized(rng.choice((300, 300, 301, 317)), rng.choice(answers)) for _ in range(512)]

    def purity(length_of, bucket: int) -> float:
        stream = CheckupStream([], None, None, batch_size=4, training=True, group_by_length=8,
                               length_of=length_of, length_bucket=bucket)
        return label_purity(list(stream._grouped(iter(examples), random.Random(1))), 4)

    ungrouped = label_purity(examples, 4)  # chance: 4 / 4^4, about 1.6%
    assert purity(len, 1) > ungrouped + 0.1  # the old grouping: exact sorting by total length
    assert purity(lambda e: e.prompt_len, 8) <= ungrouped + 0.03  # dentvlm's default bucket


def test_persistent_workers_follow_the_epoch(small_shards):
    """Persistent DataLoader workers keep their copy of the stream between epochs; the epoch set in
    the main process must still reach them (shared memory), or every epoch would replay epoch 0. They
    also prepare their next epoch while idle: epochs 1 and 4 come from that, epoch 3 (a jump, as on a
    resumed run) discards the prepared epoch 2; every epoch is what fresh workers give."""
    order = [0, 1, 3, 4]
    fresh = [keys(run_rank(small_shards, 0, 1, 2, split="train", epoch=e, persistent_workers=False), False)
             for e in order]
    dm = DentDataModule(shards=str(small_shards), batch_size=2, num_workers=2, persistent_workers=True)
    loader = dm._loader(dm.stream("train", "classification", training=True))
    epochs = iter(order)
    loader.epoch_fn = lambda: next(epochs)
    persistent = [keys(list(loader), False) for _ in order]
    assert loader._iterator is not None  # the same workers served every epoch
    assert persistent == fresh and len({tuple(k) for k in fresh}) == len(order)


def test_the_next_epoch_made_ahead_is_that_epoch_and_keeps_its_errors(small_shards):
    dm = DentDataModule(shards=str(small_shards), batch_size=2)
    stream = dm.stream("train", "classification", training=True)
    ahead = _NextEpoch(stream, 1, 0)
    assert [e.key for e in ahead.take()] == [e.key for e in stream._examples(1, 0)]

    def broken(sample, is_padding):
        raise ValueError("train-000001.tar: truncated")

    stream.make_example = broken
    with pytest.raises(ValueError, match="truncated"):  # raised where the epoch is read, not lost in the thread
        list(_NextEpoch(stream, 2, 0).take())


def test_one_process_pads_nothing_when_a_short_last_batch_will_do(small_shards):
    dm = DentDataModule(shards=str(small_shards), batch_size=5, num_workers=0)  # 24 training checkups
    stream = dm.stream("train", "classification", training=True)
    examples = list(stream)
    assert not any(e.is_padding for e in examples)
    assert len(examples) == dm.split_size("train", "classification") and len(examples) % 5  # a short last batch
    assert len(dm._loader(stream)) == -(-len(examples) // 5)
