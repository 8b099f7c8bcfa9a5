"""The peer benchmark's export (benchmarks/peers_export.py) hands the peers dentvlm's own work: the
shard images byte for byte, and ShareGPT JSON that renders and tokenizes exactly as dentvlm's
training examples do (without the peers' own environments)."""

import json
import sys
import tarfile

import pytest
from PIL import Image

from dentvlm.data.collate import ChatEncoder
from dentvlm.model.build import load_processor

from ..conftest import DEMO_SHARDS, REPO

sys.path.insert(0, str(REPO / "benchmarks"))
from peers_export import (  # noqa: E402
    DATASET_FILE,
    DATASET_NAME,
    check_rendering,
    compare_tokens,
    export_sharegpt,
    qwen2_vl_text,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    out = tmp_path_factory.mktemp("sharegpt")
    return out, export_sharegpt(DEMO_SHARDS, out)


def test_export_is_the_training_split_with_the_shard_images_unchanged(exported):
    out, items = exported
    manifest = json.loads((DEMO_SHARDS / "manifest.json").read_text())
    assert len(items) == manifest["splits"]["train"]["tasks"]["classification"]
    members = {}
    for shard in manifest["splits"]["train"]["shards"]:
        with tarfile.open(DEMO_SHARDS / shard["file"]) as tar:
            members.update({m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.name.endswith(".jpg")})
    records = json.loads((out / DATASET_FILE).read_text())
    assert records == [item.record for item in items]
    assert json.loads((out / "dataset_info.json").read_text())[DATASET_NAME]["file_name"] == DATASET_FILE
    for item in items:
        paths = item.record["images"]
        assert len(paths) == len(item.example.images) == item.record["messages"][0]["content"].count("<image>")
        for path in paths:
            assert (out / path).read_bytes() == members[path.removeprefix("images/")]


def test_sharegpt_json_renders_and_tokenizes_as_dentvlm_trains(exported, tiny_model_dir):
    out, items = exported
    processor = load_processor(str(tiny_model_dir))
    check_rendering(items, processor)  # dentvlm's chat template == LLaMA-Factory's qwen2_vl slots
    encoder = ChatEncoder(processor)
    for item in items[:12]:
        images = [Image.open(out / path).convert("RGB") for path in item.record["images"]]
        from_json = processor(text=[qwen2_vl_text(item.record)], images=images, return_tensors="pt")
        assert from_json["input_ids"][0].tolist() == encoder(item.example).input_ids.tolist()


def test_token_comparison_allows_only_the_newline_after_the_answer():
    ids, labels = [5, 6, 7, 2, 9], [-100, -100, 7, 2, -100]
    peer = {"input_ids": [ids], "labels": [[-100, -100, 7, 2, 9]]}
    assert "1 newline(s)" in compare_tokens("peer", [(ids, labels)], peer, newline_id=9, turn_end_id=2)
    with pytest.raises(AssertionError, match="position 1"):
        compare_tokens("peer", [(ids, labels)], {"input_ids": [ids], "labels": [[-100, 6, 7, 2, 9]]}, 9, 2)
    with pytest.raises(AssertionError, match="other token ids"):
        compare_tokens("peer", [(ids, labels)], {"input_ids": [[5, 6, 7, 2, 8]], "labels": [labels]}, 9, 2)
