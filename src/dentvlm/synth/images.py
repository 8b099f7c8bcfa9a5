"""Synthetic intraoral photographs and radiographs in which each condition leaves a bold, learnable trace.

The traces are meant to survive a downscale to a 112 px long side, so a tiny model can learn them in
minutes: large shapes, consistent colours, a good share of the image. Patient-level variation in
tooth and gum shade, lighting, framing and noise keeps the task from being solvable by one global
colour. Everything is drawn from the `numpy.random.Generator` passed in, so images are reproducible.
"""

from __future__ import annotations

import colorsys
import functools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

Color = tuple[int, int, int]
JPEG_QUALITY = 90
EXIF_ORIENTATION_TAG = 0x0112
# Orientation tag -> transpose that turns the upright picture into the stored pixels (the inverse
# of what `PIL.ImageOps.exif_transpose` applies when reading).
STORED_TRANSPOSE = {6: Image.Transpose.ROTATE_90, 8: Image.Transpose.ROTATE_270}

# Condition colours (photographs). Chosen away from every healthy tooth and gum shade.
INFLAMED_GUM: Color = (222, 32, 48)
ROOT: Color = (196, 150, 62)
CARIES_HALO: Color = (128, 80, 36)
CARIES_CORE: Color = (40, 24, 14)
PULP_TOOTH: Color = (150, 118, 140)
PULP_HALO: Color = (196, 28, 118)  # crimson-magenta, a different hue from inflamed gum
PULP_CORE: Color = (20, 6, 12)
# Conditions with a drawing of their own; any other class name gets a generic mark.
HANDLED = frozenset({"malocclusion", "gingivitis", "dentition defect", "caries", "pulpitis", "periodontitis"})


@dataclass(frozen=True)
class Appearance:
    """The healthy look of one patient's mouth, shared by all images of the patient.

    Attributes:
        tooth: Enamel shade, white to ivory.
        gum: Healthy gum shade, pale to deep pink.
        mouth: Shade of the dark oral cavity behind the teeth.
        teeth: Teeth per arch visible in a frontal photograph.
    """

    tooth: Color
    gum: Color
    mouth: Color
    teeth: int


def random_appearance(rng: np.random.Generator) -> Appearance:
    """A healthy-looking mouth; shades vary so that colour alone does not give the labels away."""
    ivory = rng.uniform(0.0, 1.0)
    tooth = (int(242 - 14 * ivory), int(238 - 28 * ivory), int(230 - 62 * ivory))
    pale = rng.uniform(0.0, 1.0)  # deep pink to pale pink; blue above green keeps it pink, never tan
    gum = (int(rng.integers(195, 238)), int(95 + 60 * pale), int(110 + 60 * pale + rng.integers(0, 15)))
    mouth = (int(rng.integers(30, 62)), int(rng.integers(8, 24)), int(rng.integers(12, 30)))
    return Appearance(tooth, gum, mouth, int(rng.integers(7, 10)))


