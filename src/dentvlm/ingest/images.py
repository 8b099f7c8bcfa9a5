"""Safe, fast image preparation: bound, decode at reduced scale, EXIF-rotate, to 8 bits, resize, JPEG
with pixels only. One preparation for every route to the model: `dentvlm shard` stores its bytes, and
`dentvlm predict` and `dentvlm serve` decode them as training reads a shard (`model_image`), so the model
is shown the same pixels for the same file whichever way it comes.

The COde release stores 4,000 px photographs. Decoding those every epoch would starve the GPU, so
images are resized once here. JPEG sources are decoded with libjpeg's DCT scaling (`Image.draft`),
which skips most of the work of a full-size decode when the target is much smaller; high-bit-depth
images are averaged down before they are windowed (`pixels`), so memory stays near the decoded size.

Source files are untrusted: only regular files are opened (a FIFO would block, ``/dev/zero`` never
ends), their size is bounded, and the stored JPEG is rebuilt from pixels alone, or, for a JPEG that needs
no pixel change, is the source's coded data with every metadata segment removed (`jpeg_clean`), so no
comment, EXIF, XMP, IPTC, ICC profile or text chunk (where clinics put names) reaches a shard. Sizes the
model's processor would refuse are refused here, with their own reason (`dentvlm.limits`).
"""

from __future__ import annotations

import io
import math
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from dentvlm.ingest.jpeg_clean import stripped_jpeg
from dentvlm.ingest.pixels import UnsupportedMode, to_8bit, to_srgb
from dentvlm.limits import (
    EMPTY_IMAGE,
    MAX_ASPECT_RATIO,
    MAX_SHARD_IMAGE_BYTES,
    MAX_SHARD_IMAGE_PIXELS,
    image_shape_problem,
)

# Reasons an image is rejected; they are the keys of the manifest's skip counts.
MISSING = "missing_image"
NOT_A_FILE = "not_a_regular_file"
CORRUPT = "corrupt_image"
TRUNCATED = "truncated_image"
BOMB = "decompression_bomb"
TOO_LARGE = "file_too_large"
UNSUPPORTED = "unsupported_image_mode"
# ... and `dentvlm.limits`' EMPTY_IMAGE and EXTREME_ASPECT_RATIO: shapes the model's processor refuses.
# Largest source file read: a 4,000 px photograph is a few MB, an 80 Mpx 16-bit TIFF 160 MB.
MAX_SOURCE_BYTES = 512 * 1024 * 1024


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
        if self.long_side**2 > MAX_SHARD_IMAGE_PIXELS:  # a square image must stay readable from the shards
            raise ValueError(f"image long_side must be <= {math.isqrt(MAX_SHARD_IMAGE_PIXELS)} (the shard reader's "
                             f"limit of {MAX_SHARD_IMAGE_PIXELS:,} pixels per image), got {self.long_side}")
        if not 1 <= self.jpeg_quality <= 95:
            raise ValueError(f"jpeg_quality must be in 1..95, got {self.jpeg_quality}")


# EXIF orientation -> the transposition that makes the image upright (as Pillow's `exif_transpose`).
_TRANSPOSE = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
              5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE,
              8: Image.Transpose.ROTATE_90}


def target_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Size after fitting (width, height) into a `long_side` box, keeping aspect, never upscaling.

    Rounding the shorter side down never takes an image past `MAX_ASPECT_RATIO` that the source kept."""
    scale = min(1.0, long_side / max(width, height))
    new_width, new_height = max(1, round(width * scale)), max(1, round(height * scale))
    if max(width, height) <= MAX_ASPECT_RATIO * min(width, height):
        shortest = math.ceil(max(new_width, new_height) / MAX_ASPECT_RATIO)
        if new_width >= new_height:
            new_height = max(new_height, shortest)
        else:
            new_width = max(new_width, shortest)
    return new_width, new_height


def prepare_image(path: Path, policy: ImagePolicy) -> bytes:
    """Read an image file and return the JPEG bytes to store.

    Raises:
        ImageRejected: the file is missing, not a regular file, not an image, truncated, or too large
            to read or decode safely.
    """
    return prepare_image_bytes(read_source_file(path), policy, where=str(path))


def read_source_file(path: Path, max_bytes: int = MAX_SOURCE_BYTES) -> bytes:
    """The bytes of `path` if it is a regular file of at most `max_bytes`, else `ImageRejected`.

    Opened without blocking (a FIFO would wait for a writer forever) and without following a final
    symlink (readers resolve paths before checking they stay inside the source), then checked with
    fstat on the open file, so what is read is what was checked.
    """
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        raise ImageRejected(MISSING, f"{path}: image listed but not found") from None
    except OSError as exc:  # ELOOP (a symlink), EACCES, ENXIO (a socket) ...
        raise ImageRejected(NOT_A_FILE, f"{path}: cannot be opened as an image file ({exc.strerror})") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file (device, FIFO or socket)"
            raise ImageRejected(NOT_A_FILE, f"{path}: is {kind}, not an image")
        if info.st_size > max_bytes:
            raise ImageRejected(TOO_LARGE, f"{path}: {info.st_size:,} bytes, over the limit of {max_bytes:,}")
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    with handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:  # grew while being read
        raise ImageRejected(TOO_LARGE, f"{path}: over the limit of {max_bytes:,} bytes")
    return data


def prepare_image_bytes(data: bytes, policy: ImagePolicy, where: str) -> bytes:
    """`prepare_image` on bytes already read; `where` names the source in errors.

    A JPEG that needs no pixel change (8-bit gray or colour, no colour profile, upright, no larger than
    the long side) keeps its compressed data, stripped of every metadata segment (`jpeg_clean`): its
    pixels stay bit-identical. Everything else is decoded and stored from its pixels.
    """
    image = open_bounded(data, policy.max_source_pixels, where)
    try:
        size = _stored_size(image, policy, where)
        kept = _kept_as_is(data, image, policy)
        if kept is not None:
            _check_decodes(kept)
            return kept
        return _jpeg_pixels_only(_stored_pixels(image, size), policy.jpeg_quality)
    except UnsupportedMode as exc:
        raise ImageRejected(UNSUPPORTED, f"{where}: {exc}") from None
    except (OSError, ValueError) as exc:  # PIL reports truncated or broken pixel data at load time
        raise ImageRejected(TRUNCATED,
                            f"{where}: image data is truncated or corrupt ({_without_buffer(exc)})") from None
    finally:
        image.close()


def declared_size(data: bytes, policy: ImagePolicy, where: str) -> tuple[int, int]:
    """The source's (width, height) from its header, after every check `prepare_image_bytes` makes before
    decoding (size bound, shape as stored): to refuse a request's images before any of them is decoded.

    Raises:
        ImageRejected: what `prepare_image_bytes` would refuse before decoding.
    """
    with open_bounded(data, policy.max_source_pixels, where) as image:
        _stored_size(image, policy, where)
        return image.size


def _stored_size(image: Image.Image, policy: ImagePolicy, where: str) -> tuple[int, int]:
    """The (width, height) `image` is resized to, in its stored orientation (an EXIF rotation swaps both
    sides, which changes neither the scale nor the shape), from its header alone (a PNG's EXIF may follow
    its pixels); `ImageRejected` for a shape the model's processor refuses (`dentvlm.limits`)."""
    size = target_size(*image.size, policy.long_side)
    problem = image_shape_problem(*size)
    if problem is not None:
        raise ImageRejected(problem[0], f"{where}: stored as {problem[1]}")
    return size


