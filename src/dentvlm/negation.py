"""Polarity of condition mentions: affirmed, negated ("no caries", "龋齿已排除") or uncertain ("suspected
caries", "疑似牙髓炎"), in English and Chinese clinical phrasing.

A NegEx-style reader: cue phrases (longest first) act on the condition mentions of their clause.
A pre cue reaches forward to the end of its comma segment, or to the end of the clause when the rest
is a list of conditions joined by or/nor/、 ("no caries, gingivitis, or pulpitis"); a post cue reaches
back over its own segment and, when that names conditions only, over the bare condition names before
it ("caries, gingivitis ruled out"; not "partial edentulism, 17 and 47 absent").
A scope stops at the next cue, except that a negation reaches over uncertainty cues ("no suspicious
caries", "未见可疑龋坏" negate). Labels must come from affirmed mentions only, or "No caries" in a
reference or a generated answer would count as caries.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass

AFFIRMED, NEGATED, UNCERTAIN = "affirmed", "negated", "uncertain"
PRE, POST, BOTH = "pre", "post", "both"  # BOTH: forward when a mention follows, else back over its segment

_CANNOT = ("cannot", "can not", "can't", "could not", "couldn't")
# "caries cannot be excluded", "caries not ruled out": uncertain, not negated (longest cue wins over "not")
_NOT_EXCLUDED = tuple(f"{modal}{aux} {verb}" for modal in (*_CANNOT, "not") for aux in ("", " be", " been")
                      for verb in ("excluded", "ruled out"))
_CANNOT_EXCLUDE = tuple(f"{modal} {verb}" for modal in (*_CANNOT, "does not", "do not", "not")
                        for verb in ("exclude", "rule out"))
# (polarity, direction) -> cue phrases, compared with normalised text. None: a pseudo cue, which only
# ends other cues' scopes ("not only" is no negation; "present", "伴" start an affirmed statement).
CUES: dict[tuple[str | None, str], tuple[str, ...]] = {
    (NEGATED, PRE): (
        "no", "not", "without", "negative for", "free of", "free from", "absence of", "no evidence of",
        "no evidence for", "no sign of", "no signs of", "no indication of", "denies", "denied", "no longer",
        "never", "neither", "nor", "rules out", "excludes",
        "无", "未见", "未发现", "未查见", "未检出", "未诊断", "没有", "否认", "排除", "除外", "非", "不伴", "不伴有",
    ),
    (NEGATED, POST): (
        "ruled out", "excluded", "absent", "negative", "(-)", "none", "not seen", "not present", "not found",
        "not observed", "not detected", "not identified", "not noted", "not evident", "not visible", "not apparent",
        "阴性", "已排除", "已除外",
    ),
    (UNCERTAIN, PRE): (
        "suspect", "suspicious", "suspicious for", "suspicion of", "rule out", "r/o", "exclude", "consider",
        "may have", "might have", "could have", "may be", "might be", "could be", "maybe", "perhaps", "possibly",
        "probably", "presumably", "query", "question of", "differential", "concern for", "concerning for",
        "worrisome for", "suggestive of", "suggesting", "suggests", "risk of", "risk for", *_CANNOT_EXCLUDE,
    ),
    (UNCERTAIN, BOTH): (
        "suspected", "possible", "probable", "likely", "unlikely", "questionable", "uncertain", "unclear",
        "doubtful", "equivocal", "indeterminate", "presumed", "tentative", "not confirmed", "unconfirmed",
        "疑似", "可疑", "可能", "考虑", "怀疑", "疑", "待排", "待排除", "待查", "不除外", "不排除", "倾向", "倾向于",
    ),
    (UNCERTAIN, POST): ("?", *_NOT_EXCLUDED),
    (None, BOTH): (
        "not only", "not just", "no doubt", "without doubt", "no change", "no increase", "present", "seen",
        "noted", "found", "observed", "detected", "identified", "confirmed", "visible", "evident", "with",
        "无疑", "不仅", "伴", "伴有", "可见", "见", "合并", "存在",
    ),
}
# "Caries: negative" and "龋齿：无" are form answers: the value after the colon is a post cue, not a clause.
_COLON_VALUES = {
    "(-)": ("no", "none", "negative", "absent", "not seen", "(-)", "无", "阴性", "没有", "否"),
    "?": ("?", "possible", "suspected", "questionable", "uncertain", "可疑", "疑似", "待排", "不除外", "可能"),
}
_ASCII_WORD = "[0-9a-z_\u00c0-\u024f-]"  # edges of English words; CJK phrases need no word boundary
_CONTRAST = ("but", "however", "although", "though", "except", "apart from", "whereas", "但", "然而", "不过")
_CONNECTORS = ("and", "or", "nor", "&", "/", "、", "和", "及", "与", "或")
_ALTERNATIVES = ("or", "nor", "、", "或")


def phrase_pattern(phrases: Iterable[str]) -> re.Pattern:
    """One regex for `phrases`, longest first, with word boundaries only at ASCII-word edges, so
    "caries" inside "cariesless" does not count while "龋齿" inside "无龋齿" does."""

    def one(phrase: str) -> str:
        before = f"(?<!{_ASCII_WORD})" if re.match(_ASCII_WORD, phrase[0]) else ""
        after = f"(?!{_ASCII_WORD})" if re.match(_ASCII_WORD, phrase[-1]) else ""
        return before + re.escape(phrase) + after

    return re.compile("|".join(one(p) for p in sorted(set(phrases), key=len, reverse=True)))


_CUE_KIND = {phrase: kind for kind, phrases in CUES.items() for phrase in phrases}
_CUE_PATTERN = phrase_pattern(_CUE_KIND)
_COLON_PATTERN = re.compile(
    r":\s*(" + phrase_pattern(p for values in _COLON_VALUES.values() for p in values).pattern + r")\s*(?=[;,.!?。]|$)")
_BOUNDARY = re.compile(r"[;!:。]|\.(?!\d)|" + phrase_pattern(_CONTRAST).pattern)
_CONNECTOR = phrase_pattern(_CONNECTORS)
_ALTERNATIVE = phrase_pattern(_ALTERNATIVES)


@dataclass(frozen=True)
class Mention:
    """A condition name found in a clause: its span and normalised label."""

    start: int
    end: int
    label: str


@dataclass(frozen=True)
class _Cue:
    start: int
    end: int
    polarity: str | None
    direction: str


@dataclass(frozen=True)
class Reading:
    """The conditions a text names, by polarity, each in order of first mention (any vocabulary).

    A label mentioned with several polarities goes to the strongest: affirmed, then uncertain, then
    negated ("caries on 36, no caries on 46" affirms caries).
    """

    affirmed: tuple[str, ...] = ()
    negated: tuple[str, ...] = ()
    uncertain: tuple[str, ...] = ()

    @property
    def named(self) -> bool:
        """The text names at least one condition, whatever its polarity."""
        return bool(self.affirmed or self.negated or self.uncertain)


def hard_breaks(text: str) -> str:
    """Newlines and the Chinese comma as clause breaks (";"), before whitespace folding and NFKC would
    turn them into a space and an ordinary comma."""
    return re.sub(r"[\n\r，]", ";", text)


def clauses(text: str) -> list[str]:
    """Clauses of normalised text: split at sentence punctuation and contrastive words; a "?" stays
    with its clause, where it is an uncertainty cue."""
    values = {v: mark for mark, group in _COLON_VALUES.items() for v in group}
    text = _COLON_PATTERN.sub(lambda m: f" {values[m.group(1)]}", text)
    text = _BOUNDARY.sub("\n", text).replace("?", "?\n")
    return [c for c in text.split("\n") if c.strip()]


def read_polarity(text: str, find_mentions: Callable[[str], list[Mention]]) -> Reading:
    """The `Reading` of normalised `text` (see `hard_breaks`), mentions found by `find_mentions`."""
    found: dict[str, set[str]] = {}
    for clause in clauses(text):
        for label, polarity in clause_polarities(clause, find_mentions(clause)):
            found.setdefault(label, set()).add(polarity)
    by_polarity: dict[str, list[str]] = {AFFIRMED: [], UNCERTAIN: [], NEGATED: []}
    for label, polarities in found.items():
        by_polarity[next(p for p in by_polarity if p in polarities)].append(label)
    return Reading(*(tuple(by_polarity[p]) for p in (AFFIRMED, NEGATED, UNCERTAIN)))


def clause_polarities(clause: str, mentions: list[Mention]) -> list[tuple[str, str]]:
    """(label, polarity) of each mention in one clause: negated when a negation cue reaches it,
    else uncertain when an uncertainty cue does, else affirmed."""
    cues = [_Cue(m.start(), m.end(), *_CUE_KIND[m.group(0)]) for m in _CUE_PATTERN.finditer(clause)
            if not any(m.start() < x.end and x.start < m.end() for x in mentions)]
    reached: list[set[str]] = [set() for _ in mentions]
    for index, cue in enumerate(cues):
        if cue.polarity is None:
            continue
        start, end = _scope(clause, cue, cues[:index], cues[index + 1:], mentions)
        for polarities, mention in zip(reached, mentions):
            if start <= mention.start and mention.end <= end:
                polarities.add(cue.polarity)
    return [(m.label, next((p for p in (NEGATED, UNCERTAIN) if p in r), AFFIRMED)) for m, r in zip(mentions, reached)]


def _scope(clause: str, cue: _Cue, before: list[_Cue], after: list[_Cue], mentions: list[Mention]
           ) -> tuple[int, int]:
    """The span of `clause` that `cue` acts on."""
    if cue.direction in (PRE, BOTH):
        end = _forward_end(clause, cue, after, mentions)
        if cue.direction == PRE or any(cue.end <= m.start and m.end <= end for m in mentions):
            return cue.end, end
    segment_start = clause.rfind(",", 0, cue.start) + 1
    if cue.direction == POST and _is_condition_list(clause, segment_start, cue.start, mentions):
        segment_start = _bare_segments_start(clause, segment_start, mentions)
    return max([c.end for c in before] + [segment_start]), cue.start


def _forward_end(clause: str, cue: _Cue, after: list[_Cue], mentions: list[Mention]) -> int:
    """Where a pre cue's scope ends: its comma segment, or the clause when the rest lists conditions
    joined by or/nor/、; earlier at the next cue (a negation reaches over uncertainty cues)."""
    comma = clause.find(",", cue.end)
    end = len(clause) if comma < 0 or _is_alternative_list(clause, comma, mentions) else comma
    stops = [c.start for c in after if not (cue.polarity == NEGATED and c.polarity == UNCERTAIN)]
    return min([end] + stops)


def _is_alternative_list(clause: str, comma: int, mentions: list[Mention]) -> bool:
    rest = _without_mentions(clause, comma, len(clause), mentions)
    return _is_condition_list(clause, comma, len(clause), mentions) and bool(_ALTERNATIVE.search(rest))


def _bare_segments_start(clause: str, start: int, mentions: list[Mention]) -> int:
    """Start of the run of comma segments before `start` that are nothing but condition names."""
    while start > 0:
        previous = clause.rfind(",", 0, start - 1) + 1
        if not _is_condition_list(clause, previous, start - 1, mentions):
            break
        start = previous
    return start


def _is_condition_list(clause: str, start: int, end: int, mentions: list[Mention]) -> bool:
    """`clause[start:end]` names conditions and nothing else ("caries and gingivitis", not "17 and 47")."""
    named = any(start <= m.start and m.end <= end for m in mentions)
    return named and _is_bare(_without_mentions(clause, start, end, mentions))


def _without_mentions(clause: str, start: int, end: int, mentions: list[Mention]) -> str:
    text = clause[start:end]
    for m in mentions:
        if start <= m.start and m.end <= end:
            text = text[:m.start - start] + " " * (m.end - m.start) + text[m.end - start:]
    return text


def _is_bare(text: str) -> bool:
    """Only connectors, commas and spaces are left (the condition names were blanked out)."""
    return not re.sub(r"[\s,.()]", "", _CONNECTOR.sub("", text))
