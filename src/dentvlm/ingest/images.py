"""Safe, fast image preparation at shard time: bound, decode at reduced scale, EXIF-rotate, resize, JPEG.

The COde release stores 4,000 px photographs. Decoding those every epoch would starve the GPU, so
images are resized once here. JPEG sources are decoded with libjpeg's DCT scaling (`Image.draft`),
which skips most of the work of a full-size decode when the target is much smaller.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageOps, UnidentifiedImageError

# Reasons an image is rejected; they are the keys of the manifest's skip counts.
MISSING = "missing_image"
CORRUPT = "corrupt_image"
TRUNCATED = "truncated_image"
BOMB = "decompression_bomb"


class ImageRejected(Exception):
    """An input image that cannot be used; `reason` is one of the module's reason constants."""

    def __init__(self, reason: str, message: str):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ImagePolicy:
    """How images are stored in shards.

    Attributes:
        long_side: Resize so the longer side is at most this many pixels (never upscales).
        jpeg_quality: JPEG quality of the stored image.
        max_source_pixels: Reject sources with more pixels than this (decompression-bomb guard),
            checked from the header before any pixel is decoded.
    """

    long_side: int = 1024
    jpeg_quality: int = 90
    max_source_pixels: int = 80_000_000

    def __post_init__(self) -> None:
        if self.long_side < 28:
            raise ValueError(f"image long_side must be >= 28 (one Qwen-VL patch pair), got {self.long_side}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")


def target_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size after fitting (width, height) into a `long_side` box, keeping aspect, never upscaling."""
    scale = min(1.0, long_side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def prepare_image(path: Path, policy: ImagePolicy) -> bytes:
    """Read an image file and return the JPEG bytes to store.

    Raises:
        ImageRejected: the file is missing, not an image, truncated, or too large to decode safely.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageRejected(MISSING, f"{path}: image listed but not found") from None
    except IsADirectoryError:
        raise ImageRejected(MISSING, f"{path}: is a directory, not an image") from None
    return prepare_image_bytes(data, policy, where=str(path))


def prepare_image_bytes(data: bytes, policy: ImagePolicy, where: str) -> bytes:
    """`prepare_image` on bytes already read; `where` names the source in errors."""
    image = open_bounded(data, policy.max_source_pixels, where)
    try:
        width, height = image.size
        # Request the final size from the DCT decoder; draft keeps at least this many pixels.
        image.draft(image.mode if image.mode in ("L", "RGB") else "RGB", _draft_size(image, policy.long_side))
        image.load()
        upright = ImageOps.exif_transpose(image)
        upright = upright.convert("L" if upright.mode in ("L", "I;16", "I") else "RGB")
        size = target_size(upright.width, upright.height, policy.long_side)
        if upright.size != size:
            upright = upright.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
        out = io.BytesIO()
        upright.save(out, format="JPEG", quality=policy.jpeg_quality, optimize=True)
        return out.getvalue()
    except OSError as exc:  # PIL reports truncated or broken pixel data as OSError at load time
        raise ImageRejected(TRUNCATED, f"{where}: image data is truncated or corrupt ({exc})") from None
    finally:
        image.close()


def prepare_images(job: tuple[list[Path], ImagePolicy]) -> list[bytes | tuple[str, str]]:
    """Process-pool worker for one checkup: JPEG bytes per image, or (reason, message) when rejected."""
    paths, policy = job
    results: list[bytes | tuple[str, str]] = []
    for path in paths:
        try:
            results.append(prepare_image(path, policy))
        except ImageRejected as exc:
            results.append((exc.reason, str(exc)))
    return results


def open_bounded(data: bytes, max_pixels: int, where: str) -> Image.Image:
    """Open (without decoding) an image and check its declared size against `max_pixels`."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected(BOMB, f"{where}: {exc}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageRejected(CORRUPT, f"{where}: not a readable image ({exc})") from None
    width, height = image.size
    if width * height > max_pixels or width <= 0 or height <= 0:
        image.close()
        raise ImageRejected(
            BOMB, f"{where}: declares {width}x{height} pixels, over the limit of {max_pixels} (decompression bomb?)"
        )
    return image


def _draft_size(image: Image.Image, long_side: int) -> tuple[int, int]:
    # The EXIF rotation happens after decoding, so the requested box is in stored orientation.
    scale = min(1.0, long_side / max(image.size))
    return math.ceil(image.width * scale), math.ceil(image.height * scale)
