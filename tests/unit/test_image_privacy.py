"""Stored images carry pixels only: a name planted in any metadata place of any source format never
reaches a shard (issue class: identity in image metadata)."""

import io
import json
import struct
import tarfile

import numpy as np
import pytest
from PIL import Image, PngImagePlugin, TiffImagePlugin, features

from dentvlm.ingest.images import ImagePolicy, prepare_image
from dentvlm.sharding import build_shards

NAME = "Zelda Testperson"
POLICY = ImagePolicy(long_side=48, jpeg_quality=85)


def exif_with_name() -> bytes:
    exif = Image.Exif()
    exif[0x010E] = f"{NAME} ImageDescription"  # ImageDescription
    exif[0x013B] = f"{NAME} Artist"  # Artist
    exif[0x8298] = f"{NAME} Copyright"  # Copyright
    return exif.tobytes()


XMP = f'<x:xmpmeta xmlns:x="adobe:ns:meta/"><dc:creator>{NAME} XMP</dc:creator></x:xmpmeta>'.encode()
# An ICC profile whose description tag holds the name: what matters is that its bytes are not copied.
ICC = b"\x00\x00\x01\x00ADBE" + b"\x00" * 120 + f"desc {NAME} ICC".encode()


def iptc_app13() -> bytes:
    """A Photoshop APP13 segment with an IPTC By-line (2:80) record holding the name."""
    record = b"\x1c\x02\x50" + struct.pack(">H", len(NAME)) + NAME.encode()
    resource = b"8BIM\x04\x04\x00\x00" + struct.pack(">I", len(record)) + record
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def photo() -> Image.Image:
    image = Image.new("RGB", (96, 64), (180, 60, 60))
    image.paste((20, 20, 200), (0, 0, 30, 30))
    return image


def jpeg_source() -> bytes:
    out = io.BytesIO()
    photo().save(out, "JPEG", quality=90, comment=f"{NAME} comment".encode(), exif=exif_with_name(), xmp=XMP,
                 icc_profile=ICC)
    data = out.getvalue()
    return data[:2] + iptc_app13() + data[2:]  # IPTC right after SOI


def png_source(mode="RGB") -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("Author", f"{NAME} tEXt")
    info.add_text("Comment", f"{NAME} zTXt", zip=True)
    info.add_itxt("Description", f"{NAME} iTXt", lang="en", tkey="Beschreibung")
    info.add_itxt("XML:com.adobe.xmp", XMP.decode())
    out = io.BytesIO()
    photo().convert(mode).save(out, "PNG", pnginfo=info, exif=exif_with_name(), icc_profile=ICC)
    return out.getvalue()


def tiff_source() -> bytes:
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[270] = f"{NAME} ImageDescription"
    tags[315] = f"{NAME} Artist"
    tags[700] = XMP  # XMP packet
    tags[33432] = f"{NAME} Copyright"
    out = io.BytesIO()
    photo().save(out, "TIFF", tiffinfo=tags, icc_profile=ICC)
    return out.getvalue()


def webp_source() -> bytes:
    out = io.BytesIO()
    photo().save(out, "WEBP", exif=exif_with_name(), xmp=XMP, icc_profile=ICC, lossless=True)
    return out.getvalue()


def gif_source() -> bytes:
    out = io.BytesIO()
    photo().convert("P").save(out, "GIF", comment=f"{NAME} GIF comment".encode())
    return out.getvalue()


SOURCES = {"jpeg": jpeg_source, "png": png_source, "png-gray": lambda: png_source("L"), "tiff": tiff_source,
           "gif": gif_source}
if features.check("webp"):
    SOURCES["webp"] = webp_source


