"""WebDataset shard files: atomic, deterministic, checksummed writing and safe, verified reading.

A sample is one checkup: ``<key>.json`` (a `Checkup`) and ``<key>.img<i>.jpg`` per image.
Reading never hands a member to a generic decoder: webdataset's default decoders unpickle
``.pyd`` and ``torch.load`` ``.pth`` members, which runs code from the shard. Only the JSON
record and the ``img<i>.jpg`` members are read; anything else in a shard is skipped unread.

The writer applies the reader's limits (`dentvlm.limits`) to every sample, and records each
shard's sample count and SHA-256 in the manifest; the reader checks both when it reaches the end
of a shard, so a truncated, swapped or edited shard stops the run instead of silently losing samples.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from dentvlm.ingest.images import ImageRejected, open_bounded, target_size
from dentvlm.limits import (
    MAX_IMAGES_PER_SAMPLE,
    MAX_RECORD_BYTES,
    MAX_SHARD_IMAGE_BYTES,
    MAX_SHARD_IMAGE_PIXELS,
    image_shape_problem,
)
from dentvlm.records import IMAGE_MEMBER_PATTERN, Checkup, image_member

PARTIAL_SUFFIX = ".partial"
# Reasons the writer refuses a sample (counted skips in the manifest).
RECORD_TOO_LARGE = "record_too_large"
TOO_MANY_IMAGES = "too_many_images"
STORED_IMAGE_TOO_LARGE = "stored_image_too_large"
INVALID_RECORD = "invalid_record"
# webdataset's sample grouping: the key is the member path up to the first dot of its file name.
_KEY_SUFFIX = re.compile(r"^((?:.*/|)[^./]+)\.([^/]*)$")


class SampleRejected(ValueError):
    """A sample the reader would refuse; `reason` is one of the module's reason constants."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class ShardInfo:
    """One finished shard: file name, sample count, size, SHA-256 and per-task sample counts."""

    file: str
    samples: int
    bytes: int
    sha256: str = ""
    tasks: dict[str, int] = field(default_factory=dict)


def check_sample(checkup: Checkup, images: list[bytes], where: str) -> bytes:
    """The record bytes of a sample that `iter_shard` and `decode_image` will accept.

    Raises:
        SampleRejected: the record or an image breaks a reader limit, or the record is invalid.
    """
    record = checkup.to_json()
    if len(record) > MAX_RECORD_BYTES:
        raise SampleRejected(RECORD_TOO_LARGE, f"{where}: record is {len(record):,} bytes, over the shard "
                                               f"limit of {MAX_RECORD_BYTES:,}")
    if len(images) > MAX_IMAGES_PER_SAMPLE:
        raise SampleRejected(TOO_MANY_IMAGES, f"{where}: {len(images)} images, over the shard limit of "
                                              f"{MAX_IMAGES_PER_SAMPLE}")
    if len(images) != len(checkup.modalities):
        raise SampleRejected(INVALID_RECORD, f"{where}: {len(images)} images for {len(checkup.modalities)} "
                                             "modalities")
    try:
        Checkup.from_json(record, where)
    except ValueError as exc:
        raise SampleRejected(INVALID_RECORD, str(exc)) from None
    for index, data in enumerate(images):
        try:
            _check_image(data, f"{where} image {index}")
        except ValueError as exc:
            raise SampleRejected(STORED_IMAGE_TOO_LARGE, str(exc)) from None
    return record


class _HashingWriter:
    """A write-only file wrapper that hashes what passes through (tarfile needs write and tell)."""

    def __init__(self, handle):
        self.handle, self.digest, self.position = handle, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        self.position += len(data)
        return self.handle.write(data)

    def tell(self) -> int:
        return self.position


