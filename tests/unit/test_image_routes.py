"""One image preparation for every route to the model (issue class: served images prepared differently from
training). For real files of many kinds, the pixels the model gets are equal across: `dentvlm shard` then
reading the shard, `dentvlm predict`'s preparation, `dentvlm serve`'s decoding of a data URL holding the
original file, and endpoint evaluation (what the URL holds, and what `dentvlm serve` makes of it)."""

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageCms

from dentvlm.data.datamodule import ExampleMaker
from dentvlm.data.shards import decode_image, iter_shard
from dentvlm.endpoint.client import Completion
from dentvlm.endpoint.evaluate import Asker
from dentvlm.endpoint.settings import EndpointSettings
from dentvlm.ingest.images import ImagePolicy
from dentvlm.labels import DEFAULT_CLASSES
from dentvlm.openai_chat import ImageLimits, from_openai_messages
from dentvlm.predict.run import prepare
from dentvlm.predict.sources import NewCheckup
from dentvlm.sharding import build_shards

POLICY = ImagePolicy(long_side=128, jpeg_quality=90)
LIMITS = ImageLimits(long_side=POLICY.long_side, jpeg_quality=POLICY.jpeg_quality)
RNG = np.random.default_rng(7)


def noise(size, channels=3, low=0, high=256) -> np.ndarray:
    shape = (size[1], size[0], channels) if channels > 1 else (size[1], size[0])
    return RNG.integers(low, high, shape).astype(np.uint8)


def saved(image: Image.Image, fmt: str, **options) -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def radiograph_16bit() -> bytes:
    values = np.tile(np.linspace(900, 3900, 240), (180, 1)) + RNG.normal(0, 60, (180, 240))
    return saved(Image.fromarray(values.astype(np.uint16)), "PNG")


def float_tiff() -> bytes:
    values = (np.tile(np.linspace(-0.4, 0.8, 150), (100, 1)) + RNG.normal(0, 0.02, (100, 150))).astype(np.float32)
    values[3, 3] = np.nan
    return saved(Image.fromarray(values), "TIFF")


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6
    return saved(Image.fromarray(noise((200, 120))), "JPEG", quality=92, exif=exif.tobytes())


def rgba_png() -> bytes:
    pixels = np.dstack([noise((90, 70)), np.tile(np.linspace(0, 255, 90), (70, 1)).astype(np.uint8)])
    return saved(Image.fromarray(pixels, "RGBA"), "PNG")


def palette_png() -> bytes:
    image = Image.fromarray(noise((80, 60), 1, 0, 16), "L").convert("P")
    image.putpalette(list(RNG.integers(0, 256, 768)))
    return saved(image, "PNG", transparency=3)


def cmyk_jpeg() -> bytes:
    return saved(Image.fromarray(noise((110, 90), 4), "CMYK"), "JPEG", quality=90)


def icc_jpeg() -> bytes:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    return saved(Image.fromarray(noise((100, 90))), "JPEG", quality=90, icc_profile=srgb)


def large_jpeg() -> bytes:
    return saved(Image.fromarray(noise((400, 300))), "JPEG", quality=90)


def clean_jpeg() -> bytes:
    return saved(Image.fromarray(noise((120, 96))), "JPEG", quality=93)


def gray_progressive_jpeg() -> bytes:
    return saved(Image.fromarray(noise((96, 64), 1), "L"), "JPEG", quality=88, progressive=True)


KINDS = {"radiograph_16bit.png": radiograph_16bit, "float.tiff": float_tiff, "exif_rotated.jpg": exif_rotated_jpeg,
         "rgba.png": rgba_png, "palette.png": palette_png, "cmyk.jpg": cmyk_jpeg, "icc.jpg": icc_jpeg,
         "large.jpg": large_jpeg, "clean.jpg": clean_jpeg, "gray_progressive.jpg": gray_progressive_jpeg}


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    """Each kind as a file, and the shard sample `dentvlm shard` made of it."""
    root = tmp_path_factory.mktemp("sources")
    entries = []
    for index, (name, make) in enumerate(KINDS.items()):
        (root / name).write_bytes(make())
        entries.append({"id": index, "images": [name], "messages": [
            {"role": "user", "content": f"<image> {name}"}, {"role": "assistant", "content": "Caries"}]})
    (root / "set.json").write_text(json.dumps(entries))
    out = root / "shards"
    build_shards(root / "set.json", out, salt="s", val=0, test=0, policy=POLICY, workers=1, progress=False,
                 strict=True)
    samples = {s.checkup.conversation[0]["content"].split()[-1]: s for shard in sorted(out.glob("train-*.tar"))
               for s in iter_shard(shard)}
    assert sorted(samples) == sorted(KINDS)
    return root, samples


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def url_image(url: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))