def generic_mark(name: str) -> tuple[Color, int]:
    """A distinct, stable colour and shape index (0-2) for a condition without its own drawing."""
    code = zlib.crc32(name.encode("utf-8"))  # stable across runs, unlike hash()
    red, green, blue = colorsys.hsv_to_rgb((code % 360) / 360.0, 0.9, 0.95)
    return (int(red * 255), int(green * 255), int(blue * 255)), (code // 360) % 3


@dataclass
class _Arch:
    """Geometry of one row of teeth: slot centres, widths, crown heights, tilts and gaps."""

    x: np.ndarray
    width: np.ndarray
    height: np.ndarray
    edge: np.ndarray  # y of each tooth's biting edge
    tilt: np.ndarray
    present: np.ndarray
    sign: int  # +1 when the gum lies below the edge (lower arch), -1 above (upper arch)


def _jitter(color: Color, rng: np.random.Generator, spread: int = 10) -> Color:
    return tuple(int(np.clip(c + rng.integers(-spread, spread + 1), 0, 255)) for c in color)  # type: ignore


def _shade(color: Color, factor: float) -> Color:
    return tuple(int(c * factor) for c in color)  # type: ignore[return-value]


def _teeth(arch: _Arch) -> list[int]:
    """Indices of the teeth present in the arch."""
    return [int(i) for i in np.flatnonzero(arch.present)]


def _pick(teeth: list[int], count: int, rng: np.random.Generator) -> list[int]:
    """`count` distinct teeth (fewer when fewer are present)."""
    return [int(i) for i in rng.choice(teeth, size=min(len(teeth), count), replace=False)]


def _near_centre(arch: _Arch, among: int, rng: np.random.Generator) -> int:
    """One of the `among` present teeth nearest the middle of the arch, where lesions are seen best."""
    teeth = np.flatnonzero(arch.present)
    return int(rng.choice(teeth[np.argsort(np.abs(teeth - (len(arch.x) - 1) / 2))[:among]]))


def _box(cx: float, cy: float, w: float, h: float, angle: float = 0.0, taper: float = 1.0) -> list[tuple]:
    """A chamfered (tooth-like) box around (cx, cy) rotated by `angle` degrees; `taper` narrows its top."""
    c = min(w, h) * 0.22
    top, bottom = w * taper / 2, w / 2
    points = [(-top + c * taper, -h / 2), (top - c * taper, -h / 2), (top, -h / 2 + c), (bottom, h / 2 - c),
              (bottom - c, h / 2), (-bottom + c, h / 2), (-bottom, h / 2 - c), (-top, -h / 2 + c)]
    cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + x * cos - y * sin, cy + x * sin + y * cos) for x, y in points]


def _root(cx: float, cy: float, neck: float, length: float, angle: float, sign: int,
          taper: float) -> list[tuple]:
    """A root box `neck` wide at the crown, narrowing by `taper` towards the apex (away from the bite)."""
    if sign < 0:  # upper arch: apex at the top
        return _box(cx, cy, neck, length, angle, taper)
    return _box(cx, cy, neck * taper, length, angle, 1 / taper)


def _along(arch: _Arch, i: int, distance: float) -> tuple[float, float]:
    """The point `distance` from crown `i`'s centre along its (tilted) axis, towards the gum."""
    angle = math.radians(arch.tilt[i])
    cx, cy = arch.x[i], arch.edge[i] + arch.sign * arch.height[i] / 2
    d = arch.sign * distance
    return cx - d * math.sin(angle), cy + d * math.cos(angle)


def _ellipse(draw: ImageDraw.ImageDraw, cx: float, cy: float, rx: float, ry: float, fill) -> None:
    draw.ellipse((cx - rx, cy - ry, cx + rx, cy + ry), fill=fill)


def _mark(draw: ImageDraw.ImageDraw, shape: int, cx: float, cy: float, r: float, fill) -> None:
    """Shape 0: diamond, 1: ring, 2: triangle."""
    if shape == 0:
        draw.polygon([(cx, cy - r), (cx + r, cy), (cx, cy + r), (cx - r, cy)], fill=fill)
    elif shape == 1:
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(r * 0.45)))
    else:
        draw.polygon([(cx, cy - r), (cx + r, cy + r * 0.8), (cx - r, cy + r * 0.8)], fill=fill)


def _arch(n: int, cx: float, span: float, edge: float, height: float, upper: bool,
          labels: Sequence[str], rng: np.random.Generator) -> _Arch:
    """Lay out a row; malocclusion scrambles it, dentition defect removes teeth."""
    k = np.arange(n) - (n - 1) / 2
    rel = np.abs(k) / max(abs(k).max(), 1)
    width = 1.3 - 0.55 * rel  # incisors wide, side teeth narrow (perspective)
    width *= span / width.sum()
    x = cx - span / 2 + np.cumsum(width) - width / 2
    heights = height * (1.0 - 0.2 * rel) * (1.0 if upper else 0.85)
    sign = -1 if upper else 1
    edge_y = edge - sign * 0.12 * height * rel**2  # smile curve
    tilt = rng.normal(0, 2.0, n)
    if "malocclusion" in labels:  # strong, irregular offsets, tilts and overlaps
        x = cx + (x - cx) * 0.82 + rng.normal(0, 0.12, n) * width
        edge_y = edge_y + rng.choice((-1, 1), n) * rng.uniform(0.2, 0.4, n) * heights
        tilt = rng.choice((-1, 1), n) * rng.uniform(12, 28, n)
    present = np.ones(n, dtype=bool)
    if "dentition defect" in labels:  # two or three adjacent teeth missing: a wide dark gap
        start = int(rng.integers(0, n - 2))
        present[start:start + int(rng.integers(2, 4))] = False
    return _Arch(x, width, heights, edge_y, tilt, present, sign)


