"""One set of image limits for writer, reader, predict and serve (issue class: the writer accepts what the
reader refuses). Qwen-VL's processor refuses a side more than 200 times the other: `dentvlm shard` skips
such an image with its own reason, a shard holding one stops reading with an error naming shard and
sample, `dentvlm predict` leaves it out and counts it, and `dentvlm serve` answers 400 (test_openai_chat)."""

import io
import json
import tarfile

import pytest
from PIL import Image

from dentvlm.data.datamodule import ExampleMaker
from dentvlm.data.image_budget import qwen_resize
from dentvlm.data.shards import SampleRejected, ShardWriter, decode_image, iter_shard
from dentvlm.ingest.common import IngestError
from dentvlm.ingest.images import ImagePolicy, ImageRejected, prepare_image_bytes, target_size
from dentvlm.labels import DEFAULT_CLASSES
from dentvlm.limits import EMPTY_IMAGE, EXTREME_ASPECT_RATIO, MAX_ASPECT_RATIO, image_shape_problem
from dentvlm.predict.run import prepare
from dentvlm.predict.sources import NewCheckup
from dentvlm.records import Checkup
from dentvlm.sharding import build_shards

POLICY = ImagePolicy(long_side=1024)


def image_bytes(size, fmt="PNG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (90, 140, 200)).save(out, fmt)
    return out.getvalue()


def processor_takes(width: int, height: int) -> bool:
    try:
        qwen_resize(height, width, 28, 56 * 56, 28 * 28 * 1280)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(("size", "reason"), [((900, 1), EXTREME_ASPECT_RATIO), ((3, 700), EXTREME_ASPECT_RATIO),
                                              ((4020, 20), EXTREME_ASPECT_RATIO), ((0, 5), EMPTY_IMAGE)])
def test_one_rule_for_shapes(size, reason):
    stored = target_size(*size, POLICY.long_side) if min(size) else size
    assert image_shape_problem(*stored)[0] == reason
    if min(size):
        assert not processor_takes(*stored)


@pytest.mark.parametrize("size", [(4000, 20), (20, 4000), (1000, 5), (200, 1), (28, 28)])
def test_a_shape_the_source_kept_survives_resizing(size):
    stored = target_size(*size, POLICY.long_side)  # 4000 x 20 -> 1024 x 6, not 1024 x 5 (204.8:1)
    assert image_shape_problem(*stored) is None and processor_takes(*stored)
    kept = Image.open(io.BytesIO(prepare_image_bytes(image_bytes(size), POLICY, "x")))
    assert kept.size == stored
    for long_side in (500, 333, 64):  # and decoding at a smaller long side keeps it too
        assert processor_takes(*decode_image(image_bytes(stored, "JPEG"), "w", long_side).size)


def test_the_writer_skips_it_with_its_own_reason(tmp_path):
    (tmp_path / "thin.png").write_bytes(image_bytes((900, 1)))
    (tmp_path / "ok.png").write_bytes(image_bytes((60, 40)))
    entries = [{"id": i, "images": [name], "messages": [{"role": "user", "content": "<image> Findings?"},
                                                       {"role": "assistant", "content": "Caries"}]}
               for i, name in enumerate(["thin.png", "ok.png"])]
    (tmp_path / "set.json").write_text(json.dumps(entries))
    manifest = build_shards(tmp_path / "set.json", tmp_path / "out", salt="s", val=0, test=0, policy=POLICY,
                            workers=1, progress=False)
    assert manifest["skipped"]["images"] == {EXTREME_ASPECT_RATIO: 1}
    assert manifest["splits"]["train"]["checkups"] == 1
    with pytest.raises(IngestError, match=r"thin.png: stored as 900x1 pixels: one side is more than 200 times the "
                                          r"other.*extreme_aspect_ratio"):
        build_shards(tmp_path / "set.json", tmp_path / "strict", salt="s", val=0, test=0, policy=POLICY, workers=1,
                     progress=False, strict=True)
    with pytest.raises(ImageRejected) as caught:
        prepare_image_bytes(image_bytes((900, 1)), POLICY, "thin")
    assert caught.value.reason == EXTREME_ASPECT_RATIO


def test_the_shard_writer_refuses_it(tmp_path):
    writer = ShardWriter(tmp_path, "train", max_count=10, max_bytes=10**9)
    with pytest.raises(SampleRejected, match="more than 200 times"):
        writer.write(Checkup(key="k0", patient="p", modalities=["photograph"]), [image_bytes((900, 1), "JPEG")],
                     {"chat"})


def test_reading_a_shard_that_holds_one_names_shard_and_sample(tmp_path):
    shard = tmp_path / "train-000000.tar"
    checkup = Checkup(key="k7", patient="p", modalities=["photograph"], labels=["caries"])
    with tarfile.open(shard, "w") as tar:  # written by hand: ShardWriter would refuse it
        for name, data in [("k7.json", checkup.to_json()), ("k7.img0.jpg", image_bytes((900, 1), "JPEG"))]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    [sample] = iter_shard(shard)
    maker = ExampleMaker("classification", DEFAULT_CLASSES, True, "both", ("photograph",), 8, None, None, False)
    with pytest.raises(ValueError, match=r"train-000000.tar sample 'k7' image 0: 900x1 pixels: one side is more than "
                                         rf"{MAX_ASPECT_RATIO} times the other.*extreme_aspect_ratio"):
        maker.example(sample)


def test_predict_leaves_it_out_and_counts_it(tmp_path):
    (tmp_path / "thin.png").write_bytes(image_bytes((1, 900)))
    (tmp_path / "ok.png").write_bytes(image_bytes((60, 40)))
    checkup = NewCheckup("c1", "rows.csv row 1", {"chief_complaint": "pain"},
                         [(tmp_path / "thin.png", "radiograph"), (tmp_path / "ok.png", "photograph")])
    prepared = prepare(checkup, POLICY, strict=False)
    assert len(prepared.images) == 1
    assert prepared.skipped_images == [{"position": 1, "modality": "radiograph", "reason": EXTREME_ASPECT_RATIO}]
    with pytest.raises(IngestError, match="extreme_aspect_ratio"):
        prepare(checkup, POLICY, strict=True)