class ShardWriter:
    """Writes ``<prefix>-NNNNNN.tar`` files of at most `max_count` samples and about `max_bytes` bytes.

    Each shard is written to a ``.partial`` file and renamed when complete, so a crash never
    leaves a file that looks like a finished shard. Tar headers carry no time or owner, so the
    same samples give the same bytes.
    """

    def __init__(self, out_dir: Path, prefix: str, max_count: int, max_bytes: int):
        if max_count < 1 or max_bytes < 1:
            raise ValueError("max_count and max_bytes must be positive")
        self.out_dir, self.prefix = out_dir, prefix
        self.max_count, self.max_bytes = max_count, max_bytes
        self.finished: list[ShardInfo] = []
        self._tar: tarfile.TarFile | None = None
        self._file = None
        self._current: ShardInfo | None = None

    def write(self, checkup: Checkup, images: list[bytes], tasks: set[str]) -> None:
        """Add one checkup sample; `tasks` are the task variants it serves (counted per shard).

        Raises:
            SampleRejected: the sample breaks a reader limit (nothing is written).
        """
        record = check_sample(checkup, images, f"checkup {checkup.key}")
        members = [("json", record)] + [(image_member(i), data) for i, data in enumerate(images)]
        size = sum(len(data) + 1024 for _, data in members)
        if self._current and (
            self._current.samples >= self.max_count or self._current.bytes + size > self.max_bytes
        ):
            self._finish()
        if self._tar is None:
            self._open()
        for suffix, data in members:
            info = tarfile.TarInfo(f"{checkup.key}.{suffix}")
            info.size, info.mtime, info.mode = len(data), 0, 0o444
            self._tar.addfile(info, io.BytesIO(data))
        self._current.samples += 1
        self._current.bytes += size
        for task in tasks:
            self._current.tasks[task] = self._current.tasks.get(task, 0) + 1

    def close(self) -> list[ShardInfo]:
        """Finish the open shard and return all shards written."""
        if self._tar is not None:
            self._finish()
        return self.finished

    def _open(self) -> None:
        name = f"{self.prefix}-{len(self.finished):06d}.tar"
        self._current = ShardInfo(file=name, samples=0, bytes=0)
        self._file = _HashingWriter(open(self.out_dir / (name + PARTIAL_SUFFIX), "wb"))  # noqa: SIM115
        self._tar = tarfile.open(fileobj=self._file, mode="w", format=tarfile.USTAR_FORMAT)

    def _finish(self) -> None:
        self._tar.close()
        self._file.handle.close()
        partial = self.out_dir / (self._current.file + PARTIAL_SUFFIX)
        final = self.out_dir / self._current.file
        self._current.bytes = partial.stat().st_size
        self._current.sha256 = self._file.digest.hexdigest()
        # Task counts in a fixed order: the manifest must not depend on set iteration order.
        self._current.tasks = dict(sorted(self._current.tasks.items()))
        os.replace(partial, final)
        self.finished.append(self._current)
        self._tar, self._file, self._current = None, None, None


@dataclass
class ShardSample:
    """A checkup read back from a shard, images still encoded (decoded lazily by `decode_image`)."""

    checkup: Checkup
    images: list[bytes]
    where: str


class _HashingReader:
    """A read-only file wrapper that hashes every byte read, so a shard is checksummed as it streams."""

    def __init__(self, handle):
        self.handle, self.digest = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.digest.update(data)
        return data

    def drain(self) -> None:
        """Read (and hash) what follows the tar's end marker, so the digest covers the whole file."""
        while self.read(1 << 20):
            pass


def _member_limit(suffix: str) -> int | None:
    """Largest size the reader accepts for a wanted member, or None for a member it never reads."""
    if suffix == "json":
        return MAX_RECORD_BYTES
    return MAX_SHARD_IMAGE_BYTES if IMAGE_MEMBER_PATTERN.match(suffix) else None


