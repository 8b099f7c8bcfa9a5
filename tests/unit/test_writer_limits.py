"""The writer enforces the reader's limits (issue class: limits disagree between writer and reader):
what `dentvlm shard` writes, training reads; what training would refuse is a counted skip at shard time."""

import io
import json

import pytest
from PIL import Image

from dentvlm.data.datamodule import DentDataModule
from dentvlm.data.shards import SampleRejected, ShardWriter, iter_shard
from dentvlm.ingest.common import IngestError
from dentvlm.ingest.images import ImagePolicy
from dentvlm.limits import MAX_IMAGES_PER_SAMPLE, MAX_RECORD_BYTES
from dentvlm.records import Checkup
from dentvlm.sharding import build_shards

POLICY = ImagePolicy(long_side=32, jpeg_quality=80)


def jpeg(fmt="JPEG") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), (200, 40, 40)).save(out, fmt)
    return out.getvalue()


def sharegpt(tmp_path, answers: list[str]):
    (tmp_path / "a.jpg").write_bytes(jpeg())
    entries = [{"id": i, "images": ["a.jpg"], "messages": [{"role": "user", "content": "<image> Findings?"},
                                                          {"role": "assistant", "content": a}]}
               for i, a in enumerate(answers)]
    path = tmp_path / "set.json"
    path.write_text(json.dumps(entries))
    return path


def test_a_record_over_the_reader_limit_is_a_counted_skip(tmp_path):
    huge = "Caries. " + "x" * MAX_RECORD_BYTES
    path = sharegpt(tmp_path, ["Caries", huge, "Gingivitis"])
    out = tmp_path / "shards"
    manifest = build_shards(path, out, salt="s", val=0, test=0, policy=POLICY, workers=1, progress=False)
    assert manifest["skipped"]["checkups"] == {"record_too_large": 1}
    assert manifest["splits"]["train"]["checkups"] == 2
    # and what was written reads back through the training stream without error
    data = DentDataModule(shards=str(out), task="chat", batch_size=1, num_workers=0)
    loader = data._loader(data.stream("train", "chat", training=True))
    assert sum(not e.is_padding for batch in loader for e in batch) == 2


def test_a_record_over_the_limit_stops_strict_naming_the_entry(tmp_path):
    path = sharegpt(tmp_path, ["Caries", "x" * (MAX_RECORD_BYTES + 1)])
    with pytest.raises(IngestError, match=r"set.json entry 1: checkup \w+: record is [\d,]+ bytes, over the shard "
                                          r"limit .*record_too_large"):
        build_shards(path, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1, progress=False,
                     strict=True)


def test_code_release_text_over_the_limit(tmp_path):
    root = tmp_path / "COde-Dataset"
    (root / "Images" / "Photographs").mkdir(parents=True)
    (root / "Images" / "Radiographs").mkdir()
    (root / "Images" / "Photographs" / "a.jpg").write_bytes(jpeg())
    long_exam = "plaque " * (MAX_RECORD_BYTES // 6)
    (root / "complete_dataset.csv").write_text(
        "checkup_id,patient_id,photographs,anomalies_en,examination\n"
        f"C1,P1,a.jpg,Caries,short\nC2,P2,a.jpg,Caries,{long_exam}\n")
    manifest = build_shards(root, tmp_path / "out", salt="s", val=0, test=0, policy=POLICY, workers=1,
                            progress=False)
    assert manifest["skipped"]["checkups"] == {"record_too_large": 1}


def checkup(images: int) -> Checkup:
    return Checkup(key="k0", patient="p", modalities=["photograph"] * images, labels=["caries"])


@pytest.mark.parametrize(
    "sample, reason",
    [
        ((checkup(MAX_IMAGES_PER_SAMPLE + 1), [jpeg()] * (MAX_IMAGES_PER_SAMPLE + 1)), "too_many_images"),
        ((checkup(1), [jpeg("PNG")]), "stored_image_too_large"),  # not JPEG: the reader refuses it
        ((checkup(2), [jpeg()]), "invalid_record"),
        ((Checkup(key="bad key!", patient="p", modalities=[]), []), "invalid_record"),
    ],
    ids=["too-many-images", "png-image", "image-count", "bad-key"],
)
def test_writer_refuses_what_the_reader_would(tmp_path, sample, reason):
    writer = ShardWriter(tmp_path, "train", max_count=10, max_bytes=10**9)
    writer.write(checkup(1), [jpeg()], {"classification"})
    with pytest.raises(SampleRejected) as info:
        writer.write(*sample, {"classification"})
    assert info.value.reason == reason
    [shard] = writer.close()
    assert shard.samples == 1
    assert len(list(iter_shard(tmp_path / shard.file, shard.samples, shard.sha256))) == 1


def test_image_size_setting_over_the_reader_limit_is_refused_up_front():
    with pytest.raises(ValueError, match=r"long_side must be <= 6324 \(the shard reader's limit"):
        ImagePolicy(long_side=8000)
    assert ImagePolicy(long_side=6324).long_side == 6324
