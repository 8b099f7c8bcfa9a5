"""Bytes read per training epoch against the dataset's bytes, for R ranks x W DataLoader workers.

Every loader reads a contiguous part of the split: the shards inside its part whole, and a shard
it shares with the next loader from its start to its part's end. With fewer shards than ranks x
workers, loaders share shards and re-read their starts; with more, reading approaches one pass. The
same COde-shaped checkups are sharded with --max_count 1000 (one training shard) and with a count
that gives every loader shards of its own, then one epoch is read by every rank's real DataLoader
workers, counting the bytes read of every shard.

    python benchmarks/shard_reads.py --checkups 64 --ranks 2 --workers 2
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import dentvlm.data.shards as shards_module
from dentvlm.data.datamodule import DentDataModule
from dentvlm.ingest.images import ImagePolicy
from dentvlm.sharding import build_shards
from dentvlm.synth import write_synthetic_release


class CountingFile:
    """A shard file that appends to `log` how far it was read when closed (tell(): bytes consumed)."""

    def __init__(self, handle, log: Path):
        self.handle, self.log = handle, log

    def __getattr__(self, name):
        return getattr(self.handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc_info) -> None:
        with self.log.open("a") as out:
            out.write(f"{self.handle.tell()}\n")
        self.handle.close()


def counting(log: Path):
    """`open` for dentvlm.data.shards that counts the bytes read of every shard (DataLoader workers
    are forked, so the patch reaches them)."""
    import builtins

    return lambda path, mode="r", *args, **kwargs: CountingFile(builtins.open(path, mode, *args, **kwargs), log)


def epoch_reads(shards: Path, ranks: int, workers: int, log: Path) -> tuple[int, int, int]:
    """(bytes read in one training epoch over all ranks, training bytes, training shards)."""
    log.write_text("")
    for rank in range(ranks):
        dm = DentDataModule(shards=str(shards), batch_size=2, num_workers=workers, persistent_workers=False)
        dm.rank, dm.world_size = rank, ranks
        for _ in dm._loader(dm.stream("train", "classification", training=True)):
            pass
    split = dm.manifest["splits"]["train"]["shards"]
    total = sum((shards / s["file"]).stat().st_size for s in split)
    return sum(int(n) for n in log.read_text().split()), total, len(split)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkups", type=int, default=64)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        release = write_synthetic_release(root / "release", num_checkups=args.checkups, seed=5, profile="code",
                                          photo_size=(1024, 768))
        log = root / "reads.log"
        shards_module.open = counting(log)
        loaders = args.ranks * args.workers
        train = round(args.checkups * 0.8)
        print(f"{args.checkups} COde-shaped checkups ({train} training), {args.ranks} ranks x {args.workers} workers")
        for max_count in (1000, max(1, train // (2 * loaders))):
            out = root / f"shards-{max_count}"
            build_shards(release, out, salt="bench", val=0.1, test=0.1, policy=ImagePolicy(1024),
                         max_count=max_count, progress=False)
            read, total, count = epoch_reads(out, args.ranks, args.workers, log)
            print(f"  --max_count {max_count:<5} {count:>3} training shards: read {read / 2**20:7.1f} MiB per epoch "
                  f"for {total / 2**20:6.1f} MiB of shards = {read / total:.2f}x")


if __name__ == "__main__":
    main()
