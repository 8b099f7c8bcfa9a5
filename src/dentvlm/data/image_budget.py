"""Per-sample image resolution: every image of a sample, and its text, within a token limit.

Qwen-VL turns an image of h x w pixels (after its processor's `smart_resize` to multiples of
patch x merge = 28 px, between min_pixels and max_pixels) into h * w / 28^2 tokens. A COde checkup
holds up to 8 photographs: at the 7B recipe's max_pixels a 1024 x 768 photo is ~713 tokens, so six
of them pass a 4,096-token cutoff. Rather than cut images or drop the checkup, the budget lowers
max_pixels for that sample alone, the same for all its images, as far as min_pixels.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Size = tuple[int, int]  # (height, width) in pixels


def qwen_resize(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> Size:
    """The size Qwen-VL's image processor resizes an image to (its `smart_resize`, restated here
    so the budget never depends on a private transformers module; a test checks both agree)."""
    if max(height, width) / min(height, width) > 200:
        raise ValueError(f"image of {width}x{height} pixels: aspect ratio over 200, which Qwen-VL refuses")
    h_bar = round(height / factor) * factor
    w_bar = round(width / factor) * factor
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = max(factor, math.floor(height / beta / factor) * factor)
        w_bar = max(factor, math.floor(width / beta / factor) * factor)
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@dataclass(frozen=True)
class ImageBudget:
    """Image token arithmetic of one processor configuration.

    Attributes:
        factor: Pixels per merged token side (patch size x merge size: 28 for Qwen2/2.5-VL).
        min_pixels: Lower bound on pixels per image (the processor's ``shortest_edge``).
        max_pixels: Upper bound on pixels per image (the processor's ``longest_edge``).
    """

    factor: int
    min_pixels: int
    max_pixels: int

    def tokens(self, sizes: Sequence[Size], max_pixels: int | None = None) -> int:
        """Image tokens of images of `sizes` resized with `max_pixels` (default: the configured bound)."""
        bound = self.max_pixels if max_pixels is None else max_pixels
        total = 0
        for height, width in sizes:
            h, w = qwen_resize(height, width, self.factor, self.min_pixels, bound)
            total += (h // self.factor) * (w // self.factor)
        return total

    def fit(self, sizes: Sequence[Size], room: int, upper: int | None = None) -> int | None:
        """The largest max_pixels in [min_pixels, `upper`] whose image tokens fit `room` tokens, or
        None when even min_pixels does not. Without images, `upper` (nothing to scale)."""
        high = self.max_pixels if upper is None else min(upper, self.max_pixels)
        if not sizes:
            return high if room >= 0 else None
        if self.tokens(sizes, high) <= room:
            return high
        low = self.min_pixels
        if self.tokens(sizes, low) > room:
            return None
        # Tokens grow with max_pixels: bisect for the largest bound that still fits (low always fits).
        while high - low > 1:
            middle = (low + high) // 2
            if self.tokens(sizes, middle) <= room:
                low = middle
            else:
                high = middle
        return low
