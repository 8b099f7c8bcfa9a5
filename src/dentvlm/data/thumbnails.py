"""A checkup's images as one small JPEG strip, for prediction tables (W&B): what a reader looks at to
see why an answer is right or wrong, at a few kB per row."""

from __future__ import annotations

import io

from PIL import Image

THUMBNAIL_SIDE = 96  # each image fits a 96 x 96 box
MAX_THUMBNAILS = 8  # COde's files show at most 8 images per checkup


def thumbnail_strip(images: list[Image.Image]) -> bytes | None:
    """The first `MAX_THUMBNAILS` images side by side (None without images)."""
    if not images:
        return None
    small = []
    for image in images[:MAX_THUMBNAILS]:
        copy = image.convert("RGB")
        copy.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
        small.append(copy)
    strip = Image.new("RGB", (sum(s.width for s in small) + 2 * (len(small) - 1), max(s.height for s in small)))
    x = 0
    for image in small:
        strip.paste(image, (x, 0))
        x += image.width + 2
    out = io.BytesIO()
    strip.save(out, "JPEG", quality=80)
    return out.getvalue()
