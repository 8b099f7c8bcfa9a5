"""WebDataset shard files: atomic, deterministic writing and safe, key-selective reading.

A sample is one checkup: ``<key>.json`` (a `Checkup`) and ``<key>.img<i>.jpg`` per image.
Reading never hands a member to a generic decoder: webdataset's default decoders unpickle
``.pyd`` and ``torch.load`` ``.pth`` members, which runs code from the shard. Only the JSON
record and the ``img<i>.jpg`` members are read; anything else in a shard is ignored unread.
"""

from __future__ import annotations

import io
import os
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import webdataset as wds
from PIL import Image

from dentvlm.ingest.images import ImageRejected, open_bounded
from dentvlm.records import IMAGE_MEMBER_PATTERN, Checkup, image_member

PARTIAL_SUFFIX = ".partial"
MAX_RECORD_BYTES = 4_000_000
# Decoding limit for shard images: shards are untrusted, and ingestion stores small images anyway.
MAX_SHARD_IMAGE_PIXELS = 40_000_000


@dataclass
class ShardInfo:
    """One finished shard: its file name, sample count, size and per-task sample counts."""

    file: str
    samples: int
    bytes: int
    tasks: dict[str, int] = field(default_factory=dict)


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
        self._current: ShardInfo | None = None

    def write(self, checkup: Checkup, images: list[bytes], tasks: set[str]) -> None:
        """Add one checkup sample; `tasks` are the task variants it serves (counted per shard)."""
        members = [("json", checkup.to_json())] + [(image_member(i), data) for i, data in enumerate(images)]
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
        self._tar = tarfile.open(self.out_dir / (name + PARTIAL_SUFFIX), "w", format=tarfile.USTAR_FORMAT)

    def _finish(self) -> None:
        self._tar.close()
        partial = self.out_dir / (self._current.file + PARTIAL_SUFFIX)
        final = self.out_dir / self._current.file
        self._current.bytes = partial.stat().st_size
        os.replace(partial, final)
        self.finished.append(self._current)
        self._tar, self._current = None, None


@dataclass
class ShardSample:
    """A checkup read back from a shard, images still encoded (decoded lazily by `decode_image`)."""

    checkup: Checkup
    images: list[bytes]
    where: str


def _wanted_member(name: str) -> bool:
    suffix = name.rsplit("/", 1)[-1].split(".", 1)[-1]
    return suffix == "json" or bool(IMAGE_MEMBER_PATTERN.match(suffix))


def iter_shard(path: str | Path) -> Iterator[ShardSample]:
    """Samples of one shard, in file order; validates each record against its images.

    Raises:
        ValueError: a sample's record is missing or invalid, or its images don't match the record.
    """
    source = [{"url": str(path)}]
    raw_samples = wds.tarfile_samples(source, select_files=_wanted_member)
    for raw in raw_samples:
        where = f"{Path(path).name} sample {raw['__key__']!r}"
        if "json" not in raw:
            raise ValueError(f"{where}: no .json record")
        if len(raw["json"]) > MAX_RECORD_BYTES:
            raise ValueError(f"{where}: record larger than {MAX_RECORD_BYTES} bytes")
        checkup = Checkup.from_json(raw["json"], where)
        if checkup.key != raw["__key__"].rsplit("/", 1)[-1]:
            raise ValueError(f"{where}: record key {checkup.key!r} differs from the member name")
        images = []
        for index in range(len(checkup.modalities)):
            data = raw.get(image_member(index))
            if data is None:
                raise ValueError(
                    f"{where}: record lists {len(checkup.modalities)} images, {image_member(index)} missing")
            images.append(data)
        yield ShardSample(checkup=checkup, images=images, where=where)


def decode_image(data: bytes, where: str, long_side: int | None = None) -> Image.Image:
    """Decode one shard image to RGB, bounded in size; optionally at a smaller long side."""
    try:
        image = open_bounded(data, MAX_SHARD_IMAGE_PIXELS, where)
        if image.format != "JPEG":
            raise ValueError(f"{where}: image is {image.format}, shards store JPEG only")
        if long_side is not None and max(image.size) > long_side:
            image.draft("RGB", (long_side, long_side))
        image = image.convert("RGB")
    except (ImageRejected, OSError) as exc:
        raise ValueError(f"{where}: bad image in shard ({exc})") from None
    if long_side is not None and max(image.size) > long_side:
        image.thumbnail((long_side, long_side), Image.Resampling.BICUBIC)
    return image
