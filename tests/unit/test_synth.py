"""The synthetic release: determinism, the real COde layout, label consistency, and learnable images."""

from __future__ import annotations

import csv
import hashlib
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from dentvlm.labels import DEFAULT_CLASSES, LabelParser
from dentvlm.synth import write_synthetic_release
from dentvlm.synth.release import COLUMNS

SMALL = {"num_checkups": 40, "photo_size": (160, 120), "radiograph_size": (160, 80)}
TEXT_FIELDS = ("chief_complaint", "present_illness", "examination")


def read_rows(root: Path) -> list[dict[str, str]]:
    with (root / "complete_dataset.csv").open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def digests(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def names(cell: str) -> list[str]:
    return [n for n in cell.split(",") if n]


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> Path:
    return write_synthetic_release(tmp_path_factory.mktemp("small") / "release", seed=0, **SMALL)


@pytest.fixture(scope="module")
def large(tmp_path_factory) -> Path:
    """300 checkups at reduced image sizes: enough for label statistics and a learnability check."""
    return write_synthetic_release(tmp_path_factory.mktemp("large"), num_checkups=300, seed=0,
                                   photo_size=(224, 168), radiograph_size=(224, 112))


def test_same_seed_writes_identical_files_and_another_seed_differs(small, tmp_path):
    again = write_synthetic_release(tmp_path / "again", seed=0, **SMALL)
    other = write_synthetic_release(tmp_path / "other", seed=1, **SMALL)
    reference = digests(small)
    assert digests(again) == reference
    differing = {k for k, v in digests(other).items() if reference.get(k) != v}
    assert "complete_dataset.csv" in differing and len(differing) > 20


def test_overwrites_an_earlier_release_cleanly_and_refuses_other_folders(tmp_path):
    out = tmp_path / "release"
    write_synthetic_release(out, num_checkups=12, photo_size=(64, 48), radiograph_size=(64, 32))
    write_synthetic_release(out, num_checkups=3, photo_size=(64, 48), radiograph_size=(64, 32))
    rows = read_rows(out)
    listed = {n for r in rows for col in ("photographs", "radiographs") for n in names(r[col])}
    on_disk = {p.name for p in (out / "Images").rglob("*.jpg")}
    assert len(rows) == 3 and listed == on_disk
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match="not empty"):
        write_synthetic_release(tmp_path / "busy", num_checkups=2)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "complete_dataset.csv").write_text("checkup_id\n")
    with pytest.raises(ValueError, match="did not write"):
        write_synthetic_release(tmp_path / "real", num_checkups=2)
    assert (tmp_path / "real" / "complete_dataset.csv").read_text() == "checkup_id\n"


