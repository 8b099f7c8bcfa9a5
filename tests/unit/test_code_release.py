import csv
import io
import shutil

import pytest
from PIL import Image

from dentvlm.ingest.code_release import read_code_release
from dentvlm.ingest.common import IngestError, Skip, SourceItem
from dentvlm.labels import DEFAULT_CLASSES, LabelParser

HEADER = ["checkup_id", "patient_id", "patient_name", "chief_complaint", "examination", "diagnosis",
          "photographs", "radiographs", "anomalies_en"]


def write_release(root, rows, header=HEADER, raw_suffix=b""):
    photos = root / "Images" / "Photographs"
    photos.mkdir(parents=True)
    (root / "Images" / "Radiographs").mkdir()
    Image.new("RGB", (40, 30)).save(photos / "a.jpg")
    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    (root / "complete_dataset.csv").write_bytes(text.getvalue().encode() + raw_suffix)
    return root


def items(root):
    found, _ = read_code_release(root, "salt", LabelParser(DEFAULT_CLASSES))
    return list(found)


def row(cid="C1", pid="P1", anomalies="Caries", photos="a.jpg", exam="line one\nline two"):
    return [cid, pid, "Ann Example", "pain", exam, "Caries of 36", photos, "", anomalies]


def test_reads_rows_pseudonymises_and_keeps_multiline_text(tmp_path):
    [item] = items(write_release(tmp_path, [row()]))
    assert isinstance(item, SourceItem)
    checkup = item.checkup
    assert checkup.labels == ["caries"] and checkup.modalities == ["photograph"]
    assert checkup.report["examination"] == "line one\nline two"
    assert "C1" not in checkup.key and "P1" not in checkup.patient
    assert "Ann" not in checkup.to_json().decode()  # unknown columns (a name) are never read


def test_missing_and_misnamed_columns_are_named(tmp_path):
    header = [h if h != "anomalies_en" else "anomalys_en" for h in HEADER]
    root = write_release(tmp_path, [row()], header=header)
    with pytest.raises(IngestError, match=r"complete_dataset.csv: missing required column\(s\) 'anomalies_en' "
                                          r"\(found 'anomalys_en': misnamed\?\)"):
        items(root)


@pytest.mark.parametrize(
    "bad_row, reason",
    [
        (row(anomalies=""), "empty_diagnosis"),
        (row(anomalies="Mystery syndrome"), "unrecognised_diagnosis"),
        (row(photos="../../etc/passwd"), "image_outside_source"),
        (row(cid=""), "missing_identifier"),
    ],
)
def test_bad_rows_become_counted_skips_naming_the_row(tmp_path, bad_row, reason):
    found = items(write_release(tmp_path, [row(cid="C0"), bad_row]))
    skip = found[1]
    assert isinstance(skip, Skip) and skip.reason == reason
    assert "row 2" in skip.message


def test_duplicate_checkup_is_skipped(tmp_path):
    found = items(write_release(tmp_path, [row(), row()]))
    assert isinstance(found[0], SourceItem) and found[1].reason == "duplicate_checkup"


def test_non_utf8_row_is_skipped_and_named(tmp_path):
    root = write_release(tmp_path, [row()], raw_suffix=b"C2,P2,Bob,caf\xe9 pain,x,y,a.jpg,,Caries\n")
    found = items(root)
    assert isinstance(found[0], SourceItem)
    assert found[1].reason == "non_utf8_text" and "row 2" in found[1].message and "chief_complaint" in found[1].message


def test_no_disease_is_a_valid_empty_label_set(tmp_path):
    [item] = items(write_release(tmp_path, [row(anomalies="No disease")]))
    assert item.checkup.labels == []


def test_release_found_from_parent_folder(tmp_path, synth_release):
    shutil.copytree(synth_release, tmp_path / "COde-Dataset")
    found, description = read_code_release(tmp_path, "s", LabelParser(DEFAULT_CLASSES))
    assert len(list(found)) == 40 and description["columns_ignored"] == ["visit_date"]
