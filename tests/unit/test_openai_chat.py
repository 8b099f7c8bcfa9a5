"""Chat turns to and from the OpenAI format: images as data URLs keep every pixel (PNG) on the way out; on the
way in they become what a shard would hold (`model_image`); remote URLs, bad image data and images or requests
over the limits are refused with the part that holds them, before anything is decoded where the header tells."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dentvlm.data.tasks import format_checkup
from dentvlm.ingest.model_image import model_image
from dentvlm.labels import DEFAULT_CLASSES
from dentvlm.openai_chat import BadChatRequest, ImageLimits, from_openai_messages, image_data_url, to_openai_messages
from dentvlm.records import Checkup


def photo(seed: int, size=(84, 112)) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (*size, 3), dtype=np.uint8)
    return Image.fromarray(pixels, "RGB")


def test_round_trip_keeps_turns_and_pixels():
    checkup = Checkup(key="k", patient="p", modalities=["photograph", "photograph"],
                      info={"chief_complaint": "bleeding gums"}, labels=["gingivitis"])
    images = [photo(1), photo(2)]
    example = format_checkup(checkup, images, "classification", DEFAULT_CLASSES)
    question = example.messages[:-1]
    sent = to_openai_messages(question, images)
    assert [p["type"] for p in sent[0]["content"]] == ["text", "image_url", "text", "image_url", "text"]
    urls = [part["image_url"]["url"] for part in sent[0]["content"] if part["type"] == "image_url"]
    assert all(np.array_equal(np.asarray(image), np.asarray(decoded(url))) for image, url in zip(images, urls))
    limits = ImageLimits(long_side=64)
    turns, received = from_openai_messages(sent, limits)
    assert turns == question
    for url, image in zip(urls, received):  # prepared as a shard would store the file sent
        assert image.size == (64, 48)
        assert np.array_equal(np.asarray(image), np.asarray(model_image(raw(url), limits.policy, "x")))


def raw(url: str) -> bytes:
    return base64.b64decode(url.split(",", 1)[1])


def decoded(url: str) -> Image.Image:
    return Image.open(io.BytesIO(raw(url)))


def test_few_shot_answers_are_plain_text():
    turns = [{"role": "user", "content": [{"type": "text", "text": "q"}]},
             {"role": "assistant", "content": [{"type": "text", "text": "caries"}]},
             {"role": "user", "content": [{"type": "text", "text": "q2"}]}]
    sent = to_openai_messages(turns, [])
    assert sent[1] == {"role": "assistant", "content": "caries"}
    assert from_openai_messages(sent, ImageLimits())[0] == turns


def part(url):
    content = [{"type": "text", "text": "x"}, {"type": "image_url", "image_url": {"url": url}}]
    return [{"role": "user", "content": content}]


@pytest.mark.parametrize(("url", "status", "words"), [
    ("https://example.com/a.jpg", 400, "never fetches remote images"),
    ("file:///etc/passwd", 400, "got a file URL"),
    ("data:image/png;base64,@@", 400, "not valid base64"),
    ("data:image/png,rawbytes", 400, "malformed data URL"),
    ("data:application/pdf;base64,aGVsbG8=", 400, "application/pdf"),
    ("data:image/jpeg;base64," + base64.b64encode(b"\xff\xd8\xff\xe0garbage").decode(), 400, "not a readable image"),
])
def test_bad_image_urls_are_refused_naming_the_part(url, status, words):
    with pytest.raises(BadChatRequest, match=words) as caught:
        from_openai_messages(part(url), ImageLimits())
    assert caught.value.status == status and "messages[0].content[1]" in str(caught.value)


def test_image_limits():
    url = image_data_url(photo(3))
    with pytest.raises(BadChatRequest, match="more than 2 images"):
        from_openai_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}] * 3}],
                             ImageLimits(max_images=2))
    with pytest.raises(BadChatRequest) as caught:
        from_openai_messages(part(url), ImageLimits(max_bytes=100))
    assert caught.value.status == 413
    with pytest.raises(BadChatRequest, match="decompression bomb"):
        from_openai_messages(part(url), ImageLimits(max_pixels=1000))
    truncated = io.BytesIO()
    photo(4).save(truncated, format="PNG")
    cut = "data:image/png;base64," + base64.b64encode(truncated.getvalue()[:300]).decode()
    with pytest.raises(BadChatRequest, match="truncated or corrupt"):
        from_openai_messages(part(cut), ImageLimits())


def test_roles_and_parts():
    with pytest.raises(BadChatRequest, match="role 'tool'"):
        from_openai_messages([{"role": "tool", "content": "x"}], ImageLimits())
    with pytest.raises(BadChatRequest, match="unsupported content part 'input_audio'"):
        from_openai_messages([{"role": "user", "content": [{"type": "input_audio"}]}], ImageLimits())


def test_jpeg_option():
    url = image_data_url(photo(5), "jpeg", 90)
    assert url.startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError, match="image format"):
        image_data_url(photo(5), "gif")


def image_part(data: bytes, mime="image/png") -> dict:
    return {"type": "image_url", "image_url": {"url": f"data:{mime};base64,{base64.b64encode(data).decode()}"}}


def header_only_png(width: int, height: int) -> bytes:
    """A PNG whose header declares `width` x `height` and whose pixel data is missing: refusing it for its
    size shows the refusal came before decoding (decoding would find it truncated)."""
    out = io.BytesIO()
    Image.new("L", (width, height)).save(out, "PNG")
    data = out.getvalue()
    return data[: data.index(b"IDAT") + 8]


def test_request_pixels_are_bounded_before_decoding():
    limits = ImageLimits(max_pixels=5_000_000, max_request_pixels=8_000_000)
    content = [image_part(header_only_png(2000, 1500))] * 2  # 3 Mpx each, 6 Mpx together: within
    with pytest.raises(BadChatRequest, match="truncated or corrupt"):
        from_openai_messages([{"role": "user", "content": content}], limits)
    with pytest.raises(BadChatRequest, match=r"3 images declare 9,000,000 pixels, over the limit of 8,000,000") \
            as caught:
        from_openai_messages([{"role": "user", "content": content + content[:1]}], limits)
    assert caught.value.status == 400


@pytest.mark.parametrize("size", [(900, 1), (1, 450), (4020, 20)])
def test_shapes_the_processor_refuses_are_a_400_before_decoding(size):
    with pytest.raises(BadChatRequest, match="more than 200 times the other") as caught:
        from_openai_messages([{"role": "user", "content": [image_part(header_only_png(*size))]}], ImageLimits())
    assert caught.value.status == 400 and "messages[0].content[0]" in str(caught.value)


def test_a_shape_kept_by_its_source_stays_within_the_limit():
    content = [image_part(header_only_png(4000, 20))]  # 200:1, stored at 1024 x 6 rather than 1024 x 5
    with pytest.raises(BadChatRequest, match="truncated or corrupt"):
        from_openai_messages([{"role": "user", "content": content}], ImageLimits())


def test_message_fields_without_a_place_in_the_template_are_refused():
    for field, value in [("name", "dr_who"), ("tool_call_id", "call_1"), ("tool_calls", [{"id": "x"}])]:
        with pytest.raises(BadChatRequest, match=f"messages\\[0\\]: {field} not supported"):
            from_openai_messages([{"role": "user", "content": "hi", field: value}], ImageLimits())
    assert from_openai_messages([{"role": "user", "content": "hi", "name": None}], ImageLimits())[0]


def test_stored_jpeg_bytes_are_sent_verbatim():
    out = io.BytesIO()
    photo(6).save(out, "JPEG", quality=80)
    url = image_data_url(out.getvalue(), "jpeg")
    assert url.startswith("data:image/jpeg;base64,") and raw(url) == out.getvalue()
    with pytest.raises(ValueError, match="sent as jpeg"):
        image_data_url(out.getvalue(), "png")