def _draw_photo_arch(draw: ImageDraw.ImageDraw, arch: _Arch, look: Appearance, labels: Sequence[str],
                     far: float, rng: np.random.Generator) -> None:
    """Gum, roots, crowns and lesions of one arch; `far` is the image border behind the gum."""
    sign, present = arch.sign, arch.present
    inflamed, receded = "gingivitis" in labels, "periodontitis" in labels
    gum = _jitter(INFLAMED_GUM if inflamed else look.gum, rng, 12)
    margin = arch.edge + sign * arch.height  # crown-gum junction of each tooth
    recession = (0.55 if receded else 0.0) * arch.height
    gum_line = margin + sign * recession
    gum_line = np.where(present, gum_line, gum_line - sign * 0.25 * arch.height)  # low ridge over a gap
    papilla = (0.0 if receded else 0.32 if inflamed else 0.16) * arch.height
    points = [(arch.x[0] - arch.width[0] * 3, far), (arch.x[0] - arch.width[0] * 3, gum_line[0])]
    for i in range(len(arch.x)):
        left = arch.x[i] - arch.width[i] / 2
        points += [(left, gum_line[i] - sign * papilla[i]),
                   (arch.x[i], gum_line[i] + sign * 0.06 * arch.height[i])]
    points += [(arch.x[-1] + arch.width[-1] * 3, gum_line[-1]), (arch.x[-1] + arch.width[-1] * 3, far)]
    draw.polygon(points, fill=gum)
    if receded:  # long yellow roots between the crowns and the receded gum, dark triangles between them
        for i in _teeth(arch):
            length = recession[i] + 0.15 * arch.height[i]
            x, y = _along(arch, i, arch.height[i] / 2 + length / 2)
            draw.polygon(_root(x, y, arch.width[i] * 0.6, length, arch.tilt[i], sign, 0.7),
                         fill=_jitter(ROOT, rng, 10))
    for i in _teeth(arch):
        shade = _jitter(look.tooth, rng, 6)
        draw.polygon(_box(*_along(arch, i, 0.0), arch.width[i] * 0.9, arch.height[i], arch.tilt[i]),
                     fill=shade, outline=_shade(shade, 0.8), width=max(1, int(arch.width[i] * 0.05)))
    if inflamed:  # a thick, bulging bright-red margin over the crown necks
        for i in _teeth(arch):
            _ellipse(draw, arch.x[i], gum_line[i], arch.width[i] * 0.55, arch.height[i] * 0.2, gum)
    _draw_photo_lesions(draw, arch, labels, rng)


def _draw_photo_lesions(draw: ImageDraw.ImageDraw, arch: _Arch, labels: Sequence[str],
                        rng: np.random.Generator) -> None:
    teeth = _teeth(arch)
    if "caries" in labels:  # several dark-brown blotches with a brown rim
        for i in _pick(teeth, int(rng.integers(2, 4)), rng):
            x, y = _along(arch, i, rng.uniform(-0.2, 0.15) * arch.height[i])
            r = arch.width[i] * rng.uniform(0.36, 0.44)
            _ellipse(draw, x, y, r, r * 1.1, _jitter(CARIES_HALO, rng))
            _ellipse(draw, x, y, r * 0.6, r * 0.65, _jitter(CARIES_CORE, rng))
    if "pulpitis" in labels:  # one tooth turns grey-violet around a large dark lesion with a red halo
        i = _near_centre(arch, 3, rng)
        centre, r = _along(arch, i, 0.0), arch.width[i] * 0.75
        draw.polygon(_box(*centre, arch.width[i] * 0.9, arch.height[i], arch.tilt[i]),
                     fill=_jitter(PULP_TOOTH, rng))
        _ellipse(draw, *centre, r, r, _jitter(PULP_HALO, rng))
        _ellipse(draw, *centre, r * 0.55, r * 0.55, _jitter(PULP_CORE, rng, 6))
    _generic_marks(draw, arch, labels, None, rng)


