"""A webdataset stream split over ranks and DataLoader workers with equal batch counts everywhere.

Uneven ranks are the classic webdataset hang under DDP/FSDP: one rank runs out of data and stops
calling the collectives the others wait in. Here every worker of every rank yields exactly
`samples_per_worker / batch_size` batches (the last one possibly short), known before reading from
the manifest's per-shard counts:

- every worker (of every rank) takes a contiguous part of the split's eligible samples in the
  shards' order (per epoch, a new permutation of the shards in training): each sample is read by
  one worker, parts differ by one sample at most, and a worker opens only the shards its part
  touches (about one pass over the data when there are more shards than workers);
- a worker short of a batch repeats its own samples, flagged as padding (their labels are all
  -100: they never train or score; they only keep every rank in step), but only as many as its
  last batch needs to exist: a short last batch is fine, an absent one is not.
"""

from __future__ import annotations

import itertools
import math
import multiprocessing
import random
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import IterableDataset
from webdataset.filters import _shuffle

from dentvlm.data.shards import ShardSample, iter_shard

PADDING_POOL = 64


@dataclass(frozen=True)
class ShardRef:
    """A shard file and how many of its samples serve the stream's task; with the manifest's sample
    count and checksum, reading the shard to its end verifies both."""

    path: str
    eligible: int
    samples: int | None = None
    sha256: str | None = None


