"""A source JPEG that needs no pixel change is kept as it is: its compressed data byte for byte, every
metadata segment removed.

Decoding and encoding a JPEG that is already at its stored size would lose detail a second time, and
`dentvlm serve`, sent a shard's own JPEG by endpoint evaluation, must end with the very pixels the shard
holds. Removing segments at the byte level leaves the pixels bit-identical to the source's decode.

Kept: quantisation and Huffman tables, restart interval, the frame header (baseline, extended or
progressive Huffman coding, 8-bit samples, 1 or 3 components), each scan with its entropy-coded data,
and the end-of-image marker. Removed: every APPn (JFIF, EXIF, XMP, ICC, Photoshop/IPTC, Adobe, vendors'
own) and COM segment wherever it stands, and anything after the end of the image: no identity survives.
A file with any other segment (arithmetic coding, lossless or hierarchical frames, DNL, bytes between
segments) or that ends early is not kept; the caller re-encodes it from its pixels.

Colour: without a JFIF or Adobe segment, a decoder takes three components as YCbCr unless their ids
are 'R', 'G', 'B' (libjpeg's rule). Where the source's segments said otherwise, a minimal Adobe segment
holding only its colour-transform flag is written, so the stripped file decodes to the same colours.
"""

from __future__ import annotations

SOI, EOI, SOS, APP0, APP14, COM = 0xD8, 0xD9, 0xDA, 0xE0, 0xEE, 0xFE
FRAMES = (0xC0, 0xC1, 0xC2)  # baseline, extended sequential, progressive; Huffman-coded
TABLES = (0xDB, 0xC4, 0xDD)  # quantisation tables, Huffman tables, restart interval
RGB_IDS = (0x52, 0x47, 0x42)  # 'R', 'G', 'B'


def stripped_jpeg(data: bytes) -> bytes | None:
    """`data` (a JPEG) with its metadata removed and its coded data unchanged, or None when it holds
    anything this module does not vouch for (see the module doc)."""
    if data[:2] != b"\xff\xd8":
        return None
    kept, position, ids, jfif, adobe = [b"\xff\xd8"], 2, None, False, None
    while True:
        marker, position = _marker(data, position)
        if marker == EOI:
            kept.append(b"\xff\xd9")
            break
        if marker is None or position + 2 > len(data):
            return None
        end = position + int.from_bytes(data[position : position + 2], "big")
        if end < position + 2 or end > len(data):
            return None
        payload = data[position + 2 : end]
        if 0xE0 <= marker <= 0xEF or marker == COM:
            jfif |= marker == APP0 and len(payload) >= 14 and payload.startswith(b"JFIF\0")
            if marker == APP14 and len(payload) >= 12 and payload.startswith(b"Adobe"):
                adobe = payload[11]
            position = end
            continue
        if marker in FRAMES and ids is None:
            ids = _component_ids(payload)
            if ids is None:
                return None
        elif marker == SOS and ids is not None:
            end = _scan_end(data, end)
            if end is None:
                return None
        elif marker not in TABLES:
            return None
        kept.append(bytes((0xFF, marker)) + data[position:end])
        position = end
    if ids is None:
        return None
    transform = _colour_transform(ids, jfif, adobe)
    if transform is not None and transform != _colour_transform(ids, False, None):
        kept.insert(1, adobe_segment(transform))
    return b"".join(kept)


def adobe_segment(transform: int) -> bytes:
    """An APP14 Adobe segment with version 100, no flags and `transform` (0: RGB, 1: YCbCr)."""
    payload = b"Adobe" + (100).to_bytes(2, "big") + bytes(4) + bytes((transform,))
    return bytes((0xFF, APP14)) + (len(payload) + 2).to_bytes(2, "big") + payload


def _marker(data: bytes, position: int) -> tuple[int | None, int]:
    """The marker at `position` (after any 0xFF fill bytes) and the position after it; None if there
    is no marker there."""
    if position >= len(data) or data[position] != 0xFF:
        return None, position
    while position < len(data) and data[position] == 0xFF:
        position += 1
    if position >= len(data) or data[position] == 0:
        return None, position
    return data[position], position + 1


def _scan_end(data: bytes, position: int) -> int | None:
    """Where the entropy-coded data that starts at `position` ends: the next 0xFF that begins a marker
    (not a stuffed 0xFF00, not a restart marker RST0-7); None when the file ends first."""
    while True:
        position = data.find(b"\xff", position)
        if position < 0 or position + 1 >= len(data):
            return None
        following = data[position + 1]
        if following == 0x00 or 0xD0 <= following <= 0xD7:
            position += 2
        elif following == 0xFF:  # fill bytes before a marker
            position += 1
        else:
            return position


def _component_ids(frame: bytes) -> tuple[int, ...] | None:
    """Component ids of an 8-bit frame header with 1 or 3 components, else None."""
    if len(frame) < 6 or frame[0] != 8 or frame[5] not in (1, 3) or len(frame) != 6 + 3 * frame[5]:
        return None
    return tuple(frame[6 + 3 * i] for i in range(frame[5]))


def _colour_transform(ids: tuple[int, ...], jfif: bool, adobe: int | None) -> int | None:
    """How libjpeg reads three components: 1 (YCbCr) or 0 (RGB); None for grayscale."""
    if len(ids) != 3:
        return None
    if jfif:
        return 1
    if adobe is not None:
        return 0 if adobe == 0 else 1
    return 0 if ids == RGB_IDS else 1
