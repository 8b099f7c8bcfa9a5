"""Chat turns in the OpenAI chat-completions format, to and from dentvlm's (Hugging Face content-list)
format, with images as base64 data URLs.

Only data URLs are read: a server that fetched the remote URLs a request names would reach any address
a client chooses, and would pass patient images through third parties. A request's images are refused
from cheap facts first (count, bytes, each header's size and shape, the pixels all of them declare),
before any is decoded; then each is prepared exactly as `dentvlm shard` stores a source file and decoded
as training reads it (`model_image`), so a served model sees the pixels it was trained on.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from dentvlm.data.tasks import Message
from dentvlm.ingest.images import ImagePolicy, ImageRejected, declared_size
from dentvlm.ingest.model_image import model_image

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}
ACCEPTED_MIME = ("image/png", "image/jpeg", "image/jpg", "image/webp")
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<data>.*)$", re.DOTALL)
ROLES = ("system", "user", "assistant")
# Message fields the chat template has no place for (a participant's name, tool calls and results).
MESSAGE_FIELDS_REFUSED = ("name", "tool_calls", "tool_call_id")


class BadChatRequest(ValueError):
    """A request that cannot be served as sent; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on the images of one request, and how they are prepared.

    Attributes:
        max_images: Images per request.
        max_bytes: Decoded bytes per image.
        max_pixels: Pixels per image, checked from its header before decoding (decompression bombs).
        max_request_pixels: Pixels all of a request's images declare together, checked before decoding
            (default: 8 COde photographs of 4000 x 3000, and a third more).
        long_side: Images are stored at most this long, as the served model's training shards were
            (their ``--image_long_side``).
        jpeg_quality: JPEG quality of that storage (the shards' ``--jpeg_quality``).
        policy: The `ImagePolicy` these make (derived).
    """

    max_images: int = 32
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000
    max_request_pixels: int = 128_000_000
    long_side: int = 1024
    jpeg_quality: int = 90
    policy: ImagePolicy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # The shard image policy requests are prepared with (refuses, now, what `dentvlm shard` refuses).
        object.__setattr__(self, "policy", ImagePolicy(self.long_side, self.jpeg_quality, self.max_pixels))


def image_data_url(image: Image.Image | bytes, image_format: str = "png", jpeg_quality: int = 95) -> str:
    """`image` as a ``data:image/...;base64,`` URL. PNG keeps every pixel (a local model sees exactly
    what dentvlm's own evaluation shows); JPEG is smaller. `bytes` are a stored JPEG (a shard's image),
    sent as they are (`image_format` jpeg): `dentvlm serve` keeps such a JPEG's coded data, so it ends
    with the shard's very pixels."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {list(IMAGE_FORMATS)}, got {image_format!r}")
    if isinstance(image, bytes):
        if image_format != "jpeg":
            raise ValueError(f"stored JPEG bytes are sent as jpeg, not {image_format}")
        data = image
    else:
        out = io.BytesIO()
        if image_format == "png":
            image.save(out, format="PNG", compress_level=1)  # speed over size: the bytes only travel once
        else:
            image.save(out, format="JPEG", quality=jpeg_quality)
        data = out.getvalue()
    return f"data:{IMAGE_FORMATS[image_format]};base64,{base64.b64encode(data).decode('ascii')}"


def to_openai_messages(messages: list[Message], images: list[Image.Image | bytes], image_format: str = "png",
                       jpeg_quality: int = 95) -> list[dict]:
    """dentvlm chat turns (content lists whose ``{"type": "image"}`` parts take `images` in order) as
    OpenAI messages; assistant turns (few-shot answers) become plain text, as the API expects. Images
    given as bytes are stored JPEGs, sent as they are (see `image_data_url`)."""
    queue = iter(images)
    out = []
    for message in messages:
        parts = []
        for part in message["content"]:
            if part["type"] == "image":
                url = image_data_url(next(queue), image_format, jpeg_quality)
                parts.append({"type": "image_url", "image_url": {"url": url}})
            else:
                parts.append({"type": "text", "text": part["text"]})
        if message["role"] == "assistant":
            out.append({"role": "assistant", "content": "".join(p["text"] for p in parts if p["type"] == "text")})
        else:
            out.append({"role": message["role"], "content": parts})
    return out


def from_openai_messages(messages: list[Any], limits: ImageLimits) -> tuple[list[Message], list[Image.Image]]:
    """OpenAI messages (dicts or pydantic models) as dentvlm chat turns and their RGB images, as the
    model reads them (see the module doc).

    Raises:
        BadChatRequest: an unknown role, message field or content part, a remote or malformed image URL,
            an image that is not a readable PNG/JPEG/WebP within `limits`, or too many images or pixels.
    """
    turns: list[Message] = []
    sources: list[tuple[str, bytes]] = []  # (where, image bytes), in order
    for m, message in enumerate(messages):
        message = _plain(message)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadChatRequest(f"messages[{m}]: role {role!r} is not one of {ROLES}")
        unused = [name for name in MESSAGE_FIELDS_REFUSED if message.get(name)]
        if unused:
            raise BadChatRequest(f"messages[{m}]: {', '.join(unused)} not supported by this server")
        if isinstance(content, str):
            turns.append({"role": role, "content": [{"type": "text", "text": content}]})
            continue
        if not isinstance(content, list):
            raise BadChatRequest(f"messages[{m}]: content must be text or a list of parts")
        parts = []
        for p, part in enumerate(_plain(part) for part in content):
            where = f"messages[{m}].content[{p}]"
            if part.get("type") == "text" and isinstance(part.get("text"), str):
                parts.append({"type": "text", "text": part["text"]})
            elif part.get("type") == "image_url":
                if len(sources) == limits.max_images:
                    raise BadChatRequest(f"{where}: more than {limits.max_images} images in one request")
                sources.append((where, image_url_bytes(part.get("image_url"), where, limits)))
                parts.append({"type": "image"})
            else:
                raise BadChatRequest(f"{where}: unsupported content part {part.get('type')!r} "
                                     "(text and image_url only)")
        turns.append({"role": role, "content": parts})
    check_declared_pixels(sources, limits)
    return turns, [request_image(data, where, limits) for where, data in sources]


def image_url_bytes(image_url: Any, where: str, limits: ImageLimits) -> bytes:
    """The image bytes of a ``data:`` URL (a string or ``{"url": ...}``), at most `limits.max_bytes`."""
    url = image_url.get("url") if isinstance(image_url, dict) else image_url
    if not isinstance(url, str):
        raise BadChatRequest(f"{where}: image_url has no url")
    if not url.startswith("data:"):
        scheme = url.split(":", 1)[0][:16] if ":" in url else "no scheme"
        raise BadChatRequest(f"{where}: only base64 data URLs are accepted (got a {scheme} URL); this server "
                             "never fetches remote images")
    match = DATA_URL.match(url)
    if match is None:
        raise BadChatRequest(f"{where}: malformed data URL (expected data:image/<type>;base64,<data>)")
    if match["mime"].lower() not in ACCEPTED_MIME:
        raise BadChatRequest(f"{where}: data URL of type {match['mime']!r}; accepted: {', '.join(ACCEPTED_MIME)}")
    if len(match["data"]) > limits.max_bytes * 4 // 3 + 4:
        raise BadChatRequest(f"{where}: image over {limits.max_bytes:,} bytes", status=413)
    try:
        return base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadChatRequest(f"{where}: image data is not valid base64") from None


def check_declared_pixels(sources: list[tuple[str, bytes]], limits: ImageLimits) -> None:
    """Refuse, from the headers alone, an image whose size or shape is refused, or a request whose images
    declare more than `limits.max_request_pixels` pixels together: nothing is decoded for a refusal."""
    total = 0
    for where, data in sources:
        try:
            width, height = declared_size(data, limits.policy, where)
        except ImageRejected as exc:
            raise BadChatRequest(str(exc)) from None
        total += width * height
    if total > limits.max_request_pixels:
        raise BadChatRequest(f"the request's {len(sources)} images declare {total:,} pixels, over the limit of "
                             f"{limits.max_request_pixels:,} per request (the server's --max_request_pixels)")


def request_image(data: bytes, where: str, limits: ImageLimits) -> Image.Image:
    """The RGB image the model reads for one request image (`model_image`: as a shard would hold it)."""
    try:
        return model_image(data, limits.policy, where)
    except ImageRejected as exc:
        raise BadChatRequest(str(exc)) from None


def _plain(value: Any) -> dict:
    """A pydantic model (LitServe's parsed request) or a dict, as a dict."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value if isinstance(value, dict) else {}
