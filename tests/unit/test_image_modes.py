"""Every image mode a clinic export may hold is stored as a visible 8-bit image (issue class: 16-bit
radiographs stored blank). High-bit-depth images are windowed by the 0.5/99.5 percentiles."""

import io

import numpy as np
import pytest
from PIL import Image

from dentvlm.ingest.images import ImagePolicy, prepare_image
from dentvlm.ingest.pixels import to_8bit

POLICY = ImagePolicy(long_side=64, jpeg_quality=95)


def radiograph(dtype=np.uint16, low=1200, high=3800) -> np.ndarray:
    """A 12-bit-like X-ray: dark left edge, bright right edge, a brighter 'tooth' block in the middle."""
    values = np.tile(np.linspace(low, high, 64), (48, 1))
    values[16:32, 24:40] = high
    return values.astype(dtype)


def stored(tmp_path, image: Image.Image, fmt: str, name="x", **save) -> Image.Image:
    path = tmp_path / f"{name}.{fmt.lower()}"
    image.save(path, fmt, **save)
    return Image.open(io.BytesIO(prepare_image(path, POLICY)))


def assert_visible_gradient(image: Image.Image):
    pixels = np.asarray(image.convert("L"), dtype=np.int32)
    left, right = pixels[:, :4].mean(), pixels[:, -4:].mean()
    assert left < 40 and right > 215, (left, right)  # the whole 8-bit range is used, not clipped white
    assert pixels.std() > 40


@pytest.mark.parametrize("fmt", ["PNG", "TIFF"])
def test_16_bit_radiograph_is_windowed_not_clipped(tmp_path, fmt):
    source = Image.fromarray(radiograph())
    assert source.mode == "I;16"
    out = stored(tmp_path, source, fmt)
    assert out.mode == "L"
    assert_visible_gradient(out)
    # what Pillow's own conversion would store: every value above 255 clipped to white
    assert np.asarray(source.convert("L")).min() == 255


def test_big_endian_16_bit_tiff(tmp_path):
    source = Image.fromarray(radiograph().astype(">u2"))
    assert source.mode == "I;16B"
    assert_visible_gradient(stored(tmp_path, source, "TIFF"))


def test_32_bit_integer_and_float_images(tmp_path):
    integer = Image.fromarray(radiograph(np.int32, low=-50_000, high=2_000_000))
    assert integer.mode == "I"
    assert_visible_gradient(stored(tmp_path, integer, "TIFF", "int"))
    values = radiograph(np.float32, low=-0.5, high=0.75)
    values[0, 0], values[1, 1], values[2, 2] = np.nan, np.inf, -np.inf  # non-finite pixels do not set the window
    floating = Image.fromarray(values)
    assert floating.mode == "F"
    assert_visible_gradient(stored(tmp_path, floating, "TIFF", "float"))


def test_a_few_hot_pixels_do_not_flatten_the_window():
    values = radiograph()
    values[0, :3] = 65535  # dead/saturated detector pixels
    out = np.asarray(to_8bit(Image.fromarray(values)), dtype=np.int32)
    assert out[20:, :4].mean() < 40 and out[20:, -4:].mean() > 215  # min/max windowing would squash these


def test_constant_16_bit_image_is_stored_without_error(tmp_path):
    out = stored(tmp_path, Image.fromarray(np.full((20, 30), 4000, np.uint16)), "PNG")
    assert out.size == (30, 20) and out.mode == "L"


def test_gray_with_alpha_is_composited_over_black(tmp_path):
    gray = Image.fromarray(radiograph(np.uint8, 0, 255))
    alpha = Image.new("L", gray.size, 255)
    alpha.paste(0, (0, 0, 64, 8))  # transparent top band over bright pixels
    source = Image.merge("LA", (gray, alpha))
    out = np.asarray(stored(tmp_path, source, "PNG"), dtype=np.int32)
    assert out[:6, 40:].max() < 20 and out[20:, -4:].mean() > 215