class CheckupStream(IterableDataset):
    """Iterable dataset of examples built by `make_example` from the eligible samples of `shards`.

    Args:
        shards: The split's shards with their eligible-sample counts (from the manifest).
        eligible: Predicate on a shard sample; must agree with the manifest's counts.
        make_example: Builds the example (decode, format, encode); second argument is `is_padding`.
            It returns None to drop a sample, whose place is then filled with padding.
        batch_size: Per-device batch size; each worker yields whole batches.
        training: Shuffle shards per epoch, and samples per epoch, rank and worker.
        seed: Base seed of every shuffle.
        shuffle_buffer: Samples held by each worker's shuffle buffer (training only).
        group_by_length: When > 1, order each window of `group_by_length` batches by
            `length_of` // `length_bucket` (random order inside a bucket) so batches hold similar
            lengths (less padding), then shuffle the batch order.
        length_of: Length of an example, used by `group_by_length` (the datamodule uses the prompt
            length, which does not depend on the answer and so on the label).
        length_bucket: Width of a length bucket, in tokens.
    """

    def __init__(
        self,
        shards: list[ShardRef],
        eligible: Callable[[ShardSample], bool],
        make_example: Callable[[ShardSample, bool], Any],
        batch_size: int,
        training: bool,
        seed: int = 0,
        shuffle_buffer: int = 256,
        group_by_length: int = 0,
        length_of: Callable[[Any], int] | None = None,
        length_bucket: int = 1,
    ):
        self.shards, self.eligible, self.make_example = shards, eligible, make_example
        self.batch_size, self.training, self.seed = batch_size, training, seed
        self.shuffle_buffer, self.group_by_length, self.length_of = shuffle_buffer, group_by_length, length_of
        self.length_bucket = max(1, length_bucket)
        self.rank, self.world_size, self.num_workers = 0, 1, 0
        # Shared memory, so that persistent DataLoader workers (which keep their own copy of this
        # object between epochs) see the epoch the main process sets before each pass.
        self._epoch = multiprocessing.Value("i", 0, lock=False)
        self._ahead: _NextEpoch | None = None  # a DataLoader worker's start of its next epoch
        self.prepare_next_epoch = False  # set by the loader when its workers persist between epochs

    @property
    def epoch(self) -> int:
        return self._epoch.value

    @epoch.setter
    def epoch(self, value: int) -> None:
        self._epoch.value = value

    def distribute(self, rank: int, world_size: int, num_workers: int) -> None:
        """Set this process's place; call before the DataLoader is built."""
        self.rank, self.world_size, self.num_workers = rank, world_size, num_workers

    @property
    def total_eligible(self) -> int:
        return sum(s.eligible for s in self.shards)

    @property
    def total_workers(self) -> int:
        return self.world_size * max(1, self.num_workers)

    @property
    def samples_per_worker(self) -> int:
        """Room every worker has: its fair share, rounded up to whole batches (it yields that many
        batches; the last one may be short)."""
        share = math.ceil(self.total_eligible / self.total_workers)
        return math.ceil(share / self.batch_size) * self.batch_size

    def __len__(self) -> int:
        """Batch slots of this rank per epoch (all of its workers together): the DataLoader's length
        is this / batch_size, exactly the batches it yields."""
        return max(1, self.num_workers) * self.samples_per_worker

    def _shard_order(self, epoch: int) -> list[ShardRef]:
        order = list(self.shards)
        if self.training:  # the same permutation on every rank and worker: the parts must not overlap
            random.Random(f"{self.seed}:shards:{epoch}").shuffle(order)
        return order

    def _global_worker(self) -> int:
        info = torch.utils.data.get_worker_info()
        workers = info.num_workers if info else 0
        if workers != self.num_workers:
            raise RuntimeError(f"stream set up for {self.num_workers} workers, DataLoader runs {workers}")
        return self.rank * max(1, self.num_workers) + (info.id if info else 0)

    def __iter__(self) -> Iterator[Any]:
        worker, epoch = self._global_worker(), self.epoch
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead.epoch == epoch:
            examples = ahead.take()
        else:
            if ahead is not None:
                ahead.discard()
            examples = self._examples(epoch, worker)
        del ahead  # the prepared window is handed over, not kept for the whole epoch
        yield from examples
        # The worker has yielded its epoch; until the main process starts the next one (after the
        # batches still queued, and validation), it would sit idle while the next epoch's first
        # window of examples (shuffle buffer, grouping window: tens of encoded examples) makes the
        # trainer wait at every epoch start. Prepare them now, in the persistent worker's own time.
        if self.training and self.prepare_next_epoch and torch.utils.data.get_worker_info() is not None:
            self._ahead = _NextEpoch(self, epoch + 1, worker)

    def _examples(self, epoch: int, worker: int) -> Iterator[Any]:
        """The worker's examples of `epoch`, in order (reads self's settings, never `self.epoch`)."""
        own = self._own_samples(worker, epoch)
        if self.training:
            rng = random.Random(f"{self.seed}:buffer:{epoch}:{worker}")
            own = _shuffle(own, bufsize=self.shuffle_buffer, initial=self.shuffle_buffer, rng=rng)
        examples = self._padded(own, self.samples_per_worker, worker, epoch)
        if self.group_by_length > 1 and self.length_of is not None:
            examples = self._grouped(examples, random.Random(f"{self.seed}:groups:{epoch}:{worker}"))
        return examples

    def _own_samples(self, worker: int, epoch: int) -> Iterator[ShardSample]:
        """The worker's contiguous part of the split's eligible samples, in this epoch's shard order:
        [worker x N / W, (worker + 1) x N / W), so every sample is read by one worker and parts differ
        by one sample at most. A shard inside the part is read whole (its count and checksum are
        checked at its end); a shard split between workers is read from its start by each of them, and
        to its end (and checked) by the one holding its last samples."""
        total = self.total_workers
        first = worker * self.total_eligible // total
        last = (worker + 1) * self.total_eligible // total
        index = 0
        for shard in self._shard_order(epoch):
            begin, end = index, index + shard.eligible
            index = end
            if end <= first:
                continue  # wholly before this worker's part: not even opened
            if begin >= last:
                return
            position = begin
            for sample in iter_shard(shard.path, shard.samples, shard.sha256):
                if not self.eligible(sample):
                    continue
                if first <= position < last:
                    yield sample
                position += 1
                if position >= last and end > last:
                    break  # the rest of this shard is the next worker's
            else:
                if position != end:
                    raise ValueError(f"{shard.path}: holds {position - begin} eligible samples, the manifest says "
                                     f"{shard.eligible}; rebuild the shards or their manifest")

    def _padded(self, own: Iterator[ShardSample], length: int, worker: int, epoch: int) -> Iterator[Any]:
        """Up to `length` examples of the worker's own, then padding rows only as far as its batch
        count needs (`length` / batch_size batches, the last at least one row long). A dropped sample
        (make_example returned None) is counted on a neighbouring example (`dropped_before`)."""
        minimum = length - self.batch_size + 1
        pool = _PaddingPool(PADDING_POOL, random.Random(f"{self.seed}:padding:{epoch}:{worker}"))
        count = dropped = 0
        held = None  # one example held back, so that drops after the last one are still reported
        for sample in own:
            example = self.make_example(sample, False)
            if example is None:
                dropped += 1
                continue
            if held is not None:
                yield held
            example.dropped_before, dropped = dropped, 0
            held = example
            pool.offer(sample)
            count += 1
        if held is not None:
            if count >= minimum:  # no padding row follows to carry them
                held.dropped_before, dropped = held.dropped_before + dropped, 0
            yield held
        if count < minimum and not pool.samples:
            pool.offer(self._fallback_sample(worker, epoch))
        for sample in pool.draw(max(0, minimum - count)):
            example = self.make_example(sample, True)
            if example is None:
                raise ValueError(f"worker {worker}: no sample of this split can be encoded to pad with "
                                 "(all over the cutoff length?)")
            example.dropped_before, dropped = dropped, 0
            yield example

    def _fallback_sample(self, worker: int, epoch: int) -> ShardSample:
        # Fewer eligible samples than workers: borrow one (as padding) to keep the batch count.
        target = worker % self.total_eligible
        index = 0
        for shard in self._shard_order(epoch):
            for sample in iter_shard(shard.path, shard.samples, shard.sha256):
                if self.eligible(sample):
                    if index == target:
                        return sample
                    index += 1
        raise RuntimeError("stream has no eligible samples to pad with")

    def _grouped(self, examples: Iterator[Any], rng: random.Random) -> Iterator[Any]:
        window = self.group_by_length * self.batch_size
        buffer: list[Any] = []
        for example in examples:
            buffer.append(example)
            if len(buffer) == window:
                yield from self._sorted_batches(buffer, rng)
                buffer = []
        yield from self._sorted_batches(buffer, rng)

    def _sorted_batches(self, buffer: list[Any], rng: random.Random) -> Iterator[Any]:
        # Coarse buckets in random order inside: exact sorting would put equal lengths together,
        # and when a length tracks a label (a longer condition name) batches would hold one label.
        rng.shuffle(buffer)
        buffer.sort(key=lambda example: self.length_of(example) // self.length_bucket)
        batches = [buffer[i : i + self.batch_size] for i in range(0, len(buffer), self.batch_size)]
        short = [b for b in batches if len(b) < self.batch_size]  # only the worker's last: it stays last
        full = [b for b in batches if len(b) == self.batch_size]
        rng.shuffle(full)
        for batch in full + short:
            yield from batch


class _NextEpoch:
    """The first examples of a worker's next epoch, made by a background thread of the worker.

    The thread pulls the first `window` examples (a length-grouping window, or a batch) out of
    `stream._examples(epoch, worker)`; `take` waits for it and hands on the same generator with
    them in front, so the epoch is exactly what it would have been without this.
    """

    def __init__(self, stream: CheckupStream, epoch: int, worker: int):
        self.epoch = epoch
        self.window = max(1, stream.group_by_length) * stream.batch_size
        self.examples = stream._examples(epoch, worker)
        self.head: list[Any] = []
        self.error: BaseException | None = None
        # daemon: a worker that is shut down (the run ended) must not wait for an unused epoch
        self.thread = threading.Thread(target=self._fill, daemon=True, name=f"dentvlm-next-epoch-{worker}")
        self.thread.start()

    def _fill(self) -> None:
        try:
            self.head.extend(itertools.islice(self.examples, self.window))
        except BaseException as error:  # raised where the epoch is read, as it would have been
            self.error = error

    def take(self) -> Iterator[Any]:
        self.thread.join()
        if self.error is not None:
            raise self.error
        head, self.head = self.head, []  # the epoch's consumer alone holds them, and lets them go
        return itertools.chain(head, self.examples)

    def discard(self) -> None:
        """Another epoch was asked for (a resumed or restarted loop): drop this one, closing its files."""
        self.thread.join()
        self.examples.close()


class _PaddingPool:
    """Up to `size` distinct samples of a worker's epoch (a reservoir sample); padding rows go
    through them in turn, so a short worker does not repeat one checkup over and over."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.samples, self.seen = size, rng, [], 0

    def offer(self, sample: ShardSample) -> None:
        self.seen += 1
        if len(self.samples) < self.size:
            self.samples.append(sample)
        else:
            slot = self.rng.randrange(self.seen)
            if slot < self.size:
                self.samples[slot] = sample

    def draw(self, count: int) -> Iterator[ShardSample]:
        order = list(self.samples)
        self.rng.shuffle(order)
        for n in range(count):
            yield order[n % len(order)]
