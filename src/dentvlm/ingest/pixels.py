"""Any image mode a clinic export may hold -> 8-bit grayscale (``L``) or ``RGB``, the two modes stored.

Pillow's own ``convert`` clips high-bit-depth images: a 16-bit radiograph (``I;16``, values up to
65,535) becomes all white. Here integer and float images are windowed instead: the 0.5th and 99.5th
percentiles of the finite pixel values map to 0 and 255, linearly, clipping outside. Percentiles
rather than min/max because X-ray exports often hold a few saturated or dead pixels (burned-in
markers, detector defects) that would squeeze the whole anatomy into a handful of gray levels.

Background rule: the pixels exactly at the image's minimum value are background when they are at least
`BACKGROUND_SHARE` (5%) of the finite pixels, and are left out of the percentiles; then the pixels exactly
at its maximum value, when they are at least 5% of the pixels left (a saturated surround, or burned-in
markers that are few in the image but many beside a small anatomy). A radiograph that is mostly black
padding around a small anatomy would otherwise spend its window on the padding and the markers, and keep
a handful of gray levels of the anatomy. Left-out pixels still map to black (or white): they lie outside
the window.

Memory: a 16-bit image of tens of megapixels takes a few bytes per pixel decoded, and windowing it at full
size in float64 took over twenty times that. High-bit-depth images are first averaged down, in blocks of
`factor` x `factor` pixels over bands of rows (float32 out, float64 sums), to about the size they will be
stored at, then windowed; the percentiles come from the averaged pixels (a bounded sample of them).
So one image's preparation needs little more than its decoded size.

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
BACKGROUND_SHARE = 0.05
GRAY_MODES = ("1", "L", "LA", "La", "I", "F")
BAND_PIXELS = 1 << 19  # source pixels converted to float at a time
SAMPLE_PIXELS = 1 << 20  # most values the percentiles are taken over (a strided sample beyond)


class UnsupportedMode(ValueError):
    """An image mode that cannot be turned into grayscale or RGB."""


def is_high_bit_depth(mode: str) -> bool:
    return mode in ("I", "F") or mode.startswith("I;16")


def to_8bit(image: Image.Image, factor: int = 1) -> Image.Image:
    """`image` as ``L`` (grayscale sources) or ``RGB`` (everything else), transparency flattened.

    A high-bit-depth image is averaged down by `factor` first (see the module doc); other images keep
    their size (Pillow's resize reduces them with bounded memory itself). An ``L`` or ``RGB`` image
    comes back as it is, not copied."""
    mode = image.mode
    if is_high_bit_depth(mode):
        return window(block_mean(image, factor))
    if "transparency" in image.info and mode in ("L", "RGB", "P"):
        image = image.convert("LA" if mode == "L" else "RGBA")  # a tRNS chunk: a transparent colour
        mode = image.mode
    if mode in ("LA", "La", "PA", "RGBA", "RGBa"):
        return _over_black(image)
    if mode in ("L", "RGB"):
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


def block_mean(image: Image.Image, factor: int) -> np.ndarray:
    """float32 means of `factor` x `factor` blocks of a one-band image (edge blocks may be smaller), made
    band by band so that no full-size float copy of the source exists. Non-finite pixels are left out of
    their block's mean (a block with none finite is NaN); with `factor` 1 the pixels come back as float32."""
    width, height = image.size
    rows = max(1, BAND_PIXELS // (width * factor)) * factor
    out = np.empty((-(-height // factor), -(-width // factor)), np.float32)
    for top in range(0, height, rows):
        band = np.asarray(image.crop((0, top, width, min(top + rows, height))), dtype=np.float32)
        if factor > 1:
            band = _band_mean(band, factor, floating=image.mode == "F")
        out[top // factor : top // factor + band.shape[0]] = band
    return out


def _band_mean(band: np.ndarray, factor: int, floating: bool) -> np.ndarray:
    """Block means of one band of rows (sums in float64, so that equal blocks get equal means)."""
    starts = [np.arange(0, length, factor) for length in band.shape]
    if floating:  # only float images hold NaN or infinity: they count for nothing
        finite = np.isfinite(band)
        sums, counts = _block_sum(np.where(finite, band, 0), starts), _block_sum(finite, starts)
    else:
        sums = _block_sum(band, starts)
        counts = np.outer(*(np.diff(np.append(s, length)) for s, length in zip(starts, band.shape)))
    with np.errstate(invalid="ignore"):
        return sums / counts


def _block_sum(values: np.ndarray, starts: list[np.ndarray]) -> np.ndarray:
    """Sums over the blocks that start at `starts` (rows, columns)."""
    return np.add.reduceat(np.add.reduceat(values, starts[1], axis=1, dtype=np.float64), starts[0], axis=0)


def window(values: np.ndarray) -> Image.Image:
    """An integer or float pixel array rescaled to 8-bit ``L`` by percentile windowing (see module doc)."""
    bounds = window_bounds(values)
    if bounds is None:  # no finite pixel, or no contrast to keep
        return Image.new("L", (values.shape[1], values.shape[0]), 0)
    low, high = bounds
    out = np.empty(values.shape, np.uint8)
    rows = max(1, BAND_PIXELS // values.shape[1])
    for top in range(0, values.shape[0], rows):
        band = np.nan_to_num(values[top : top + rows], nan=low, posinf=high, neginf=low)
        band -= low
        band *= 255.0 / (high - low)
        out[top : top + rows] = np.rint(np.clip(band, 0, 255, out=band), out=band)
    return Image.fromarray(out)


def window_bounds(values: np.ndarray) -> tuple[float, float] | None:
    """The values mapped to black and white: percentiles of the finite, non-background pixels (a strided
    sample of at most `SAMPLE_PIXELS`), else min and max; None when there is no contrast."""
    sample = values.ravel()[:: -(-values.size // SAMPLE_PIXELS)]
    finite = sample[np.isfinite(sample)]
    if finite.size == 0:
        return None
    lowest, highest = float(finite.min()), float(finite.max())
    anatomy = finite
    for extreme in (lowest, highest):
        background = anatomy == extreme
        if background.sum() >= BACKGROUND_SHARE * anatomy.size and not background.all():
            anatomy = anatomy[~background]
    low, high = (float(v) for v in np.percentile(anatomy, WINDOW_PERCENTILES))
    if high <= low:  # nearly constant: fall back to the full range so a small structure still shows
        low, high = lowest, highest
    return (low, high) if high > low else None


def _over_black(image: Image.Image) -> Image.Image:
    gray = image.mode in ("LA", "La")
    rgba = image.convert("LA" if gray else "RGBA")  # premultiplied La/RGBa and PA unpremultiplied first
    background = Image.new(rgba.mode[0] if gray else "RGB", rgba.size, 0)
    background.paste(rgba.convert("L" if gray else "RGB"), mask=rgba.getchannel("A"))
    return background