def test_layout_matches_the_real_release(small):
    header = (small / "complete_dataset.csv").read_text(encoding="utf-8").splitlines()[0]
    assert header.split(",") == list(COLUMNS)
    rows = read_rows(small)
    assert len(rows) == 40
    photos = [names(r["photographs"]) for r in rows]
    radiographs = [names(r["radiographs"]) for r in rows]
    assert all(1 <= len(p) <= 8 for p in photos) and all(0 <= len(x) <= 2 for x in radiographs)
    assert any(not x for x in radiographs) and any(x for x in radiographs)
    listed = {("Photographs", n) for p in photos for n in p}
    listed |= {("Radiographs", n) for x in radiographs for n in x}
    on_disk = {(p.parent.name, p.name) for p in (small / "Images").rglob("*.jpg")}
    assert listed == on_disk
    assert all(re.fullmatch(r"C\d{6}", r["checkup_id"]) for r in rows)
    assert all(re.fullmatch(r"P\d{5}", r["patient_id"]) for r in rows)
    assert len({r["checkup_id"] for r in rows}) == 40
    visits = Counter(r["patient_id"] for r in rows)
    assert 15 <= len(visits) <= 30 and max(visits.values()) >= 2
    assert all(10 <= int(r["age"]) <= 90 and r["gender"] in ("male", "female") for r in rows)
    assert {r["visit_type"] for r in rows} == {"first", "follow-up"}
    assert all("2018-01-01" <= r["visit_date"] <= "2025-12-31" for r in rows)
    assert sum("\n" in r["examination"] for r in rows) >= 5
    teeth = {int(t) for r in rows for t in re.findall(r"\b\d{2}\b", r["examination"] + r["diagnosis"])}
    assert teeth and all(1 <= t // 10 <= 4 and 1 <= t % 10 <= 8 for t in teeth)


def test_follow_up_visits_come_after_the_first_visit(small):
    first: dict[str, str] = {}
    for row in sorted(read_rows(small), key=lambda r: r["visit_date"]):
        first.setdefault(row["patient_id"], row["visit_type"])
    assert set(first.values()) == {"first"}


def test_some_photographs_carry_an_exif_rotation_that_restores_the_upright_view(small):
    rotated = 0
    for path in sorted((small / "Images" / "Photographs").glob("*.jpg")):
        with Image.open(path) as image:
            orientation = image.getexif().get(0x0112, 1)
            assert orientation in (1, 6, 8)
            rotated += orientation != 1
            assert ImageOps.exif_transpose(image).size == SMALL["photo_size"]
    assert rotated >= 3
    radiograph = next((small / "Images" / "Radiographs").glob("*.jpg"))
    with Image.open(radiograph) as image:
        assert image.mode == "L" and image.size == SMALL["radiograph_size"]


def test_diagnosis_names_exactly_the_labels(large):
    parser = LabelParser(DEFAULT_CLASSES)
    rows = read_rows(large)
    for row in rows:
        labels = parser.parse(row["anomalies_en"])
        assert labels is not None and len(labels) <= 2
        assert parser.parse(row["diagnosis"]) == labels, row["diagnosis"]
    healthy = [row for row in rows if row["anomalies_en"] == "No disease"]
    assert 0.05 <= len(healthy) / len(rows) <= 0.2  # COde: 1,274 of 8,775 checkups have no disease


def test_label_frequencies_follow_the_real_skew(large):
    parser = LabelParser(DEFAULT_CLASSES)
    labels = [parser.parse(r["anomalies_en"]) for r in read_rows(large)]
    counts = Counter(label for row in labels for label in row)
    assert counts.most_common(1)[0][0] == "malocclusion"
    assert counts["malocclusion"] > 1.5 * counts["gingivitis"]
    assert counts["gingivitis"] > max(counts["caries"], counts["pulpitis"], counts["periodontitis"])
    assert counts["dentition defect"] > counts["periodontitis"]
    assert 0.1 <= sum(len(row) == 2 for row in labels) / len(labels) <= 0.35


def test_unknown_class_names_are_drawn_generically(tmp_path):
    classes = ("caries", "wedge-shaped defect", "blue spots")
    out = write_synthetic_release(tmp_path, num_checkups=15, photo_size=(96, 72), radiograph_size=(96, 48),
                                  classes=classes)
    parser = LabelParser(classes)
    rows = read_rows(out)
    assert all(parser.parse(r["diagnosis"]) == parser.parse(r["anomalies_en"]) for r in rows)
    assert {label for r in rows for label in parser.parse(r["anomalies_en"]) or []} == set(classes)
    with pytest.raises(ValueError, match="read as other conditions"):  # a synonym of periodontitis
        write_synthetic_release(tmp_path / "bad", num_checkups=2, classes=("caries", "gum disease"))
    assert not (tmp_path / "bad").exists()


def image_features(path: Path) -> np.ndarray:
    """Colour histogram, edge orientations and a coarse thumbnail of the photo at a 112 px long side."""
    with Image.open(path) as image:
        image = ImageOps.exif_transpose(image).convert("RGB")
    image.thumbnail((112, 112))
    pixels = np.asarray(image, np.float32) / 255
    bins = np.minimum((pixels * 6).astype(int), 5)
    colour = np.bincount((bins @ np.array([36, 6, 1])).ravel(), minlength=216) / bins[..., 0].size
    gray = pixels.mean(axis=2)
    dx, dy = np.diff(gray, axis=1)[:-1], np.diff(gray, axis=0)[:, :-1]
    angle = np.minimum((np.arctan2(dy, dx) % np.pi / np.pi * 8).astype(int), 7)
    magnitude = np.hypot(dx, dy)
    edges = np.bincount(angle.ravel(), weights=magnitude.ravel(), minlength=8) / (magnitude.sum() + 1e-6)
    thumbnail = np.asarray(image.convert("L").resize((16, 12)), np.float32).ravel() / 255
    return np.concatenate([np.sqrt(colour), edges, thumbnail])


def macro_f1_of_classifier(x_train, y_train, x_test, y_test, c: float) -> float:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import f1_score

    def predict(j: int) -> np.ndarray:
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        return model.fit(x_train, y_train[:, j]).predict(x_test)

    predicted = np.stack([predict(j) for j in range(y_train.shape[1])], axis=1)
    return float(f1_score(y_test, predicted, average="macro", zero_division=0))


def test_images_carry_the_labels_better_than_text(large):
    """Simple image features beat bag-of-words on the patient text, which beats chance."""
    pytest.importorskip("sklearn")
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.preprocessing import StandardScaler

    rows, parser = read_rows(large), LabelParser(DEFAULT_CLASSES)
    y = np.array([[c in parser.parse(r["anomalies_en"]) for c in DEFAULT_CLASSES] for r in rows], dtype=int)
    photos = large / "Images" / "Photographs"
    x_image = np.stack([np.mean([image_features(photos / n) for n in names(r["photographs"])], axis=0)
                        for r in rows])
    text = [" ".join(r[f] for f in TEXT_FIELDS) for r in rows]
    order = np.random.default_rng(0).permutation(len(rows))
    train, test = order[: int(0.7 * len(rows))], order[int(0.7 * len(rows)):]
    scaler = StandardScaler().fit(x_image[train])
    vectoriser = TfidfVectorizer(ngram_range=(1, 2), min_df=2).fit([text[i] for i in train])
    x_text = vectoriser.transform(text).toarray()
    image_f1 = macro_f1_of_classifier(scaler.transform(x_image[train]), y[train],
                                      scaler.transform(x_image[test]), y[test], c=0.1)
    text_f1 = macro_f1_of_classifier(x_text[train], y[train], x_text[test], y[test], c=1.0)
    prevalence = y[test].mean(axis=0)
    chance_f1 = float(np.mean(2 * prevalence / (1 + prevalence)))  # always answering "present"
    assert image_f1 > 0.75, (image_f1, text_f1, chance_f1)
    assert chance_f1 + 0.05 < text_f1 < image_f1 - 0.15, (image_f1, text_f1, chance_f1)