def test_palette_with_transparency(tmp_path):
    source = Image.new("P", (40, 30), 1)
    source.putpalette([255, 255, 255, 200, 30, 30] + [0] * 762)  # 0: white (transparent), 1: red
    source.paste(0, (0, 0, 20, 30))
    out = stored(tmp_path, source, "PNG", transparency=0).convert("RGB")
    assert out.getpixel((5, 15)) == pytest.approx((0, 0, 0), abs=12)  # transparent white -> black
    r, g, b = out.getpixel((32, 15))
    assert r > 150 and g < 80
    palette_alpha = Image.new("PA", (40, 30))
    assert to_8bit(palette_alpha).mode == "RGB"


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(tmp_path, fmt):
    source = Image.new("CMYK", (40, 30), (0, 255, 255, 0))  # red
    out = stored(tmp_path, source, fmt).convert("RGB")
    r, g, b = out.getpixel((20, 15))
    assert out.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_rgba_and_bilevel(tmp_path):
    rgba = Image.new("RGBA", (40, 30), (200, 30, 30, 255))
    rgba.paste((255, 255, 255, 0), (0, 0, 10, 30))
    out = stored(tmp_path, rgba, "PNG").convert("RGB")
    assert max(out.getpixel((3, 15))) < 20 and out.getpixel((30, 15))[0] > 170
    bilevel = Image.new("1", (40, 30), 0)
    bilevel.paste(1, (20, 0, 40, 30))
    out = stored(tmp_path, bilevel, "PNG", "bilevel")
    assert out.mode == "L" and out.getpixel((5, 5)) < 20 and out.getpixel((35, 5)) > 235


def test_embedded_colour_profile_is_applied_then_dropped(tmp_path):
    from PIL import ImageCms

    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    source = Image.new("RGB", (40, 30), (200, 40, 40))
    out = stored(tmp_path, source, "PNG", "profiled", icc_profile=srgb)
    assert "icc_profile" not in out.info
    assert out.convert("RGB").getpixel((20, 15)) == pytest.approx((200, 40, 40), abs=6)
    broken = stored(tmp_path, source, "PNG", "broken", icc_profile=b"not a profile at all")
    assert broken.convert("RGB").getpixel((20, 15)) == pytest.approx((200, 40, 40), abs=6)


def test_mostly_black_radiograph_keeps_the_anatomy_s_grey_levels(tmp_path):
    """A 16-bit radiograph that is mostly black padding around a small textured anatomy, with a burned-in
    marker: the window is set on the anatomy (issue class: percentiles taken over the background leave a
    handful of grey levels of anatomy)."""
    rng = np.random.default_rng(0)
    values = np.zeros((1000, 1000), np.uint16)
    anatomy = np.tile(np.linspace(20_000, 21_000, 150), (150, 1)) + rng.normal(0, 40, (150, 150))
    values[400:550, 400:550] = np.clip(anatomy, 1, 65_534).astype(np.uint16)
    values[50:80, 50:150] = 65_535  # a burned-in marker: 0.3% of the image
    path = tmp_path / "padded.png"
    Image.fromarray(values).save(path)
    out = np.asarray(Image.open(io.BytesIO(prepare_image(path, ImagePolicy(long_side=1000, jpeg_quality=95)))))
    inside = out[410:540, 410:540]
    assert len(np.unique(inside)) > 100, len(np.unique(inside))
    assert inside.min() < 60 and inside.max() > 200  # the anatomy spans the 8-bit range
    assert out[:40].max() < 8 and out[55:75, 60:140].min() > 245  # padding black, marker white
    # what percentiles over every pixel keep: the anatomy squeezed into a few levels
    low, high = np.percentile(values, (0.5, 99.5))
    squeezed = np.clip((values[410:540, 410:540].astype(float) - low) * 255 / (high - low), 0, 255).round()
    assert len(np.unique(squeezed)) < 16


def test_background_at_the_maximum_is_left_out_too():
    values = np.full((200, 200), 65_535, np.uint16)  # saturated (burned-out) surround
    values[80:120, 80:120] = np.tile(np.linspace(1000, 3000, 40), (40, 1)).astype(np.uint16)
    out = np.asarray(to_8bit(Image.fromarray(values)))
    assert len(np.unique(out[80:120, 80:120])) > 30 and out[0, 0] == 255
