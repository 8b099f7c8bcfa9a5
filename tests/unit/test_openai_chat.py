"""Chat turns to and from the OpenAI format: images as data URLs keep every pixel (PNG), remote URLs and
bad image data are refused with the part that holds them."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from dentvlm.data.tasks import format_checkup
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
    turns, decoded = from_openai_messages(sent, ImageLimits())
    assert turns == question
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(images, decoded))


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
