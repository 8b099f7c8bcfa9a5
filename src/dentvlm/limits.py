"""Limits on images and records, in one place: the writer refuses (a counted skip) what the reader or the
model's processor would refuse, and `dentvlm predict` and `dentvlm serve` refuse the same images, so a
shard that `dentvlm shard` wrote never stops training later and no request fails inside a batch."""

from __future__ import annotations

# One sample's JSON record. A checkup's text is a few kB; a conversation with long answers tens of kB.
MAX_RECORD_BYTES = 4_000_000
# One stored image. Ingestion stores JPEGs resized to `--image_long_side`, so these are generous bounds
# against crafted shards (a decompression bomb, a member that claims gigabytes).
MAX_SHARD_IMAGE_PIXELS = 40_000_000
MAX_SHARD_IMAGE_BYTES = 64_000_000
# Images per sample: members are named ``img0.jpg`` .. ``img999.jpg`` (see records.IMAGE_MEMBER_PATTERN).
MAX_IMAGES_PER_SAMPLE = 1000
# Qwen2-VL's image processor (`smart_resize`) refuses an image whose longer side is more than 200 times
# its shorter side ("absolute aspect ratio must be smaller than 200"), wherever it meets one.
MAX_ASPECT_RATIO = 200

# Reasons an image's shape is refused (keys of the manifest's and predict's skip counts).
EMPTY_IMAGE = "empty_image"
EXTREME_ASPECT_RATIO = "extreme_aspect_ratio"


def image_shape_problem(width: int, height: int) -> tuple[str, str] | None:
    """(reason, message) when a `width` x `height` image is one the model cannot be shown, else None.

    Checked on the size an image is stored (or served) at, since resizing rounds the shorter side."""
    if width < 1 or height < 1:
        return EMPTY_IMAGE, f"{width}x{height} pixels: an image without pixels"
    if max(width, height) > MAX_ASPECT_RATIO * min(width, height):
        return EXTREME_ASPECT_RATIO, (f"{width}x{height} pixels: one side is more than {MAX_ASPECT_RATIO} times the "
                                      "other, which Qwen-VL's image processor refuses")
    return None
