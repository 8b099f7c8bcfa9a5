"""Oro-dental condition names: the normalised vocabulary, synonyms, and text-to-label parsing.

One parser serves ingestion (the release's ``anomalies_en`` cell, ShareGPT answers) and evaluation
(generated answers and generated diagnosis sections), so a label means the same thing everywhere.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Sequence

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


def normalise_text(text: str) -> str:
    """Lower-case, unify Unicode forms and dashes, and collapse whitespace."""
    text = unicodedata.normalize("NFKC", text).lower()
    text = re.sub(r"[\u2010-\u2015\u2212]", "-", text)
    return re.sub(r"\s+", " ", text).strip()


class LabelParser:
    """Finds condition names in free text, longest phrase first.

    Longest-first matching keeps "periapical periodontitis" from also counting as "periodontitis".
    Matches are whole words, so "caries" inside an unrelated word does not count.

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
        phrases.update({normalise_text(k): normalise_text(v) for k, v in (extra_synonyms or {}).items()})
        ordered = sorted(phrases, key=len, reverse=True)
        self._phrase_to_label = phrases
        self._pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(p) for p in ordered) + r")(?![\w-])")
        self._no_finding = re.compile(
            r"^(" + "|".join(re.escape(p) for p in NO_FINDING_PHRASES) + r")[.!]?$"
        )

    def find_all(self, text: str) -> list[str]:
        """All normalised condition names in `text`, in order of first mention, any vocabulary."""
        found: list[str] = []
        for match in self._pattern.finditer(normalise_text(text)):
            label = self._phrase_to_label[match.group(1)]
            if label not in found:
                found.append(label)
        return found

    def parse(self, text: str) -> list[str] | None:
        """Labels of the vocabulary named in `text`, in vocabulary order.

        Returns:
            The labels; an empty list when the text says "no disease" or the like; None when the
            text names nothing recognisable (an unparseable answer, which evaluation counts).
        """
        found = self.find_all(text)
        if not found:
            return [] if self.says_no_finding(text) else None
        return [c for c in self.classes if c in found]

    def says_no_finding(self, text: str) -> bool:
        """True when the whole text is a "no disease" style answer."""
        return bool(self._no_finding.match(normalise_text(text)))

    def indices(self, labels: Iterable[str]) -> list[int]:
        """Vocabulary positions of `labels` (which must be in the vocabulary)."""
        return [self.classes.index(label) for label in labels]
