"""Chat turns in the OpenAI chat-completions format, to and from dentvlm's (Hugging Face content-list)
format, with images as base64 data URLs.

Only data URLs are read: a server that fetched the remote URLs a request names would reach any address
a client chooses, and would pass patient images through third parties.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
from dataclasses import dataclass
from typing import Any

from PIL import Image

from dentvlm.data.tasks import Message
from dentvlm.ingest.images import ImageRejected, open_bounded

IMAGE_FORMATS = {"png": "image/png", "jpeg": "image/jpeg"}
ACCEPTED_MIME = ("image/png", "image/jpeg", "image/jpg", "image/webp")
DATA_URL = re.compile(r"^data:(?P<mime>[\w.+-]+/[\w.+-]+)(?:;[\w.+-]+=[\w.+-]+)*;base64,(?P<data>.*)$", re.DOTALL)
ROLES = ("system", "user", "assistant")


class BadChatRequest(ValueError):
    """A request that cannot be served as sent; `status` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ImageLimits:
    """Bounds on the images of one request.

    Attributes:
        max_images: Images per request.
        max_bytes: Decoded bytes per image.
        max_pixels: Pixels per image, checked from its header before decoding (decompression bombs).
    """

    max_images: int = 32
    max_bytes: int = 20_000_000
    max_pixels: int = 40_000_000


def image_data_url(image: Image.Image, image_format: str = "png", jpeg_quality: int = 95) -> str:
    """`image` as a ``data:image/...;base64,`` URL. PNG keeps every pixel (a local model sees exactly
    what dentvlm's own evaluation shows); JPEG is smaller."""
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format must be one of {list(IMAGE_FORMATS)}, got {image_format!r}")
    out = io.BytesIO()
    if image_format == "png":
        image.save(out, format="PNG", compress_level=1)  # speed over size: the bytes only travel once
    else:
        image.save(out, format="JPEG", quality=jpeg_quality)
    return f"data:{IMAGE_FORMATS[image_format]};base64,{base64.b64encode(out.getvalue()).decode('ascii')}"


def to_openai_messages(messages: list[Message], images: list[Image.Image], image_format: str = "png",
                       jpeg_quality: int = 95) -> list[dict]:
    """dentvlm chat turns (content lists whose ``{"type": "image"}`` parts take `images` in order) as
    OpenAI messages; assistant turns (few-shot answers) become plain text, as the API expects."""
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
    """OpenAI messages (dicts or pydantic models) as dentvlm chat turns and their decoded RGB images.

    Raises:
        BadChatRequest: an unknown role or content part, a remote or malformed image URL, an image
            that is not a readable PNG/JPEG/WebP within `limits`, or too many images.
    """
    turns: list[Message] = []
    images: list[Image.Image] = []
    for m, message in enumerate(messages):
        message = _plain(message)
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise BadChatRequest(f"messages[{m}]: role {role!r} is not one of {ROLES}")
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
                if len(images) == limits.max_images:
                    raise BadChatRequest(f"{where}: more than {limits.max_images} images in one request")
                images.append(decode_image_url(part.get("image_url"), where, limits))
                parts.append({"type": "image"})
            else:
                raise BadChatRequest(f"{where}: unsupported content part {part.get('type')!r} "
                                     "(text and image_url only)")
        turns.append({"role": role, "content": parts})
    return turns, images


def decode_image_url(image_url: Any, where: str, limits: ImageLimits) -> Image.Image:
    """The RGB image of a ``data:`` URL (a string or ``{"url": ...}``), within `limits`."""
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
        data = base64.b64decode(match["data"], validate=True)
    except (binascii.Error, ValueError):
        raise BadChatRequest(f"{where}: image data is not valid base64") from None
    try:
        image = open_bounded(data, limits.max_pixels, where)
        with image:
            return image.convert("RGB")  # decodes every pixel: truncated data fails here
    except ImageRejected as exc:
        raise BadChatRequest(str(exc)) from None
    except (OSError, ValueError) as exc:
        raise BadChatRequest(f"{where}: image data is truncated or corrupt ({exc})") from None


def _plain(value: Any) -> dict:
    """A pydantic model (LitServe's parsed request) or a dict, as a dict."""
    if hasattr(value, "model_dump"):
        return value.model_dump()
    return value if isinstance(value, dict) else {}
