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
        class_probabilities: Per class of the vocabulary, the probability the model gives to that condition
            being present (teacher-forced scoring, see `dentvlm.model.scoring`); None when not available
            (not scored, or an endpoint without log-probabilities), never zeros in their place.
        split: The split the checkup comes from: "test", or "val" for the validation checkups that
            `dentvlm test` scores to choose operating thresholds (no generated answer for those).
        groups: The checkup's subgroups: gender, age_band, visit_type, radiographs, photographs (see
            `dentvlm.data.groups`), for per-group metrics.
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
    class_probabilities: dict[str, float] | None = None
    split: str = "test"
    groups: dict[str, str] = field(default_factory=dict)
    thumbnail: bytes | None = field(default=None, repr=False)

    def to_dict(self) -> dict:
        record = asdict(self)
        del record["thumbnail"]
        return record
