"""The image the model is shown for one source file, whichever route it takes: what `dentvlm shard` would
store for it (`prepare_image_bytes`), decoded as training decodes a shard's image (`decode_image`).
`dentvlm predict` and `dentvlm serve` use it, so a file sent to either gives the pixels training saw."""

from __future__ import annotations

from PIL import Image

from dentvlm.data.shards import decode_image
from dentvlm.ingest.images import ImagePolicy, prepare_image_bytes


def model_image(data: bytes, policy: ImagePolicy, where: str, decode_long_side: int | None = None) -> Image.Image:
    """The RGB image the model reads for the source file `data` (see the module doc).

    Raises:
        ImageRejected: the source cannot be used (see `prepare_image_bytes`); `where` names it.
    """
    return decode_image(prepare_image_bytes(data, policy, where), where, decode_long_side)