class _Tokenizer:
    """Enough of a tokenizer for `Asker.prompt_text`."""

    def __call__(self, text):
        return {"input_ids": [1]}

    def decode(self, ids, skip_special_tokens=True):
        return "prompt"


def asked_messages(example, resolution: str, image_format: str) -> list[dict]:
    """The OpenAI messages endpoint evaluation sends for `example`."""
    sent = []
    processor = SimpleNamespace(apply_chat_template=lambda turns, **_: "prompt", tokenizer=_Tokenizer())
    client = SimpleNamespace(complete=lambda messages: sent.append(messages) or Completion("none"))
    settings = EndpointSettings(base_url="http://127.0.0.1:9/v1", model="m", resolution=resolution,
                                image_format=image_format)
    Asker(client, SimpleNamespace(processor=processor), settings)(example)
    return sent[0]


def image_urls(messages: list[dict]) -> list[str]:
    return [part["image_url"]["url"] for m in messages if isinstance(m["content"], list)
            for part in m["content"] if part["type"] == "image_url"]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_route_gives_the_shard_pixels(sources, kind):
    root, samples = sources
    sample = samples[kind]
    shard = pixels(decode_image(sample.images[0], sample.where))
    assert max(shard.shape[:2]) <= POLICY.long_side

    predicted = prepare(NewCheckup("c1", "row 1", {}, [(root / kind, "photograph")]), POLICY, strict=True)
    assert np.array_equal(pixels(predicted.images[0]), shard), "predict"

    url = "data:image/png;base64," + base64.b64encode((root / kind).read_bytes()).decode()
    _, served = from_openai_messages([{"role": "user", "content": [{"type": "image_url", "image_url": {"url": url}}]}],
                                     LIMITS)
    assert np.array_equal(pixels(served[0]), shard), "serve"

    maker = ExampleMaker("chat", DEFAULT_CLASSES, True, "both", ("photograph", "radiograph"), 8, None, None, False)
    example = maker.example(sample)
    assert example.image_bytes == [sample.images[0]]
    png = asked_messages(example, "stored", "png")
    assert np.array_equal(pixels(url_image(image_urls(png)[0])), shard), "endpoint, png"
    jpeg = asked_messages(example, "stored", "jpeg")
    [sent] = image_urls(jpeg)
    assert base64.b64decode(sent.split(",", 1)[1]) == sample.images[0]  # the stored JPEG, verbatim
    _, at_server = from_openai_messages(jpeg, LIMITS)
    assert np.array_equal(pixels(at_server[0]), shard), "endpoint, jpeg, through dentvlm serve"


def test_clean_jpeg_keeps_its_source_pixels(sources):
    root, samples = sources
    for kind in ("clean.jpg", "gray_progressive.jpg"):
        source = Image.open(root / kind)
        stored = Image.open(io.BytesIO(samples[kind].images[0]))
        assert np.array_equal(np.asarray(stored), np.asarray(source)), kind  # decoded once, bit for bit


def test_examples_with_resized_or_demonstration_images(sources):
    _, samples = sources
    resized = ExampleMaker("chat", DEFAULT_CLASSES, True, "both", ("photograph",), 8, 64, None, False)
    assert resized.example(samples["large.jpg"]).image_bytes is None  # decoded smaller: not the stored bytes
    few_shot = ExampleMaker("chat", DEFAULT_CLASSES, True, "both", ("photograph",), 8, None, None, False,
                            demonstrations=[samples["clean.jpg"]])
    example = few_shot.example(samples["large.jpg"])
    assert example.image_bytes == [samples["clean.jpg"].images[0], samples["large.jpg"].images[0]]
