import json

import pytest

from dentvlm.ingest.common import IngestError, Skip, SourceItem
from dentvlm.ingest.sharegpt import read_sharegpt
from dentvlm.labels import DEFAULT_CLASSES, LabelParser


def read(path):
    found, description = read_sharegpt(path, "salt", LabelParser(DEFAULT_CLASSES))
    return list(found), description


def test_llamafactory_fixture_reads_as_is(sharegpt_fixture):
    found, description = read(sharegpt_fixture)
    assert description["kind"] == "sharegpt" and len(found) == 6
    assert all(isinstance(i, SourceItem) for i in found)
    first = found[0]
    assert [t["role"] for t in first.checkup.conversation] == ["user", "assistant", "user", "assistant"]
    assert len(first.image_paths) == 2 and all(p.is_file() for p in first.image_paths)
    assert found[3].checkup.conversation[1]["content"] == "他们是拜仁慕尼黑的凯恩和格雷茨卡。"


def write(tmp_path, entries):
    path = tmp_path / "data.json"
    path.write_text(json.dumps(entries, ensure_ascii=False))
    return path


def test_conversations_style_and_code_report_answers(tmp_path):
    report = "examination: plaque\ndiagnosis: Caries of 36; gingivitis\ntreatment plan: filling"
    entry = {"id": 7, "conversations": [
        {"from": "human", "value": "image-1: <image>\nage: 40\nchief complaint: pain\nWrite the report."},
        {"from": "gpt", "value": report}], "images": ["x.jpg"]}
    [item], _ = read(write(tmp_path, [entry]))
    assert item.checkup.labels == ["caries", "gingivitis"]
    assert item.checkup.report["treatment_plan"] == "filling"
    assert item.checkup.info == {"age": "40", "chief_complaint": "pain"}


def test_label_list_answers_become_labels_but_chatty_answers_do_not(tmp_path):
    def entry(answer):
        return {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": answer}]}

    found, _ = read(write(tmp_path, [entry("Malocclusion, tooth decay"), entry("It could be caries, maybe.")]))
    assert found[0].checkup.labels == ["malocclusion", "caries"]
    assert found[1].checkup.labels == []


@pytest.mark.parametrize(
    "entry, reason, fragment",
    [
        ({"messages": [{"role": "user", "content": "<image><image>"}, {"role": "assistant", "content": "a"}],
          "images": ["1.jpg"]}, "image_count_mismatch", "2 <image> placeholders, 1 images"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "bad_entry", "unknown role 'robot'"),
        ({"messages": [{"role": "user", "content": "x"}]}, "bad_entry", "no assistant turn"),
        ({"images": []}, "bad_entry", "neither 'messages' nor 'conversations'"),
        ("just a string", "bad_entry", "not a JSON object"),
    ],
)
def test_bad_entries_are_skips_naming_the_entry(tmp_path, entry, reason, fragment):
    [skip], _ = read(write(tmp_path, [entry]))
    assert isinstance(skip, Skip) and skip.reason == reason
    assert fragment in skip.message and "data.json entry 0" in skip.message


def test_file_level_errors(tmp_path):
    path = tmp_path / "bad.json"
    path.write_bytes(b"[\xff]")
    with pytest.raises(IngestError, match="bad.json: not UTF-8"):
        read(path)
    path.write_text('{"messages": []}')
    with pytest.raises(IngestError, match="expected a JSON list"):
        read(path)
