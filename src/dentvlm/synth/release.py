"""Write a deterministic synthetic COde release: ``complete_dataset.csv`` plus ``Images/``.

It is the project's embedded demo data and its test data, so it imitates what ingestion must cope
with in the real release: identifiers that look real (ingestion pseudonymises them), patients with
several checkups, multi-line quoted text cells, empty radiograph cells, EXIF-rotated photographs,
and the real skew of the condition counts.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import random
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from dentvlm.labels import DEFAULT_CLASSES, LabelParser, normalise_text
from dentvlm.synth.images import Appearance, draw_photograph, draw_radiograph, random_appearance, save_jpeg
from dentvlm.synth.text import CheckupText, capitalised

CSV_NAME = "complete_dataset.csv"
# Written next to the CSV so that only an earlier synthetic release is ever overwritten (never a real one).
MARKER_NAME = ".dentvlm-synthetic.json"
COLUMNS = (
    "checkup_id", "patient_id", "age", "gender", "visit_type", "visit_date", "chief_complaint",
    "present_illness", "past_medical_record", "examination", "diagnosis", "treatment_plan",
    "treatment_advice", "doctors_orders", "remarks", "photographs", "radiographs", "anomalies_en",
)
# Checkups per condition in the COde paper; they weight the label draw. Other names get UNKNOWN_COUNT.
REAL_COUNTS = {
    "malocclusion": 3857, "gingivitis": 1777, "dentition defect": 973, "caries": 703, "pulpitis": 430,
    "periodontitis": 334, "periapical periodontitis": 177, "acute gingival papillitis": 145,
    "retained primary teeth": 71, "wedge-shaped defect": 71, "cracked tooth": 8, "edentulism": 3,
    "crown fracture": 3,
}
UNKNOWN_COUNT = 300
HEALTHY_P = 0.12  # "No disease" checkups (COde: 1,274 of 8,775)
SECOND_LABEL_P = 0.22
SAME_LABELS_ON_FOLLOW_UP_P = 0.5  # a returning patient often still has the same conditions
PATIENTS_PER_CHECKUP = 0.6
RADIOGRAPH_COUNT_WEIGHTS = (35, 40, 25)  # 0..2 radiographs
TRACE_P = 0.88  # each condition shows in a given image with this probability
EXIF_ROTATED_P = 0.1
FIRST_DAY, LAST_DAY = dt.date(2018, 1, 1), dt.date(2025, 12, 31)


@dataclass(frozen=True)
class Profile:
    """Shapes of a synthetic release.

    Attributes:
        photo_sizes: Photograph (width, height) choices, one drawn per checkup.
        radiograph_size: Radiograph (width, height).
        photo_count_weights: Weights of 1..8 photographs per checkup.
        detail: Extra examination findings / history sentences (see `CheckupText`).
    """

    photo_sizes: tuple[tuple[int, int], ...]
    radiograph_size: tuple[int, int]
    photo_count_weights: tuple[int, ...]
    detail: int


# "demo": small images and short text, the embedded demo. "code": COde's shapes, for tests of the real
# recipe: photos with a long side of 1,024-2,000 px, 5.7 per checkup on average (1-8), 0-2 radiographs,
# records about as long as COde's.
PROFILES = {
    "demo": Profile(((480, 360),), (512, 256), (5, 7, 10, 13, 17, 18, 15, 15), detail=0),
    "code": Profile(((1024, 768), (1280, 960), (1600, 1200), (2000, 1500)), (1600, 800),
                    (4, 5, 7, 10, 14, 19, 21, 20), detail=6),
}


@dataclass(frozen=True)
class _Settings:
    seed: int
    classes: tuple[str, ...]
    parser: LabelParser
    profile: Profile


@dataclass
class _Visit:
    patient_no: int
    patient_id: str
    age: int
    gender: str
    date: dt.date
    visit_type: str
    labels: list[str]


def write_synthetic_release(
    out_dir: str | Path,
    num_checkups: int = 300,
    seed: int = 0,
    photo_size: tuple[int, int] | None = None,
    radiograph_size: tuple[int, int] | None = None,
    classes: Sequence[str] = DEFAULT_CLASSES,
    profile: str = "demo",
) -> Path:
    """Write a synthetic release in the real COde layout; the same arguments give byte-identical files.

    Args:
        out_dir: Folder to write; created if needed. It must be empty or hold an earlier synthetic
            release (which is replaced).
        num_checkups: Number of checkups (CSV rows), about 0.6 patients per checkup.
        seed: Non-negative random seed.
        photo_size: (width, height) of the upright photographs (default: the profile's).
        radiograph_size: (width, height) of the radiographs (default: the profile's).
        classes: Condition names to draw labels from (normalised; unknown names get a generic mark).
        profile: "demo" (small images, short text) or "code" (COde's image sizes, photo counts and
            text length; see `PROFILES`).

    Returns:
        The release folder (the one holding ``complete_dataset.csv``).

    Raises:
        ValueError: bad arguments, or `out_dir` holds something that is not a synthetic release.
    """
    if profile not in PROFILES:
        raise ValueError(f"profile must be one of {sorted(PROFILES)}, got {profile!r}")
    shapes = PROFILES[profile]
    if photo_size is not None or radiograph_size is not None:
        shapes = replace(shapes, photo_sizes=(photo_size,) if photo_size else shapes.photo_sizes,
                         radiograph_size=radiograph_size or shapes.radiograph_size)
    classes = _check_arguments(num_checkups, seed, shapes, classes)
    out = _prepare_folder(Path(out_dir))
    rng = random.Random(seed)
    settings = _Settings(seed, classes, LabelParser(classes), shapes)
    (out / "Images" / "Photographs").mkdir(parents=True)
    (out / "Images" / "Radiographs").mkdir(parents=True)
    visits = _plan_visits(num_checkups, classes, rng)
    checkup_numbers = sorted(rng.sample(range(1, 10 * num_checkups + 1000), num_checkups))
    rows = [_write_checkup(out, f"C{number:06d}", index, visit, settings, rng)
            for index, (visit, number) in enumerate(zip(visits, checkup_numbers, strict=True))]
    _write_csv(out / CSV_NAME, rows)
    marker = {"num_checkups": num_checkups, "seed": seed, "profile": profile,
              "photo_sizes": [list(size) for size in shapes.photo_sizes],
              "radiograph_size": list(shapes.radiograph_size), "classes": list(classes)}
    (out / MARKER_NAME).write_text(json.dumps(marker, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _write_checkup(out: Path, checkup_id: str, index: int, visit: _Visit, settings: _Settings,
                   rng: random.Random) -> dict[str, str]:
    """Draw one checkup's text and images, save the images, and return its CSV row."""
    text = CheckupText(visit.labels, settings.classes, rng, settings.profile.detail).fields()
    if settings.parser.parse(text["diagnosis"]) != [c for c in settings.classes if c in visit.labels]:
        raise AssertionError(f"diagnosis {text['diagnosis']!r} does not name exactly {visit.labels}")
    # The healthy look belongs to the patient, so it stays the same across their visits.
    look = random_appearance(np.random.default_rng([settings.seed, 1, visit.patient_no]))
    photos = _write_images(out, checkup_id, "photograph", visit, look, settings, rng, index)
    radiographs = _write_images(out, checkup_id, "radiograph", visit, look, settings, rng, index)
    return {
        "checkup_id": checkup_id, "patient_id": visit.patient_id, "age": str(visit.age),
        "gender": visit.gender, "visit_type": visit.visit_type, "visit_date": visit.date.isoformat(),
        **text, "photographs": ",".join(photos), "radiographs": ",".join(radiographs),
        "anomalies_en": ", ".join(capitalised(label) for label in visit.labels) or "No disease",
    }


def _check_arguments(num_checkups, seed, shapes: Profile, classes) -> tuple[str, ...]:
    if num_checkups < 1:
        raise ValueError(f"num_checkups must be >= 1, got {num_checkups}")
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    sizes = [("photo_size", size) for size in shapes.photo_sizes] + [("radiograph_size", shapes.radiograph_size)]
    for name, size in sizes:
        if len(size) != 2 or min(size) < 32:
            raise ValueError(f"{name} must be (width, height) with both >= 32 pixels, got {size}")
    names = tuple(normalise_text(c) for c in classes)
    if not names or len(set(names)) != len(names) or not all(names):
        raise ValueError(f"classes must be non-empty, distinct names, got {list(classes)}")
    parser = LabelParser(names)
    # A name that the parser reads as another condition (e.g. the synonym "gum disease") could
    # never be recovered from the diagnosis or from anomalies_en.
    unreadable = [name for name in names if parser.parse(capitalised(name)) != [name]]
    if unreadable:
        raise ValueError(f"class names {unreadable} are read as other conditions by the label parser")
    return names


def _prepare_folder(out: Path) -> Path:
    """Create `out`, or empty it when it holds an earlier synthetic release; refuse anything else."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not (out / CSV_NAME).is_file():
            raise ValueError(f"{out} is not empty and holds no {CSV_NAME}; refusing to write into it")
        if not (out / MARKER_NAME).is_file():
            raise ValueError(f"{out} holds a {CSV_NAME} that this tool did not write (a real release?); "
                             "refusing to overwrite it")
        for name in (CSV_NAME, MARKER_NAME):
            (out / name).unlink()
        shutil.rmtree(out / "Images", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def _plan_visits(num_checkups: int, classes: tuple[str, ...], rng: random.Random) -> list[_Visit]:
    """Patients, their visits and labels, in date order (the order of the checkup numbers)."""
    num_patients = max(1, min(num_checkups, round(PATIENTS_PER_CHECKUP * num_checkups)))
    visits_per_patient = [1] * num_patients
    extra = num_checkups - num_patients
    while extra > 0:  # spread the remaining checkups as 2-4 visits over some patients
        patient = rng.randrange(num_patients)
        if visits_per_patient[patient] < 4:
            visits_per_patient[patient] += 1
            extra -= 1
    patient_numbers = rng.sample(range(1, 10 * num_patients + 1000), num_patients)
    visits: list[_Visit] = []
    for patient_no, count in zip(patient_numbers, visits_per_patient, strict=True):
        visits += _patient_visits(patient_no, count, classes, rng)
    visits.sort(key=lambda v: (v.date, v.patient_no))
    return visits


def _patient_visits(patient_no: int, count: int, classes: tuple[str, ...],
                    rng: random.Random) -> list[_Visit]:
    labels = _draw_labels(classes, rng)
    # Malocclusion is mostly seen in the young, periodontitis in older adults.
    if labels[:1] == ["malocclusion"] and rng.random() < 0.7:
        age = rng.randint(10, 35)
    elif labels[:1] == ["periodontitis"]:
        age = rng.randint(35, 85)
    else:
        age = rng.randint(10, 88)
    gender = rng.choice(("male", "female"))
    day = FIRST_DAY + dt.timedelta(days=rng.randrange((LAST_DAY - FIRST_DAY).days - 200 * (count - 1)))
    visits: list[_Visit] = []
    for n in range(count):
        if n:
            day += dt.timedelta(days=rng.randint(14, 200))
            if rng.random() >= SAME_LABELS_ON_FOLLOW_UP_P:
                labels = _draw_labels(classes, rng)
        years = (day - visits[0].date).days // 365 if visits else 0
        visits.append(_Visit(patient_no, f"P{patient_no:05d}", min(90, age + years), gender, day,
                             "first" if n == 0 else "follow-up", list(labels)))
    return visits


def _draw_labels(classes: tuple[str, ...], rng: random.Random) -> list[str]:
    """No condition (a healthy checkup), or one, sometimes two, weighted by the real counts."""
    if rng.random() < HEALTHY_P:
        return []
    pool = list(classes)
    weights = [REAL_COUNTS.get(c, UNKNOWN_COUNT) for c in pool]
    labels = rng.choices(pool, weights)
    if len(pool) > 1 and rng.random() < SECOND_LABEL_P:
        rest = [(c, w) for c, w in zip(pool, weights, strict=True) if c != labels[0]]
        labels += rng.choices([c for c, _ in rest], [w for _, w in rest])
    return labels


def _count(rng: random.Random, weights: Sequence[int], smallest: int) -> int:
    return smallest + rng.choices(range(len(weights)), weights)[0]


def _write_images(out: Path, checkup_id: str, modality: str, visit: _Visit, look: Appearance,
                  settings: _Settings, rng: random.Random, index: int) -> list[str]:
    """Draw and save the images of one modality (1-8 photographs, 0-2 radiographs); returns file names.

    Each image has its own generator, keyed by seed, modality, checkup and image number, so that
    drawing one image never shifts the randomness of another.
    """
    photo = modality == "photograph"
    shapes = settings.profile
    count = _count(rng, shapes.photo_count_weights, 1) if photo else _count(rng, RADIOGRAPH_COUNT_WEIGHTS, 0)
    folder = out / "Images" / ("Photographs" if photo else "Radiographs")
    draw = draw_photograph if photo else draw_radiograph
    size = shapes.radiograph_size
    if photo:  # one camera setting per checkup
        size = rng.choice(shapes.photo_sizes) if len(shapes.photo_sizes) > 1 else shapes.photo_sizes[0]
    names = []
    for number in range(1, count + 1):
        traces = [label for label in visit.labels if rng.random() < TRACE_P]
        orientation = rng.choice((6, 8)) if photo and rng.random() < EXIF_ROTATED_P else 1
        image_rng = np.random.default_rng([settings.seed, 2 if photo else 3, index, number])
        image = draw(size, look, traces, image_rng)
        name = f"{checkup_id}_{'P' if photo else 'R'}{number}.jpg"
        save_jpeg(image, folder / name, orientation)
        names.append(name)
    return names


def _write_csv(path: Path, rows: list[dict[str, str]]) -> None:
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
