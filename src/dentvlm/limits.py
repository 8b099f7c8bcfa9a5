"""Size limits of the shard format, in one place: the writer refuses (a counted skip) what the reader
would refuse, so a shard that `dentvlm shard` wrote never stops training later."""

from __future__ import annotations

# One sample's JSON record. A checkup's text is a few kB; a conversation with long answers tens of kB.
MAX_RECORD_BYTES = 4_000_000
# One stored image. Ingestion stores JPEGs resized to `--image_long_side`, so these are generous bounds
# against crafted shards (a decompression bomb, a member that claims gigabytes).
MAX_SHARD_IMAGE_PIXELS = 40_000_000
MAX_SHARD_IMAGE_BYTES = 64_000_000
# Images per sample: members are named ``img0.jpg`` .. ``img999.jpg`` (see records.IMAGE_MEMBER_PATTERN).
MAX_IMAGES_PER_SAMPLE = 1000
