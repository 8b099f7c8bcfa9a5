"""The prediction record: what a validation/test step hands to the metric callbacks and results."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Prediction:
    """One generated answer beside its reference.

    Attributes:
        key: Pseudonymous checkup key (never a patient identifier).
        task: "classification", "report" or "chat".
        prompt: The prompt text as the model saw it (image tokens elided).
        reference: The reference answer.
        generated: The model's answer.
        true_labels: Reference labels, in vocabulary order.
        parsed_labels: Labels parsed from `generated` (affirmed conditions only); None when unparseable
            (set by the metrics).
        negated_labels: Conditions `generated` negates ("no caries"), any vocabulary (set by the metrics).
        uncertain_labels: Conditions `generated` leaves uncertain ("suspected caries"), any vocabulary.
        thumbnail: A small JPEG strip of the checkup's images, for prediction tables (not written to files).
    """

    key: str
    task: str
    prompt: str
    reference: str
    generated: str
    true_labels: list[str] = field(default_factory=list)
    parsed_labels: list[str] | None = None
    negated_labels: list[str] = field(default_factory=list)
    uncertain_labels: list[str] = field(default_factory=list)
    thumbnail: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        record = asdict(self)
        del record["thumbnail"]
        return record
