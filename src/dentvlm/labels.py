"""Oro-dental condition names: the normalised vocabulary, synonyms (English and Chinese), and
text-to-label parsing.

One parser serves ingestion (the release's ``anomalies_en`` cell, ShareGPT answers) and evaluation
(generated answers and generated diagnosis sections), so a label means the same thing everywhere.
Only affirmed mentions are labels: "no caries" and "suspected caries" are read by `dentvlm.negation`
and reported apart.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

from dentvlm.negation import Mention, Reading, hard_breaks, phrase_pattern, read_polarity

# Normalised COde condition names, most frequent first (checkup counts from the COde paper).
CODE_CONDITIONS: tuple[str, ...] = (
    "malocclusion",
    "gingivitis",
    "dentition defect",
    "caries",
    "pulpitis",
    "periodontitis",
    "periapical periodontitis",
    "acute gingival papillitis",
    "retained primary teeth",
    "wedge-shaped defect",
    "cracked tooth",
    "edentulism",
    "crown fracture",
)

# The six most frequent conditions: the default class list of the classification benchmark.
# The paper's exact six are not confirmed, so every entry point takes the class list as configuration.
DEFAULT_CLASSES: tuple[str, ...] = CODE_CONDITIONS[:6]

# Phrases that name "nothing found"; they parse to an empty label set rather than an error.
NO_FINDING_PHRASES: tuple[str, ...] = (
    "no disease",
    "no diseases",
    "no anomaly",
    "no anomalies",
    "no finding",
    "no findings",
    "none",
    "healthy",
    "normal",
)

# Alternative wordings -> normalised name. Keys are compared after `normalise_text`.
SYNONYMS: dict[str, str] = {
    "dental caries": "caries",
    "tooth decay": "caries",
    "decay": "caries",
    "decayed tooth": "caries",
    "decayed teeth": "caries",
    "cavity": "caries",
    "cavities": "caries",
    "carious lesion": "caries",
    "carious lesions": "caries",
    "gum inflammation": "gingivitis",
    "gingival inflammation": "gingivitis",
    "inflamed gums": "gingivitis",
    "missing tooth": "dentition defect",
    "missing teeth": "dentition defect",
    "tooth loss": "dentition defect",
    "dentition defects": "dentition defect",
    "partial edentulism": "dentition defect",
    "malaligned teeth": "malocclusion",
    "misaligned teeth": "malocclusion",
    "crowded teeth": "malocclusion",
    "dental crowding": "malocclusion",
    "crossbite": "malocclusion",
    "tooth pulp inflammation": "pulpitis",
    "pulp inflammation": "pulpitis",
    "irreversible pulpitis": "pulpitis",
    "reversible pulpitis": "pulpitis",
    "chronic periodontitis": "periodontitis",
    "periodontal disease": "periodontitis",
    "gum disease": "periodontitis",
    "apical periodontitis": "periapical periodontitis",
    "chronic periapical periodontitis": "periapical periodontitis",
    "gingival papillitis": "acute gingival papillitis",
    "retained deciduous teeth": "retained primary teeth",
    "retained deciduous tooth": "retained primary teeth",
    "retained primary tooth": "retained primary teeth",
    "retained baby teeth": "retained primary teeth",
    "wedge shaped defect": "wedge-shaped defect",
    "wedge-shaped defects": "wedge-shaped defect",
    "cervical abrasion": "wedge-shaped defect",
    "cracked teeth": "cracked tooth",
    "tooth crack": "cracked tooth",
    "edentulous": "edentulism",
    "fractured crown": "crown fracture",
    "tooth fracture": "crown fracture",
}

# Chinese names -> normalised name: COde's own records are written in Chinese.
CHINESE_NAMES: dict[str, str] = {
    "错颌畸形": "malocclusion",
    "错合畸形": "malocclusion",
    "错𬌗畸形": "malocclusion",
    "牙龈炎": "gingivitis",
    "牙列缺损": "dentition defect",
    "龋齿": "caries",
    "龋病": "caries",
    "龋坏": "caries",
    "牙髓炎": "pulpitis",
    "牙周炎": "periodontitis",
    "根尖周炎": "periapical periodontitis",
    "急性龈乳头炎": "acute gingival papillitis",
    "龈乳头炎": "acute gingival papillitis",
    "乳牙滞留": "retained primary teeth",
    "楔状缺损": "wedge-shaped defect",
    "牙隐裂": "cracked tooth",
    "牙列缺失": "edentulism",
    "冠折": "crown fracture",
}


def normalise_text(text: str) -> str:
    """Lower-case, unify Unicode forms and dashes, and collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    return re.sub(r"\s+", " ", text).strip()


