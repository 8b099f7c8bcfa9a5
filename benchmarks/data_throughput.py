"""Data-path throughput, measured side by side on the same images in one run.

Prints:
  1. raw JPEG decode of the release-sized photographs (the per-core limit of any full decode),
  2. shard-time preparation per image: full decode + resize vs. libjpeg DCT-scaled decode (draft),
  3. `dentvlm shard` end to end (images/s, all cores),
  4. streaming from the shards, samples/s for one worker: read + decode + task formatting, then also
     with the processor (resize to max_pixels, normalise, patchify), against the raw decode rate of
     the very same stored JPEGs (the ratio shows what streaming adds).

    python benchmarks/data_throughput.py [--checkups 8] [--size 4000x3000] [--long-side 1024]
"""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.shards import iter_shard
from dentvlm.ingest.images import ImagePolicy, prepare_image, target_size
from dentvlm.sharding import load_manifest
from dentvlm.synth import write_synthetic_release


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else float("inf")


def timed(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return time.perf_counter() - start


def full_decode(data: bytes) -> None:
    Image.open(io.BytesIO(data)).load()


def full_decode_resize(path: Path, long_side: int) -> None:
    image = Image.open(path)
    image.load()
    image.convert("RGB").resize(target_size(*image.size, long_side), Image.Resampling.BICUBIC)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkups", type=int, default=8)
    parser.add_argument("--size", default="4000x3000", help="photograph size in the release (COde: 4,000 px)")
    parser.add_argument("--long-side", type=int, default=1024, help="image long side stored in the shards")
    parser.add_argument("--processor-pixels", type=int, default=448 * 448, help="processor max_pixels per image")
    args = parser.parse_args()
    width, height = map(int, args.size.split("x"))

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        print(f"writing a synthetic release: {args.checkups} checkups, {width}x{height} photographs ...")
        release = write_synthetic_release(tmp / "release", num_checkups=args.checkups, seed=0,
                                          photo_size=(width, height), radiograph_size=(width // 2, height // 4))
        photos = sorted((release / "Images" / "Photographs").glob("*.jpg"))
        blobs = [p.read_bytes() for p in photos]
        mean_mb = sum(map(len, blobs)) / len(blobs) / 1e6
        print(f"{len(photos)} photographs, {mean_mb:.2f} MB each on average\n")

        raw = rate(len(blobs), timed(full_decode, blobs))
        slow = rate(len(photos), timed(lambda p: full_decode_resize(p, args.long_side), photos))
        policy = ImagePolicy(long_side=args.long_side)
        fast = rate(len(photos), timed(lambda p: prepare_image(p, policy), photos))
        print(f"1. raw full JPEG decode                         {raw:8.1f} images/s (1 core)")
        print(f"2. full decode + resize to {args.long_side} px              {slow:8.1f} images/s (1 core)")
        print(f"   dentvlm prepare_image (DCT-scaled decode)   {fast:8.1f} images/s (1 core), "
              f"{fast / slow:.1f}x the full decode + resize")

        # The real command in its own process: its image workers import only what they need.
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dentvlm", "shard", str(release), str(tmp / "shards"), "--salt", "bench",
                        "--val", "0", "--test", "0", "--image_long_side", str(args.long_side)], check=True)
        seconds = time.perf_counter() - start
        manifest = load_manifest(tmp / "shards")
        images = sum(manifest["splits"]["train"]["images"].values())
        print(f"3. dentvlm shard end to end                    {rate(images, seconds):8.1f} images/s "
              f"(all cores, {images} images, process start + CSV + split + write included)")

        shard_files = sorted((tmp / "shards").glob("train-*.tar"))
        stored = [data for f in shard_files for s in iter_shard(f) for data in s.images]
        stored_raw = rate(len(stored), timed(full_decode, stored))
        for label, processor in (("read + decode + format", None), ("+ processor resize/patchify", "tiny")):
            dm = DentDataModule(shards=str(tmp / "shards"), num_workers=0, batch_size=1, processor_path=processor,
                                max_pixels=args.processor_pixels, min_pixels=28 * 28)
            dm.setup()
            start = time.perf_counter()
            samples = sum(1 for _ in dm._loader(dm.stream("train", "classification", training=True)))
            seconds = time.perf_counter() - start
            stream_images = rate(images * samples / manifest["splits"]["train"]["checkups"], seconds)
            print(f"4. streaming {label:<30} {rate(samples, seconds):8.1f} samples/s per worker "
                  f"({stream_images:.1f} images/s) = {stream_images / stored_raw:.0%} of the raw decode limit")
        print(f"   raw decode of the same stored JPEGs         {stored_raw:8.1f} images/s")

if __name__ == "__main__":
    main()
