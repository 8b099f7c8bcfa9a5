"""A JPEG that needs no pixel change keeps its coded data with every metadata segment removed: the same
pixels bit for bit, no identity (issue class: shard JPEGs must come out of preparation unchanged)."""

import io
import struct

import numpy as np
import pytest
from PIL import Image

from dentvlm.ingest.images import ImagePolicy, prepare_image_bytes
from dentvlm.ingest.jpeg_clean import adobe_segment, stripped_jpeg

NAME = b"Zelda Testperson"
DECODING = {0xDB, 0xC4, 0xC0, 0xC1, 0xC2, 0xDD, 0xDA}  # tables, frame, restart interval, scans


def photo(mode="RGB", size=(80, 64)) -> Image.Image:
    channels = {"RGB": 3, "L": 1}[mode]
    values = np.random.default_rng(3).integers(0, 256, (size[1], size[0], channels)).astype(np.uint8)
    return Image.fromarray(values.squeeze(), mode)


def jpeg(image: Image.Image, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90, **options)
    return out.getvalue()


def segment(marker: int, payload: bytes) -> bytes:
    return bytes((0xFF, marker)) + struct.pack(">H", len(payload) + 2) + payload


def with_segments(data: bytes, *segments: bytes) -> bytes:
    """`data` with `segments` right after SOI."""
    return data[:2] + b"".join(segments) + data[2:]


def markers(data: bytes) -> list[int]:
    """Every marker outside entropy-coded data (segments, scans, EOI)."""
    found, position = [], 2
    while position < len(data):
        marker = data[position + 1]
        found.append(marker)
        if marker == 0xD9:
            break
        position += 2 + struct.unpack(">H", data[position + 2 : position + 4])[0]
        if marker == 0xDA:
            while not (data[position] == 0xFF and data[position + 1] not in (0, *range(0xD0, 0xD8))):
                position += 1
    return found


def same_pixels(a: bytes, b: bytes) -> bool:
    return np.array_equal(np.asarray(Image.open(io.BytesIO(a))), np.asarray(Image.open(io.BytesIO(b))))


def metadata() -> list[bytes]:
    exif = Image.Exif()
    exif[0x013B] = NAME.decode()  # Artist
    exif.get_ifd(0x8825)[2] = (52.0, 31.0, 12.0)  # GPSLatitude
    xmp = b"http://ns.adobe.com/xap/1.0/\x00<x:xmpmeta><dc:creator>" + NAME + b"</dc:creator></x:xmpmeta>"
    iptc = b"Photoshop 3.0\x00" + b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(NAME) + 5) + b"\x1c\x02\x50" + \
        struct.pack(">H", len(NAME)) + NAME
    return [segment(0xE1, b"Exif\x00\x00" + exif.tobytes()), segment(0xE1, xmp), segment(0xED, iptc),
            segment(0xFE, NAME + b" comment"), segment(0xEB, b"vendor " + NAME)]


@pytest.mark.parametrize("options", [{}, {"progressive": True}, {"restart_marker_rows": 1}, {"subsampling": 0}],
                         ids=["baseline", "progressive", "restarts", "4:4:4"])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_metadata_goes_pixels_stay(mode, options):
    source = with_segments(jpeg(photo(mode), **options), *metadata()) + b"trailing " + NAME
    stripped = stripped_jpeg(source)
    assert NAME not in stripped and b"Exif" not in stripped and b"JFIF" not in stripped
    assert set(markers(stripped)) <= DECODING | {0xD9}, [hex(m) for m in markers(stripped)]
    assert same_pixels(stripped, source)
    assert stripped.endswith(b"\xff\xd9")


def test_metadata_between_progressive_scans_goes_too():
    data = jpeg(photo(), progressive=True)
    second_scan = data.index(b"\xff\xda", data.index(b"\xff\xda") + 2)
    source = data[:second_scan] + segment(0xFE, NAME) + data[second_scan:]
    stripped = stripped_jpeg(source)
    assert NAME not in stripped and same_pixels(stripped, source)


def test_colour_transform_survives_as_a_minimal_adobe_segment():
    rgb = jpeg(photo(), keep_rgb=True)  # stored as RGB: an Adobe segment (transform 0), ids 'R', 'G', 'B'
    assert b"Adobe" in rgb
    assert b"Adobe" not in stripped_jpeg(rgb) and same_pixels(stripped_jpeg(rgb), rgb)  # the ids say RGB
    numbered = rgb.replace(b"\x03R\x11\x00G\x11\x00B\x11\x00", b"\x03\x01\x11\x00\x02\x11\x00\x03\x11\x00")
    numbered = numbered.replace(b"\x03R\x00G\x00B\x00", b"\x03\x01\x00\x02\x00\x03\x00")  # the scan's selectors
    assert numbered != rgb
    kept = stripped_jpeg(numbered)  # ids 1, 2, 3 alone would read as YCbCr: the flag must stay
    assert adobe_segment(0) in kept and same_pixels(kept, numbered)
    naive = numbered.replace(numbered[numbered.index(b"\xff\xee") : numbered.index(b"\xff\xee") + 16], b"")
    assert not same_pixels(naive, numbered)  # the check above can fail
    jfif_rgb = with_segments(rgb, segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"))
    kept = stripped_jpeg(jfif_rgb)  # JFIF says YCbCr whatever the ids
    assert adobe_segment(1) in kept and same_pixels(kept, jfif_rgb)


def test_what_it_does_not_vouch_for_is_refused():
    cmyk = io.BytesIO()
    Image.new("CMYK", (20, 20), (0, 255, 255, 0)).save(cmyk, "JPEG")
    data = jpeg(photo())
    assert stripped_jpeg(cmyk.getvalue()) is None  # four components
    assert stripped_jpeg(data[: len(data) // 2]) is None  # ends early
    assert stripped_jpeg(b"\x89PNG\r\n\x1a\n") is None
    assert stripped_jpeg(data.replace(b"\xff\xc0", b"\xff\xc9", 1)) is None  # arithmetic coding
    assert stripped_jpeg(data[:2] + b"junk" + data[2:]) is None  # bytes between segments


def test_preparation_keeps_only_an_unchanged_jpeg():
    policy = ImagePolicy(long_side=100)
    clean = with_segments(jpeg(photo()), *metadata())
    kept = prepare_image_bytes(clean, policy, "clean")
    assert kept == stripped_jpeg(clean) and same_pixels(kept, clean)
    exif = Image.Exif()
    exif[0x0112] = 6
    rotated = prepare_image_bytes(jpeg(photo(), exif=exif.tobytes()), policy, "rotated")
    assert Image.open(io.BytesIO(rotated)).size == (64, 80)  # re-encoded upright
    larger = prepare_image_bytes(jpeg(photo(size=(160, 64))), policy, "larger")
    assert Image.open(io.BytesIO(larger)).size == (100, 40)
    assert NAME not in rotated + larger