def _generic_marks(draw: ImageDraw.ImageDraw, arch: _Arch, labels: Sequence[str], gray: int | None,
                   rng: np.random.Generator) -> None:
    """Conditions without a drawing of their own: a bold mark of their own colour and shape on two teeth."""
    for label in labels:
        if label not in HANDLED:
            color, shape = generic_mark(label)
            for i in _pick(_teeth(arch), 2, rng):
                fill = gray if gray is not None else _jitter(color, rng, 8)
                _mark(draw, shape, *_along(arch, i, 0.0), arch.width[i] * 0.5, fill)


def draw_photograph(size: tuple[int, int], look: Appearance, labels: Sequence[str],
                    rng: np.random.Generator) -> Image.Image:
    """An upright intraoral photograph (frontal view, or a close-up of one arch) showing `labels`.

    Args:
        size: (width, height) in pixels.
        look: The patient's healthy appearance.
        labels: Conditions to draw (a subset of the checkup's labels: not every photo shows all).
        rng: Source of all randomness of this image.
    """
    width, height = size
    image = Image.new("RGB", size, _jitter(look.mouth, rng, 6))
    draw = ImageDraw.Draw(image)
    zoom = rng.uniform(0.9, 1.1)
    cx = width * rng.uniform(0.45, 0.55)
    view = rng.choice(3, p=(0.7, 0.15, 0.15))  # frontal, upper close-up, lower close-up
    if view == 0:
        bite = height * rng.uniform(0.46, 0.54)
        rows = [(True, bite - 0.01 * height), (False, bite + 0.01 * height)]
        n, crown = look.teeth, 0.25 * height * zoom
    else:
        rows = [(view == 1, height * (0.72 if view == 1 else 0.28))]
        n, crown = look.teeth - 2, 0.4 * height * zoom
    lesion_row = int(rng.integers(0, len(rows)))  # pulpitis: one large lesion per photograph
    for row, (upper, edge) in enumerate(rows):
        arch = _arch(n, cx, width * 0.9 * zoom, edge, crown, upper, labels, rng)
        arch_labels = [lb for lb in labels if lb != "pulpitis" or row == lesion_row]
        _draw_photo_arch(draw, arch, look, arch_labels, 0.0 if upper else float(height), rng)
    # Nearest-neighbour rotation is ten times cheaper; the blur in _finish smooths its jagged edges.
    image = image.rotate(float(rng.uniform(-7, 7)), resample=Image.Resampling.NEAREST, fillcolor=look.mouth)
    return _finish(image, rng, blur=1, noise=rng.uniform(3, 7), tint=0.06)


def draw_radiograph(size: tuple[int, int], look: Appearance, labels: Sequence[str],
                    rng: np.random.Generator) -> Image.Image:
    """A grayscale panoramic radiograph: bright teeth in grey bone on a dark background.

    Args:
        size: (width, height) in pixels.
        look: The patient's appearance (only its tooth count is used).
        labels: Conditions to draw.
        rng: Source of all randomness of this image.
    """
    width, height = size
    image = Image.new("L", size, int(rng.integers(18, 40)))
    draw = ImageDraw.Draw(image)
    bite = height * rng.uniform(0.47, 0.53)
    lesion_upper = bool(rng.random() < 0.5)  # the one periapical lesion of pulpitis sits in one arch
    for upper in (True, False):
        arch = _arch(look.teeth + 6, width / 2, width * 0.88, bite + (-0.02 if upper else 0.02) * height,
                     0.13 * height, upper, labels, rng)
        arch_labels = [lb for lb in labels if lb != "pulpitis" or upper == lesion_upper]
        _draw_xray_arch(draw, arch, arch_labels, height, rng)
    return _finish(image, rng, blur=int(rng.integers(1, 3)), noise=rng.uniform(4, 8), tint=0.0)


