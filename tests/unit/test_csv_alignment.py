"""CSV cells reach the right field or nowhere (issue class: rows ingested misaligned or overwritten):
columns that would fill one field are refused, rows whose cell count differs from the header's are
counted skips naming file, row and reason (errors under --strict)."""

import shutil

import pytest
from PIL import Image

from dentvlm.ingest.code_release import read_code_release
from dentvlm.ingest.common import IngestError, Skip, SourceItem
from dentvlm.ingest.images import ImagePolicy
from dentvlm.labels import DEFAULT_CLASSES, LabelParser
from dentvlm.sharding import build_shards

HEADER = "checkup_id,patient_id,photographs,anomalies_en,diagnosis"


def release(tmp_path, text: str):
    root = tmp_path / "COde-Dataset"
    photos = root / "Images" / "Photographs"
    photos.mkdir(parents=True)
    (root / "Images" / "Radiographs").mkdir()
    Image.new("RGB", (40, 30)).save(photos / "a.jpg")
    (root / "complete_dataset.csv").write_text(text)
    return root


def items(root):
    found, description = read_code_release(root, "salt", LabelParser(DEFAULT_CLASSES))
    return list(found), description


@pytest.mark.parametrize(
    "header, columns",
    [
        ("checkup_id,patient_id,photographs,anomalies_en,anomalies_en", "'anomalies_en' (column 4), 'anomalies_en' "
                                                                        "(column 5)"),
        ("checkup_id,patient_id,photographs,anomalies_en,Patient ID", "'patient_id' (column 2), 'Patient ID'"),
        ("Checkup-ID,checkup_id,patient_id,photographs,anomalies_en", "'Checkup-ID' (column 1), 'checkup_id'"),
        ("checkup_id,patient_id,photographs,anomalies_en,sex,gender", "'gender' (column 6), 'sex' (column 5)"),
        ("checkup_id,patient_id,photographs,anomalies_en,diseases_en", "'anomalies_en' (column 4), 'diseases_en'"),
    ],
    ids=["repeated", "normalised-patient", "normalised-checkup", "aliases-gender", "aliases-labels"],
)
def test_columns_that_fill_the_same_field_are_refused(tmp_path, header, columns):
    root = release(tmp_path, header + "\nC1,P1,a.jpg,Caries,Gingivitis\n")
    with pytest.raises(IngestError, match="complete_dataset.csv: columns .* all fill") as info:
        items(root)
    assert columns in str(info.value)


def test_repeated_ignored_columns_are_harmless(tmp_path):
    root = release(tmp_path, HEADER + ",note_x,note_x\nC1,P1,a.jpg,Caries,Caries of 36,a,b\n")
    [item], description = items(root)
    assert item.checkup.labels == ["caries"] and description["columns_ignored"] == ["note_x"]


@pytest.mark.parametrize(
    "row, cells",
    [
        ("C2,P2,a.jpg,Caries", 4),  # the last cell is missing
        ("C2,P2,Caries,Caries of 36", 4),  # a cell in the middle is missing: everything after shifts
        ("C2,P2,a.jpg,Caries,Caries of 36,extra", 6),
        ("C2", 1),
    ],
    ids=["short-end", "short-middle", "long", "one-cell"],
)
def test_rows_with_another_cell_count_are_counted_skips(tmp_path, row, cells):
    root = release(tmp_path, f"{HEADER}\nC1,P1,a.jpg,Gingivitis,Gingivitis\n{row}\nC3,P3,a.jpg,Caries,Caries\n")
    found, _ = items(root)
    assert [type(f) for f in found] == [SourceItem, Skip, SourceItem]
    skip = found[1]
    assert skip.reason == "malformed_row"
    assert f"complete_dataset.csv row 2 (line 3): {cells} cells, the header has 5 columns" in skip.message
    assert found[2].checkup.labels == ["caries"]  # later rows are read normally


def test_short_rows_stop_strict_and_are_counted_otherwise(tmp_path):
    root = release(tmp_path, f"{HEADER}\nC1,P1,a.jpg,Gingivitis,Gingivitis\nC2,P2,Caries,Caries of 36\n")
    policy = ImagePolicy(long_side=32)
    with pytest.raises(IngestError, match=r"complete_dataset.csv row 2 \(line 3\): 4 cells.*malformed_row"):
        build_shards(root, tmp_path / "strict", salt="s", val=0, test=0, policy=policy, workers=1, progress=False,
                     strict=True)
    manifest = build_shards(root, tmp_path / "out", salt="s", val=0, test=0, policy=policy, workers=1,
                            progress=False)
    assert manifest["skipped"]["checkups"] == {"malformed_row": 1}


def test_multiline_cells_and_blank_lines_keep_rows_aligned(tmp_path):
    text = f'{HEADER}\n\nC1,P1,a.jpg,Caries,"line one\nline two, with a comma"\n\nC2,P2,a.jpg,Gingivitis,x\n'
    found, _ = items(release(tmp_path, text))
    assert [f.checkup.labels for f in found] == [["caries"], ["gingivitis"]]
    assert found[0].checkup.report["diagnosis"] == "line one\nline two, with a comma"


def test_unreadable_csv_is_one_error_naming_the_line(tmp_path):
    runaway = "x" * 10_000_001  # one cell over the CSV field limit (a quote that never closes, in practice)
    root = release(tmp_path, f"{HEADER}\nC1,P1,a.jpg,Caries,x\nC2,P2,a.jpg,Caries,{runaway}\n")
    with pytest.raises(IngestError, match=r"complete_dataset.csv line 3: unreadable CSV \(field larger"):
        items(root)


def test_real_layout_still_reads(tmp_path, synth_release):
    shutil.copytree(synth_release, tmp_path / "COde-Dataset")
    found, _ = items(tmp_path / "COde-Dataset")
    assert len(found) == 40 and all(isinstance(f, SourceItem) for f in found)
