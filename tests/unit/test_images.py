import io

import pytest
from PIL import Image

from dentvlm.ingest.images import BOMB, CORRUPT, MISSING, TRUNCATED, ImagePolicy, ImageRejected, prepare_image


def jpeg(width, height, color=(200, 30, 30), exif_orientation=None) -> bytes:
    image = Image.new("RGB", (width, height), color)
    # a marker in the top-left corner of the stored pixels, to see where rotation puts it
    image.paste((0, 0, 255), (0, 0, width // 4, height // 4))
    out = io.BytesIO()
    exif = Image.Exif()
    if exif_orientation:
        exif[0x0112] = exif_orientation
    image.save(out, "JPEG", quality=95, exif=exif.tobytes())
    return out.getvalue()


def test_resizes_long_side_and_never_upscales(tmp_path):
    big, small = tmp_path / "big.jpg", tmp_path / "small.jpg"
    big.write_bytes(jpeg(1600, 1200))
    small.write_bytes(jpeg(80, 60))
    policy = ImagePolicy(long_side=200)
    assert Image.open(io.BytesIO(prepare_image(big, policy))).size == (200, 150)
    assert Image.open(io.BytesIO(prepare_image(small, policy))).size == (80, 60)


def test_exif_orientation_is_applied(tmp_path):
    path = tmp_path / "rotated.jpg"
    path.write_bytes(jpeg(400, 200, exif_orientation=6))  # stored landscape, shown portrait
    out = Image.open(io.BytesIO(prepare_image(path, ImagePolicy(long_side=100))))
    assert out.size == (50, 100)
    assert not out.getexif().get(0x0112)  # the stored image is upright; no tag to apply twice
    # orientation 6 = rotate 90 degrees clockwise: the stored top-left marker moves to the top-right
    r, g, b = out.convert("RGB").getpixel((out.width - 3, 3))
    assert b > 150 and r < 100


@pytest.mark.parametrize(
    "content, reason",
    [(b"not an image at all", CORRUPT), (None, MISSING)],
)
def test_unusable_files_are_rejected_with_a_reason(tmp_path, content, reason):
    path = tmp_path / "x.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageRejected) as info:
        prepare_image(path, ImagePolicy())
    assert info.value.reason == reason and "x.jpg" in str(info.value)


def test_truncated_jpeg_is_rejected(tmp_path):
    data = jpeg(600, 400)
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ImageRejected) as info:
        prepare_image(path, ImagePolicy(long_side=600))
    assert info.value.reason == TRUNCATED


def test_decompression_bomb_is_rejected_before_decoding(tmp_path):
    path = tmp_path / "bomb.png"
    Image.new("1", (6000, 6000)).save(path)  # tiny file, 36 M pixels once decoded
    assert path.stat().st_size < 100_000
    with pytest.raises(ImageRejected) as info:
        prepare_image(path, ImagePolicy(max_source_pixels=10_000_000))
    assert info.value.reason == BOMB and "6000x6000" in str(info.value)


def test_grayscale_stays_grayscale(tmp_path):
    path = tmp_path / "xray.png"
    Image.new("L", (300, 150), 128).save(path)
    assert Image.open(io.BytesIO(prepare_image(path, ImagePolicy(long_side=100)))).mode == "L"


@pytest.mark.parametrize("data", [b"not an image at all", b"\xff\xd8\xff\xe0" + b"\x00" * 64,
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 40])
def test_a_corrupt_image_message_names_the_file_not_a_buffer(tmp_path, data):
    """Pillow's messages carry the repr of the in-memory buffer (<_io.BytesIO object at 0x...>)."""
    from dentvlm.ingest.images import ImagePolicy, ImageRejected, prepare_image

    path = tmp_path / "photo-17.jpg"
    path.write_bytes(data)
    with pytest.raises(ImageRejected) as info:
        prepare_image(path, ImagePolicy())
    assert str(info.value).startswith(f"{path}: ") and "BytesIO" not in str(info.value) and "0x" not in str(info.value)