def _stored_pixels(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """`image` in sRGB, 8-bit, at `size`, then upright. The resize comes before the rotation, and a
    high-bit-depth image is averaged down before it is windowed, so that no step copies the full-size
    image more than once."""
    # Request about the final size from the DCT decoder (JPEG only; draft keeps at least this many pixels).
    image.draft(image.mode if image.mode in ("L", "RGB") else None, size)
    image.load()
    factor = max(1, int(min(image.width / size[0], image.height / size[1])))  # averaged down to 1-2x size
    pixels = to_8bit(to_srgb(image), factor)
    if pixels.size != size:
        pixels = pixels.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    orientation = _orientation(image)
    return pixels.transpose(_TRANSPOSE[orientation]) if orientation in _TRANSPOSE else pixels


def _orientation(image: Image.Image) -> int:
    """The EXIF (or XMP) orientation Pillow's `exif_transpose` would apply: 1 (upright) to 8."""
    value = image.getexif().get(0x0112, 1)
    return value if value in _TRANSPOSE else 1


def _kept_as_is(data: bytes, image: Image.Image, policy: ImagePolicy) -> bytes | None:
    """The source JPEG stripped of its metadata when its pixels need no change, else None."""
    if (image.format != "JPEG" or image.mode not in ("L", "RGB") or image.info.get("icc_profile")
            or max(image.size) > policy.long_side or _orientation(image) != 1):
        return None
    kept = stripped_jpeg(data)
    return kept if kept is not None and len(kept) <= MAX_SHARD_IMAGE_BYTES else None


def _check_decodes(data: bytes) -> None:
    """Decode `data` once, so that a truncated or corrupt JPEG is refused now, not when training reads it."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()


def _jpeg_pixels_only(image: Image.Image, quality: int) -> bytes:
    """JPEG bytes of `image`'s pixels and nothing else. Pillow copies ``info["comment"]`` (and would
    write EXIF, XMP or ICC given them) into a saved JPEG; a fresh image has an empty ``info``."""
    pixels = Image.frombytes(image.mode, image.size, image.tobytes())
    out = io.BytesIO()
    pixels.save(out, format="JPEG", quality=quality, optimize=True)
    return out.getvalue()


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


def _without_buffer(exc: Exception) -> str:
    """`exc`'s message without a ``<_io.BytesIO object at 0x...>`` repr, which names nothing a user has."""
    return re.sub(r"\s*<_io\.BytesIO object at 0x[0-9a-f]+>", "", str(exc)).strip() or type(exc).__name__


def open_bounded(data: bytes, max_pixels: int, where: str) -> Image.Image:
    """Open (without decoding) an image and check its declared size against `max_pixels`."""
    try:
        image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageRejected(BOMB, f"{where}: {exc}") from None
    except UnidentifiedImageError:  # Pillow's message is the repr of our in-memory buffer
        raise ImageRejected(CORRUPT, f"{where}: not a readable image (no known image format)") from None
    except (OSError, ValueError) as exc:
        raise ImageRejected(CORRUPT, f"{where}: not a readable image ({_without_buffer(exc)})") from None
    width, height = image.size
    if width < 1 or height < 1:
        image.close()
        raise ImageRejected(EMPTY_IMAGE, f"{where}: declares {width}x{height} pixels: an image without pixels")
    if width * height > max_pixels:
        image.close()
        raise ImageRejected(
            BOMB, f"{where}: declares {width}x{height} pixels, over the limit of {max_pixels} (decompression bomb?)"
        )
    return image