def jpeg_markers(data: bytes) -> list[int]:
    """Marker codes of a JPEG's segments up to the scan."""
    markers, position = [], 2
    while position < len(data):
        marker = data[position + 1]
        markers.append(marker)
        if marker == 0xDA:  # start of scan: entropy-coded data follows
            break
        (length,) = struct.unpack(">H", data[position + 2 : position + 4])
        position += 2 + length
    return markers


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_source_really_holds_the_name(kind):
    # the fixture is honest: the name is in the source file (or, compressed, in Pillow's view of it)
    data = SOURCES[kind]()
    image = Image.open(io.BytesIO(data))
    assert NAME.encode() in data or NAME in json.dumps({k: str(v) for k, v in image.info.items()})


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_stored_image_has_pixels_only(kind, tmp_path):
    path = tmp_path / f"source.{kind}"
    path.write_bytes(SOURCES[kind]())
    stored = prepare_image(path, POLICY)
    assert NAME.encode() not in stored and b"Zelda" not in stored
    # SOI is not a segment; only JFIF (APP0), quantisation/Huffman tables, frame header and scan remain:
    # no COM (0xFE), no APP1 EXIF/XMP, APP2 ICC, APP13 IPTC.
    assert set(jpeg_markers(stored)) <= {0xE0, 0xDB, 0xC4, 0xC0, 0xC2, 0xDA}, [hex(m) for m in jpeg_markers(stored)]
    image = Image.open(io.BytesIO(stored))
    assert not image.getexif() and "comment" not in image.info and "icc_profile" not in image.info
    gray = image.convert("L")
    assert gray.getpixel((2, 2)) + 30 < gray.getpixel((image.width - 2, image.height - 2))  # pixels survived


def test_names_in_metadata_never_reach_the_shards(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    entries = []
    for index, (kind, make) in enumerate(sorted(SOURCES.items())):
        (root / f"{index}.{kind}").write_bytes(make())
        entries.append({"id": index, "images": [f"{index}.{kind}"], "messages": [
            {"role": "user", "content": "<image> Conditions?"}, {"role": "assistant", "content": "Caries"}]})
    (root / "set.json").write_text(json.dumps(entries))
    out = tmp_path / "shards"
    manifest = build_shards(root / "set.json", out, salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False, strict=True)
    assert manifest["splits"]["train"]["checkups"] == len(SOURCES)
    for shard in out.glob("*.tar"):
        with tarfile.open(shard) as tar:
            for member in tar.getmembers():
                assert b"Zelda" not in tar.extractfile(member).read(), member.name


def clean_jpeg_source() -> bytes:
    """An 8-bit JPEG that needs no pixel change at a long side of 96 (no ICC profile, upright), full of
    metadata."""
    exif = Image.Exif()
    exif[0x010E] = f"{NAME} ImageDescription"
    exif[0x013B] = f"{NAME} Artist"
    exif[0x0112] = 1  # upright
    exif.get_ifd(0x8825).update({1: "N", 2: (52.0, 31.0, 12.0), 3: "E", 4: (13.0, 24.0, 36.0)})  # GPS
    out = io.BytesIO()
    photo().save(out, "JPEG", quality=92, comment=f"{NAME} comment".encode(), exif=exif.tobytes(), xmp=XMP)
    data = out.getvalue()
    return data[:2] + iptc_app13() + data[2:]


def test_clean_jpeg_in_a_shard_has_the_source_pixels_and_no_metadata(tmp_path):
    source = clean_jpeg_source()
    gps = Image.open(io.BytesIO(source)).getexif().get_ifd(0x8825)
    assert NAME.encode() in source and gps[2] == (52.0, 31.0, 12.0)  # the fixture holds what it claims
    (tmp_path / "clean.jpg").write_bytes(source)
    (tmp_path / "set.json").write_text(json.dumps([{"id": 0, "images": ["clean.jpg"], "messages": [
        {"role": "user", "content": "<image> Conditions?"}, {"role": "assistant", "content": "Caries"}]}]))
    out = tmp_path / "shards"
    build_shards(tmp_path / "set.json", out, salt="s", val=0, test=0, policy=ImagePolicy(long_side=96), workers=1,
                 progress=False, strict=True)
    [shard] = out.glob("*.tar")
    with tarfile.open(shard) as tar:
        [stored] = [tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")]
    assert b"Zelda" not in stored and b"Exif" not in stored and b"http://ns.adobe.com" not in stored
    assert set(jpeg_markers(stored)) <= {0xDB, 0xC4, 0xC0, 0xC2, 0xDA}, [hex(m) for m in jpeg_markers(stored)]
    pixels = np.asarray(Image.open(io.BytesIO(stored)))
    assert np.array_equal(pixels, np.asarray(Image.open(io.BytesIO(source))))  # bit for bit: never re-encoded
