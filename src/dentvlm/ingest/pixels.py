"""Any image mode a clinic export may hold -> 8-bit grayscale (``L``) or ``RGB``, the two modes stored.

Pillow's own ``convert`` clips high-bit-depth images: a 16-bit radiograph (``I;16``, values up to
65,535) becomes all white. Here integer and float images are windowed instead: the 0.5th and 99.5th
percentiles of the finite pixel values map to 0 and 255, linearly, clipping outside. Percentiles
rather than min/max because X-ray exports often hold a few saturated or dead pixels (burned-in
markers, detector defects) that would squeeze the whole anatomy into a handful of gray levels.

Transparency is composited over black: a radiograph's empty background is black, so transparent
padding reads as background rather than as dense bone (white).

An embedded colour profile (a camera's Adobe RGB or Display P3, a print CMYK profile) is applied, to
sRGB, before the profile itself is dropped with the rest of the metadata, so colours stay as seen.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

try:
    from PIL import ImageCms

    _SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
except (ImportError, OSError):  # Pillow built without littlecms: profiles are dropped unapplied
    ImageCms = None

WINDOW_PERCENTILES = (0.5, 99.5)
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")


class UnsupportedMode(ValueError):
    """An image mode that cannot be turned into grayscale or RGB."""


def is_high_bit_depth(mode: str) -> bool:
    return mode in ("I", "F") or mode.startswith("I;16")


def to_8bit(image: Image.Image) -> Image.Image:
    """`image` as ``L`` (grayscale sources) or ``RGB`` (everything else), transparency flattened."""
    mode = image.mode
    if is_high_bit_depth(mode):
        return window(image)
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        image = image.convert("LA" if mode == "L" else "RGBA")  # a tRNS chunk: a transparent colour
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return _over_black(image)
    if mode == "L":
        return image
    if mode == "1":
        return image.convert("L")
    try:
        return image.convert("RGB")  # P, CMYK (Pillow undoes Adobe's inversion), YCbCr, RGBX, HSV
    except ValueError as exc:
        raise UnsupportedMode(f"image mode {mode!r} cannot be converted to RGB ({exc})") from None


def to_srgb(image: Image.Image) -> Image.Image:
    """`image` with its embedded ICC profile applied (RGB/RGBA/CMYK sources), or unchanged when it has
    none or the profile is unreadable (untrusted bytes: never an error, the pixels are still usable)."""
    icc = image.info.get("icc_profile")
    if not icc or ImageCms is None or image.mode not in ("RGB", "RGBA", "CMYK"):
        return image
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        return ImageCms.profileToProfile(image, source, _SRGB, outputMode="RGBA" if image.mode == "RGBA" else "RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return image


def window(image: Image.Image) -> Image.Image:
    """An integer or float image rescaled to 8-bit ``L`` by percentile windowing (see module doc)."""
    values = np.asarray(image).astype(np.float64)
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return Image.new("L", image.size, 0)
    low, high = np.percentile(finite, WINDOW_PERCENTILES)
    if high <= low:  # nearly constant: fall back to the full range so a small structure still shows
        low, high = finite.min(), finite.max()
    if high <= low:  # truly constant: no contrast to keep
        return Image.new("L", image.size, 0)
    scaled = (np.nan_to_num(values, nan=low, posinf=high, neginf=low) - low) * (255.0 / (high - low))
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _over_black(image: Image.Image) -> Image.Image:
    gray = image.mode in ("LA", "La")
    rgba = image.convert("LA" if gray else "RGBA")  # premultiplied La/RGBa and PA unpremultiplied first
    background = Image.new(rgba.mode[0] if gray else "RGB", rgba.size, 0)
    background.paste(rgba.convert("L" if gray else "RGB"), mask=rgba.getchannel("A"))
    return background