def _raw_samples(reader: _HashingReader, path: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {suffix: bytes}) per sample, in file order: consecutive members sharing a key."""
    key, members, seen = None, {}, set()
    try:
        tar = tarfile.open(fileobj=reader, mode="r|*")
        for info in tar:
            tar.members = []  # stream mode would otherwise keep every header read
            match = _KEY_SUFFIX.match(info.name)
            if not info.isreg() or not match:
                continue
            name, suffix = match.group(1), match.group(2).lower()
            if name != key:
                if key is not None:
                    yield key, members
                if name in seen:
                    raise ValueError(f"{path}: sample {name!r} appears twice (members not consecutive)")
                key, members = name, {}
                seen.add(name)
            limit = _member_limit(suffix)
            if limit is None:
                continue  # skipped unread (its bytes still pass through the checksum)
            if suffix in members:
                raise ValueError(f"{path} sample {name!r}: member {suffix!r} appears twice")
            if info.size > limit:
                raise ValueError(f"{path} sample {name!r}: member {suffix!r} is {info.size:,} bytes, over the "
                                 f"limit of {limit:,}")
            members[suffix] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as exc:
        raise ValueError(f"{path}: not a readable shard ({exc}); rebuild it with `dentvlm shard`") from None
    if key is not None:
        yield key, members


def iter_shard(path: str | Path, expected_count: int | None = None, sha256: str | None = None
               ) -> Iterator[ShardSample]:
    """Samples of one shard, in file order; validates each record against its images.

    With `expected_count` and `sha256` (the manifest's entry for this shard), reaching the end of
    the shard also checks that it held exactly that many samples and those bytes.

    Raises:
        ValueError: the shard is unreadable, disagrees with the manifest, or a sample's record is
            missing or invalid, or its images don't match the record.
        FileNotFoundError: the shard file is missing.
    """
    path = str(path)
    count = 0
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, also when the consumer stops early)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: shard not found; rebuild the shards with `dentvlm shard`") from None
    with handle:
        reader = _HashingReader(handle)
        for key, raw in _raw_samples(reader, path):
            count += 1
            yield _sample(key, raw, f"{Path(path).name} sample {key!r}")
        reader.drain()
    if expected_count is not None and count != expected_count:
        raise ValueError(f"{path}: read {count} samples, the manifest lists {expected_count}: the shard is "
                         "truncated or is not the one that was written; rebuild with `dentvlm shard`")
    if sha256 is not None and reader.digest.hexdigest() != sha256:
        raise ValueError(f"{path}: contents differ from the manifest's checksum (changed or damaged since "
                         "it was written); rebuild with `dentvlm shard`")


def _sample(key: str, raw: dict[str, bytes], where: str) -> ShardSample:
    if "json" not in raw:
        raise ValueError(f"{where}: no .json record")
    try:
        checkup = Checkup.from_json(raw["json"], where)
    except RecursionError:
        raise ValueError(f"{where}: record nested too deeply to be a checkup") from None
    if checkup.key != key.rsplit("/", 1)[-1]:
        raise ValueError(f"{where}: record key {checkup.key!r} differs from the member name")
    images = []
    for index in range(len(checkup.modalities)):
        data = raw.get(image_member(index))
        if data is None:
            raise ValueError(f"{where}: record lists {len(checkup.modalities)} images, {image_member(index)} missing")
        images.append(data)
    return ShardSample(checkup=checkup, images=images, where=where)


def _check_image(data: bytes, where: str) -> None:
    """Raise ValueError for an image `decode_image` would refuse (checked from its header only)."""
    if len(data) > MAX_SHARD_IMAGE_BYTES:
        raise ValueError(f"{where}: {len(data):,} bytes, over the shard limit of {MAX_SHARD_IMAGE_BYTES:,}")
    try:
        image = open_bounded(data, MAX_SHARD_IMAGE_PIXELS, where)
    except ImageRejected as exc:
        raise ValueError(str(exc)) from None
    with image:
        _check_stored(image, where)


def _check_stored(image: Image.Image, where: str) -> None:
    """The reader's limits on a stored image's header: JPEG, and a shape the model's processor takes."""
    if image.format != "JPEG":
        raise ValueError(f"{where}: image is {image.format}, shards store JPEG only")
    problem = image_shape_problem(*image.size)
    if problem is not None:
        raise ValueError(f"{where}: {problem[1]} [{problem[0]}]; rebuild the shards with `dentvlm shard`")


def decode_image(data: bytes, where: str, long_side: int | None = None) -> Image.Image:
    """Decode one shard image to RGB, bounded in size; optionally at a smaller long side (resized as
    `dentvlm shard` resizes, so the shape stays one the processor takes).

    Raises:
        ValueError: the image breaks a reader limit or is corrupt; `where` (shard and sample) names it.
    """
    try:
        image = open_bounded(data, MAX_SHARD_IMAGE_PIXELS, where)
        _check_stored(image, where)
        size = target_size(*image.size, long_side) if long_side is not None else image.size
        if size != image.size:
            image.draft("RGB", size)
        image = image.convert("RGB")
    except (ImageRejected, OSError) as exc:
        raise ValueError(f"{where}: bad image in shard ({exc})") from None
    if image.size != size:
        image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image