class LabelParser:
    """Finds condition names in free text, longest phrase first, and reads whether each is affirmed,
    negated or uncertain (see `dentvlm.negation`).

    Longest-first matching keeps "periapical periodontitis" from also counting as "periodontitis".
    English names match as whole words, so "caries" inside an unrelated word does not count; Chinese
    names match inside Chinese text ("无龋齿").

    Args:
        classes: The label vocabulary; names found outside it are dropped by `parse`.
        extra_synonyms: More phrase -> class mappings, e.g. from a clinic's own wording.
    """

    def __init__(self, classes: Sequence[str], extra_synonyms: dict[str, str] | None = None):
        self.classes = tuple(normalise_text(c) for c in classes)
        if len(set(self.classes)) != len(self.classes) or not self.classes:
            raise ValueError(f"class list must be non-empty and without duplicates, got {list(classes)}")
        phrases: dict[str, str] = {c: c for c in CODE_CONDITIONS}
        phrases.update({c: c for c in self.classes})
        phrases.update(SYNONYMS)
        phrases.update(CHINESE_NAMES)
        phrases.update({normalise_text(k): normalise_text(v) for k, v in (extra_synonyms or {}).items()})
        self._phrase_to_label = phrases
        self._pattern = phrase_pattern(phrases)
        self._no_finding = re.compile(
            r"^(" + "|".join(re.escape(p) for p in NO_FINDING_PHRASES) + r")[.!]?$"
        )

    def read(self, text: str) -> Reading:
        """Every condition `text` names, by polarity (normalised names, any vocabulary)."""
        return read_polarity(normalise_text(hard_breaks(text)), self._mentions)

    def _mentions(self, clause: str) -> list[Mention]:
        return [Mention(m.start(), m.end(), self._phrase_to_label[m.group(0)]) for m in self._pattern.finditer(clause)]

    def parse(self, text: str) -> list[str] | None:
        """Affirmed labels of the vocabulary in `text`, in vocabulary order (for generated answers).

        Returns:
            The labels; an empty list when the text says "no disease" or the like, or names conditions
            only to negate them or leave them uncertain ("No caries, no gingivitis." is an answer);
            None when the text names nothing recognisable (an unparseable answer, which evaluation counts).
        """
        return self.labels_of(self.read(text), text)

    def labels_of(self, reading: Reading, text: str) -> list[str] | None:
        """`parse` for a `reading` already made of `text`."""
        if not reading.named:
            return [] if self.says_no_finding(text) else None
        return [c for c in self.classes if c in reading.affirmed]

    def stated_labels(self, text: str) -> list[str] | None:
        """Affirmed labels of any vocabulary in a source's diagnosis (for ingestion, i.e. truth labels).

        Returns:
            The labels (mention order); an empty list when the text says "no disease" or only negates
            conditions; None when it states nothing definite: no condition recognised, or only uncertain
            ones ("suspected caries" leaves the checkup's conditions unknown, not "none").
        """
        reading = self.read(text)
        if reading.affirmed or reading.negated or self.says_no_finding(text):
            return list(reading.affirmed)
        return None

    def says_no_finding(self, text: str) -> bool:
        """True when the whole text is a "no disease" style answer."""
        return bool(self._no_finding.match(normalise_text(text)))

    def indices(self, labels: Iterable[str]) -> list[int]:
        """Vocabulary positions of `labels` (which must be in the vocabulary)."""
        return [self.classes.index(label) for label in labels]
