"""Task formatting at read time: one checkup -> a chat example for classification, report or chat.

Prompts follow the COde authors' files: one ``image-<n>: <image>`` line per image, then the question
and, for the report, the patient information. Which task, modalities and image budget are reading
choices, so one set of shards serves every task, baseline and ablation.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from PIL import Image

from dentvlm.records import IMAGE_PLACEHOLDER, INFO_FIELDS, REPORT_SECTIONS, Checkup

TASKS = ("classification", "report", "chat")
MODALITIES = ("both", "images", "text")

# How each field is written in prompts and reports (the COde files' English wording).
FIELD_TITLES = {
    "age": "age",
    "gender": "gender",
    "visit_type": "visit type",
    "chief_complaint": "chief complaint",
    "present_illness": "present illness",
    "past_medical_record": "past medical history",
    "examination": "examination",
    "diagnosis": "diagnosis",
    "treatment_plan": "treatment plan",
    "treatment_advice": "treatment advice",
    "doctors_orders": "doctor's orders",
    "remarks": "remarks",
}
# Text shown to the classifier: partly informative clinical notes (the report's examination included).
CLASSIFICATION_TEXT_FIELDS = ("chief_complaint", "present_illness", "examination")

Message = dict[str, Any]


@dataclass
class Example:
    """A formatted training/evaluation example.

    Attributes:
        key: Pseudonymous checkup key.
        task: "classification", "report" or "chat".
        messages: Chat turns in the Hugging Face content-list format; the last turn is the
            assistant's reference answer.
        images: Decoded images, in the order of the image parts of `messages`.
        target: The reference answer text (the last assistant turn).
        labels: True labels in vocabulary order (empty for chat examples without labels).
        is_padding: A repeated sample that only evens out batch counts across ranks; excluded
            from validation loss and metrics.
        thumbnail: A small JPEG strip of the checkup's images, for prediction tables.
        demo_messages: Leading messages that are few-shot demonstrations (0 without).
        demo_images: Leading images that belong to those demonstrations.
        dropped_before: Samples the stream dropped since the previous example (set by the stream).
        image_bytes: The shard's stored JPEG of each of `images`, when they are those bytes decoded as
            they are (no decode-time resize): endpoint evaluation can send them verbatim. None otherwise.
        role: "train", "val" or "test": what the example's split is read for (see `Prediction.split`).
        groups: The checkup's subgroups (`dentvlm.data.groups`), for per-group metrics.
    """

    key: str
    task: str
    messages: list[Message]
    images: list[Image.Image]
    target: str
    labels: list[str] = field(default_factory=list)
    is_padding: bool = False
    thumbnail: bytes | None = None
    demo_messages: int = 0
    demo_images: int = 0
    dropped_before: int = 0
    image_bytes: list[bytes] | None = None
    role: str = "test"
    groups: dict[str, str] = field(default_factory=dict)


def task_variant(task: str, multi_label: bool) -> str:
    """The manifest's task-count key for a reading task (single-label classification is stricter)."""
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    return "classification_single" if task == "classification" and not multi_label else task


def select_images(checkup: Checkup, modalities: tuple[str, ...], max_images: int) -> list[int]:
    """Indices of the images to show: wanted modalities, photographs before radiographs, at most `max_images`."""
    chosen = [i for m in modalities for i, mod in enumerate(checkup.modalities) if mod == m]
    return chosen[:max_images]


NONE_ANSWER = "none"


def classification_question(classes: tuple[str, ...], multi_label: bool, none_answer: str = NONE_ANSWER) -> str:
    listing = ", ".join(classes)
    if multi_label:
        return (f"Which of these oro-dental conditions does this checkup show: {listing}? "
                f"Answer with the condition names only, comma-separated, or {none_answer} if it shows none of them.")
    return f"Which one of these oro-dental conditions does this checkup show: {listing}? Answer with one name only."


REPORT_QUESTION = "Write the diagnostic report of this oro-dental checkup."


def format_report(sections: dict[str, str]) -> str:
    """Reference report text: ``section: value`` lines in COde order, present sections only."""
    return "\n".join(f"{FIELD_TITLES[s]}: {sections[s]}" for s in REPORT_SECTIONS if sections.get(s))


def parse_report(text: str) -> dict[str, str]:
    """Sections of a (generated) report written in `format_report`'s layout; unknown lines join the last."""
    by_title = {title: name for name, title in FIELD_TITLES.items() if name in REPORT_SECTIONS}
    pattern = re.compile(r"^\s*(" + "|".join(re.escape(t) for t in by_title) + r")\s*:\s*(.*)$", re.IGNORECASE)
    sections: dict[str, str] = {}
    last = None
    for line in text.splitlines():
        match = pattern.match(line)
        if match:
            last = by_title[match.group(1).lower()]
            sections[last] = match.group(2).strip()
        elif last is not None and line.strip():
            sections[last] += "\n" + line.strip()
    return sections