def _draw_xray_arch(draw: ImageDraw.ImageDraw, arch: _Arch, labels: Sequence[str], height: int,
                    rng: np.random.Generator) -> None:
    sign, root = arch.sign, 1.7 * arch.height
    far = 0.0 if sign < 0 else float(height)
    neck = arch.edge + sign * arch.height
    # Periodontitis lowers the alveolar bone crest far down the roots, jaggedly.
    crest = neck + sign * (root * rng.uniform(0.65, 0.85, len(neck)) if "periodontitis" in labels else 3.0)
    side = arch.width[0] * 3
    draw.polygon([(arch.x[0] - side, far), (arch.x[0] - side, crest[0]), *zip(arch.x, crest, strict=True),
                  (arch.x[-1] + side, crest[-1]), (arch.x[-1] + side, far)],
                 fill=int(rng.integers(85, 115)))
    teeth = _teeth(arch)
    lesion = -1
    if "pulpitis" in labels:
        lesion = _near_centre(arch, 4, rng)
    for i in teeth:
        apex = _along(arch, i, arch.height[i] / 2 + root[i])
        if i == lesion:  # a large radiolucent circle around the root tip
            _ellipse(draw, *apex, arch.width[i] * 1.2, arch.width[i] * 1.2, 22)
        draw.polygon(_root(*_along(arch, i, arch.height[i] / 2 + root[i] / 2), arch.width[i] * 0.6, root[i],
                           arch.tilt[i], sign, 0.45), fill=int(rng.integers(165, 190)))
        crown = _along(arch, i, 0.0)
        draw.polygon(_box(*crown, arch.width[i] * 0.88, arch.height[i], arch.tilt[i]),
                     fill=int(rng.integers(210, 240)))
        pulp = [_along(arch, i, arch.height[i] * 0.1), _along(arch, i, arch.height[i] / 2 + root[i] * 0.95)]
        draw.line(pulp, fill=95, width=max(1, int(arch.width[i] * 0.12)))
        if i == lesion:  # deep crown lesion reaching the pulp
            _ellipse(draw, *crown, arch.width[i] * 0.4, arch.height[i] * 0.4, 35)
    if "caries" in labels:  # dark spots in the crowns
        for i in _pick(teeth, int(rng.integers(4, 7)), rng):
            r = arch.width[i] * 0.38
            _ellipse(draw, *_along(arch, i, -arch.height[i] * 0.1), r, r, 40)
    _generic_marks(draw, arch, labels, 255, rng)  # bright, like metal


@functools.lru_cache(maxsize=8)
def _vignette(width: int, height: int) -> np.ndarray:
    """Squared distance from the centre, 0 there and 1 in the corners (cached: one per image size)."""
    ys, xs = np.ogrid[-1:1:complex(0, height), -1:1:complex(0, width)]
    return ((xs**2 + ys**2) / 2).astype(np.float32)


def _finish(image: Image.Image, rng: np.random.Generator, blur: int, noise: float,
            tint: float) -> Image.Image:
    """Camera effects: soft focus, exposure and white balance, vignetting, sensor noise.

    Box blur and luminance-only noise keep this cheap; it is most of the time spent per image.
    """
    image = image.filter(ImageFilter.BoxBlur(blur))
    pixels = np.asarray(image, dtype=np.float32)
    light = (1.0 - rng.uniform(0.1, 0.35) * _vignette(image.width, image.height)) * rng.uniform(0.82, 1.15)
    light += rng.standard_normal(light.shape, dtype=np.float32) * (noise / 128.0)
    if pixels.ndim == 3:
        pixels *= light[..., None] * rng.uniform(1 - tint, 1 + tint, 3).astype(np.float32)
    else:
        pixels *= light
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8), image.mode)


def save_jpeg(image: Image.Image, path: Path, orientation: int = 1) -> None:
    """Write a JPEG with fixed settings and no metadata but, when not 1, an EXIF Orientation tag.

    Args:
        image: The upright picture.
        path: Output file.
        orientation: 1 (upright), 6 or 8; for 6 and 8 the pixels are stored rotated so that
            `PIL.ImageOps.exif_transpose` restores the upright picture, as with a phone camera.
    """
    if orientation == 1:
        image.save(path, format="JPEG", quality=JPEG_QUALITY)
        return
    exif = Image.Exif()
    exif[EXIF_ORIENTATION_TAG] = orientation
    stored = image.transpose(STORED_TRANSPOSE[orientation])
    stored.save(path, format="JPEG", quality=JPEG_QUALITY, exif=exif.tobytes())
