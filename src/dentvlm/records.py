"""The `Checkup` record: the one contract between ingestion, shards, task formatting and metrics.

A shard sample is one checkup: ``<key>.json`` (this record) and ``<key>.img<i>.jpg`` per image.
Records carry only a salted pseudonymous patient key; identity never leaves ingestion.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from dataclasses import asdict, dataclass, field
from typing import Any

MODALITIES = ("photograph", "radiograph")

# Patient information shown to the model in the report task (the COde report prompt's inputs).
INFO_FIELDS = ("age", "gender", "visit_type", "chief_complaint", "present_illness", "past_medical_record")

# Sections of the COde diagnostic report, in report order.
REPORT_SECTIONS = (
    "examination",
    "diagnosis",
    "treatment_plan",
    "treatment_advice",
    "doctors_orders",
    "remarks",
)

ROLES = ("system", "user", "assistant")
IMAGE_PLACEHOLDER = "<image>"
KEY_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def pseudonym(salt: str, kind: str, value: str) -> str:
    """Salted, keyed hash of an identifier: stable for one salt, not reversible without it."""
    digest = hmac.new(salt.encode(), f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()
    return digest[:20]


def image_member(index: int) -> str:
    """Tar member suffix of the `index`-th image of a sample (``<key>.img3.jpg`` -> ``img3.jpg``)."""
    return f"img{index}.jpg"


IMAGE_MEMBER_PATTERN = re.compile(r"^img(\d{1,3})\.jpg$")


@dataclass
class Checkup:
    """One dental checkup: images, patient information, labels and reference report.

    Attributes:
        key: Pseudonymous checkup key; also the tar sample key (letters, digits, ``_``, ``-``).
        patient: Pseudonymous patient key (used for patient-level splits).
        modalities: Modality of each image, in image order ("photograph" or "radiograph").
        info: Patient information by `INFO_FIELDS` name; missing fields are absent.
        report: Reference report sections by `REPORT_SECTIONS` name; missing sections are absent.
        labels: Normalised condition names found for this checkup (any vocabulary).
        labelled: The source states this checkup's conditions (a COde diagnosis, or a ShareGPT answer
            that lists conditions or says "no disease"), so empty `labels` mean "none" rather than
            "unknown".
        conversation: ShareGPT turns ``{"role", "content"}`` with ``<image>`` placeholders, when the
            source was a conversation; None for clinical records.
    """

    key: str
    patient: str
    modalities: list[str]
    info: dict[str, str] = field(default_factory=dict)
    report: dict[str, str] = field(default_factory=dict)
    labels: list[str] = field(default_factory=list)
    labelled: bool = True
    conversation: list[dict[str, str]] | None = None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, where: str) -> Checkup:
        """Parse and validate an untrusted record; errors name `where` (shard and key)."""
        try:
            raw = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"{where}: record is not valid UTF-8 JSON ({exc})") from None
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: record must be a JSON object")
        unknown = set(raw) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{where}: unknown record keys {sorted(unknown)}")
        record = cls(
            key=_expect(raw, "key", str, where),
            patient=_expect(raw, "patient", str, where),
            modalities=_expect_str_list(raw, "modalities", where),
            info=_expect_str_dict(raw, "info", INFO_FIELDS, where),
            report=_expect_str_dict(raw, "report", REPORT_SECTIONS, where),
            labels=_expect_str_list(raw, "labels", where),
            labelled=_expect(raw, "labelled", bool, where),
            conversation=_expect_conversation(raw.get("conversation"), where),
        )
        record.validate(where)
        return record

    def validate(self, where: str) -> None:
        """Check the invariants that every consumer relies on."""
        if not KEY_PATTERN.match(self.key):
            raise ValueError(f"{where}: key {self.key!r} must match {KEY_PATTERN.pattern}")
        bad = [m for m in self.modalities if m not in MODALITIES]
        if bad:
            raise ValueError(f"{where}: unknown image modalities {bad}; expected {MODALITIES}")
        if self.conversation is not None:
            placeholders = sum(turn["content"].count(IMAGE_PLACEHOLDER) for turn in self.conversation)
            if placeholders != len(self.modalities):
                raise ValueError(
                    f"{where}: conversation has {placeholders} {IMAGE_PLACEHOLDER} placeholders "
                    f"but {len(self.modalities)} images"
                )

    def tasks(self, classes: tuple[str, ...]) -> set[str]:
        """The task variants this record can serve with the class list `classes`.

        Shard manifests count these per shard, so readers know epoch lengths without a scan.
        """
        in_vocab = [label for label in self.labels if label in classes]
        tasks = set()
        if self.labelled:  # multi-label: a checkup with none of the classes answers "none"
            tasks.add("classification")
        if self.labelled and len(in_vocab) == 1:  # the paper's single-label task: exactly one class
            tasks.add("classification_single")
        if self.report.get("diagnosis", "").strip():
            tasks.add("report")
        if self.conversation:
            tasks.add("chat")
        return tasks



def _expect(raw: dict[str, Any], name: str, kind: type, where: str) -> Any:
    value = raw.get(name)
    if not isinstance(value, kind):
        raise ValueError(f"{where}: record key {name!r} must be {kind.__name__}, got {type(value).__name__}")
    return value


def _expect_str_list(raw: dict[str, Any], name: str, where: str) -> list[str]:
    value = _expect(raw, name, list, where)
    if not all(isinstance(v, str) for v in value):
        raise ValueError(f"{where}: record key {name!r} must be a list of strings")
    return value


def _expect_str_dict(raw: dict[str, Any], name: str, allowed: tuple[str, ...], where: str) -> dict[str, str]:
    value = _expect(raw, name, dict, where)
    bad = [k for k, v in value.items() if k not in allowed or not isinstance(v, str)]
    if bad:
        raise ValueError(f"{where}: record key {name!r} has unknown or non-text entries {bad}")
    return value


def _expect_conversation(value: Any, where: str) -> list[dict[str, str]] | None:
    if value is None:
        return None
    ok = isinstance(value, list) and all(
        isinstance(t, dict) and set(t) == {"role", "content"} and t["role"] in ROLES
        and isinstance(t["content"], str)
        for t in value
    )
    if not ok:
        raise ValueError(f"{where}: conversation must be a list of {{role, content}} turns, roles {ROLES}")
    return value