def _info_block(checkup: Checkup, fields: tuple[str, ...]) -> str:
    values = {**checkup.info, **checkup.report}
    lines = [f"{FIELD_TITLES[f]}: {values[f]}" for f in fields if values.get(f)]
    return "Patient information:\n" + "\n".join(lines) if lines else ""


def _image_lines(count: int) -> list[Message]:
    parts: list[Message] = []
    for n in range(count):
        parts += [{"type": "text", "text": f"image-{n + 1}: "}, {"type": "image"}, {"type": "text", "text": "\n"}]
    return parts


def _merge_text(parts: list[Message]) -> list[Message]:
    merged: list[Message] = []
    for part in parts:
        if part["type"] == "text" and merged and merged[-1]["type"] == "text":
            merged[-1] = {"type": "text", "text": merged[-1]["text"] + part["text"]}
        elif part["type"] != "text" or part["text"]:
            merged.append(part)
    return merged


def user_content(image_count: int, text: str) -> list[Message]:
    """COde-style user turn: ``image-n: <image>`` lines, then `text`."""
    return _merge_text(_image_lines(image_count) + [{"type": "text", "text": text}])


def format_checkup(
    checkup: Checkup,
    images: list[Image.Image],
    task: str,
    classes: tuple[str, ...],
    multi_label: bool = True,
    modality: str = "both",
    none_answer: str = NONE_ANSWER,
) -> Example:
    """Build the `task` example of a checkup whose chosen images are `images` (already selected).

    A multi-label classification answer lists the checkup's conditions of `classes`, or says
    `none_answer` when it has none of them (a healthy checkup, or only other conditions)."""
    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    shown = images if modality != "text" else []
    if task == "chat":
        return _format_conversation(checkup, images)
    if task == "classification":
        labels = [c for c in classes if c in checkup.labels]
        info = _info_block(checkup, CLASSIFICATION_TEXT_FIELDS) if modality != "images" else ""
        question = classification_question(classes, multi_label, none_answer)
        target = ", ".join(labels) or none_answer
    elif task == "report":
        labels = [c for c in classes if c in checkup.labels]
        info = _info_block(checkup, INFO_FIELDS) if modality != "images" else ""
        question = REPORT_QUESTION
        target = format_report(checkup.report)
    else:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS}")
    text = "\n".join(t for t in (info, question) if t)
    messages = [
        {"role": "user", "content": user_content(len(shown), text)},
        {"role": "assistant", "content": [{"type": "text", "text": target}]},
    ]
    return Example(checkup.key, task, messages, shown, target, labels)


def _format_conversation(checkup: Checkup, images: list[Image.Image]) -> Example:
    if not checkup.conversation:
        raise ValueError(f"checkup {checkup.key} has no conversation for the chat task")
    messages = []
    for turn in checkup.conversation:
        pieces = turn["content"].split(IMAGE_PLACEHOLDER)
        parts: list[Message] = []
        for n, piece in enumerate(pieces):
            parts.append({"type": "text", "text": piece})
            if n < len(pieces) - 1:
                parts.append({"type": "image"})
        messages.append({"role": turn["role"], "content": _merge_text(parts)})
    if messages[-1]["role"] != "assistant":
        messages = messages[: max(i for i, m in enumerate(messages) if m["role"] == "assistant") + 1]
    shown = sum(part["type"] == "image" for m in messages for part in m["content"])
    target = messages[-1]["content"][0]["text"] if messages[-1]["content"] else ""
    return Example(checkup.key, "chat", messages, images[:shown], target, list(checkup.labels))


def with_demonstrations(example: Example, demonstrations: list[Example]) -> Example:
    """Few-shot: the demonstrations' question/answer turns, then the example's own (images in order)."""
    messages = [m for demo in demonstrations for m in demo.messages] + example.messages
    images = [image for demo in demonstrations for image in demo.images] + example.images
    stored = [e.image_bytes for e in [*demonstrations, example]]
    return Example(example.key, example.task, messages, images, example.target, example.labels,
                   example.is_padding, example.thumbnail, demo_messages=len(messages) - len(example.messages),
                   demo_images=len(images) - len(example.images),
                   image_bytes=None if None in stored else [data for part in stored for data in part],
                   role=example.role, groups=example.groups)
