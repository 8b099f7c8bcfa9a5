"""Text of a synthetic checkup: patient information that is only partly informative, and a report.

The patient-facing fields (chief complaint, present illness, examination) name a condition's sign only
part of the time, and sometimes name the sign of a condition the patient does not have, so that a
model needs the images as well as the text. The diagnosis always names every label, and only the
labels, in words that `dentvlm.labels.LabelParser` maps back to them.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

# FDI two-digit tooth numbers (quadrant 1-4, position 1-8).
ALL_TEETH = tuple(q * 10 + p for q in (1, 2, 3, 4) for p in range(1, 9))
ANTERIOR_TEETH = tuple(t for t in ALL_TEETH if t % 10 <= 3)
POSTERIOR_TEETH = tuple(t for t in ALL_TEETH if t % 10 >= 4)

INFORMATIVE_P = 0.5  # a label's sign shows in the patient text at all
COMPLAINT_P = 0.85  # ... and then in the chief complaint
ILLNESS_P = 0.75  # ... and in the present illness (the examination always shows it then)
MISLEADING_P = 0.1  # the text shows the sign of a condition the checkup does not have
EMPTY_REMARKS_P = 0.15
MULTILINE_P = 0.5

# Per condition: teeth it concerns, its signs in each patient field, and its report wording.
# Diagnosis templates must name only their own condition (a name or a labels.SYNONYMS key).
CONDITIONS: dict[str, dict[str, tuple[str, ...]]] = {
    "malocclusion": {
        "complaint": ("crooked front teeth", "wants to straighten the teeth", "teeth do not bite together"),
        "illness": ("Noticed crowding of the front teeth for several years.",
                    "Parents noticed the front teeth growing in crooked."),
        "exam": ("Crowding of the anterior teeth, {t} rotated", "Deep overbite, {t} labially displaced",
                 "Anterior teeth irregular, {t} in reverse overjet"),
        "diagnosis": ("Malocclusion ({t} crowded)", "Angle Class II malocclusion",
                      "Malocclusion, Angle Class III", "Dental crowding of {t}", "Crossbite of {t}",
                      "Malaligned teeth {t}"),
        "plan": ("Orthodontic consultation; fixed appliance treatment",
                 "Clear aligner treatment after records",
                 "Cephalometric radiograph and orthodontic treatment planning"),
        "advice": ("Keep the teeth clean around any orthodontic appliance.",),
        "orders": ("Book an orthodontic consultation.",),
    },
    "gingivitis": {
        "complaint": ("bleeding gums when brushing", "red swollen gums", "gums bleed when eating apples"),
        "illness": ("Gums have bled during brushing for about {d}.",
                    "Swollen gums noticed {d} ago, no pain."),
        "exam": ("Marginal gingiva red and swollen around {t}, bleeding on probing",
                 "Gingival papillae {t} edematous, BOP (+)"),
        "diagnosis": ("Chronic gingivitis", "Plaque-induced gingivitis", "Gingivitis ({t})",
                      "Gingival inflammation around {t}"),
        "plan": ("Supragingival scaling and polishing", "Full-mouth ultrasonic scaling"),
        "advice": ("Use dental floss every day.", "Brush along the gum line for two minutes twice a day."),
        "orders": ("Rinse with chlorhexidine 0.12% twice daily for one week.",),
    },
    "dentition defect": {
        "complaint": ("gap after extraction", "missing back tooth, wants a replacement",
                      "difficulty chewing on one side"),
        "illness": ("{t} extracted {d} ago, no restoration since.", "Lost {t} years ago after a fracture."),
        "exam": ("{t} absent, extraction socket healed, ridge flat",
                 "Space of {t}, opposing tooth overerupted"),
        "diagnosis": ("Dentition defect ({t})", "Missing teeth {t}", "Missing tooth {t}", "Tooth loss of {t}",
                      "Partial edentulism, {t} absent"),
        "plan": ("Implant restoration of {t}", "Fixed bridge to replace {t}", "Removable partial denture"),
        "advice": ("Replace missing teeth early so neighbours do not drift.",),
        "orders": ("Take a CBCT scan before the implant consultation.",),
    },
    "caries": {
        "complaint": ("sensitivity to cold on {t}", "food gets stuck in {t}", "black spot on {t}"),
        "illness": ("Sensitive to cold and sweet food on {t} for {d}.",
                    "Noticed a dark hole in {t} {d} ago."),
        "exam": ("{t}: deep cavity on the occlusal surface, cold test sensitive",
                 "{t} brown discoloration on the distal surface, probe catches soft dentin"),
        "diagnosis": ("Caries of {t}", "Dental caries ({t})", "Deep caries of {t}", "Tooth decay on {t}"),
        "plan": ("Composite resin filling of {t}", "Remove decay and restore {t} with composite"),
        "advice": ("Reduce sugary snacks and drinks.", "Use fluoride toothpaste."),
        "orders": ("Do not chew on the filled tooth for two hours.",),
    },
    "pulpitis": {
        "complaint": ("spontaneous night pain", "severe throbbing toothache on {t}",
                      "pain lingers after cold on {t}"),
        "illness": ("Spontaneous pain on {t} for {d}, worse at night.",
                    "Throbbing pain on {t}, ibuprofen helps little."),
        "exam": ("{t}: deep lesion near the pulp, percussion (+), cold test lingering pain",
                 "{t} tender to percussion, pulp exposure on probing"),
        "diagnosis": ("Acute pulpitis of {t}", "Irreversible pulpitis ({t})", "Chronic pulpitis of {t}",
                      "Pulpitis, {t}"),
        "plan": ("Root canal treatment of {t}", "Pulpectomy of {t}, then crown"),
        "advice": ("Avoid chewing hard food on the treated side.",),
        "orders": ("Take ibuprofen 400 mg if pain; return in one week.",),
    },
    "periodontitis": {
        "complaint": ("loose teeth", "gums receding, teeth feel loose", "bad breath and loose teeth"),
        "illness": ("Teeth have become loose over {d}.", "Gums shrinking and teeth drifting for {d}."),
        "exam": ("Pockets 5-7 mm around {t}, mobility II degree",
                 "Gingival recession and root exposure at {t}"),
        "diagnosis": ("Chronic periodontitis", "Periodontitis, stage III ({t})",
                      "Periodontitis with mobility of {t}", "Periodontal disease ({t})"),
        "plan": ("Scaling and root planing, then periodontal maintenance",
                 "Full-mouth debridement; splint {t}"),
        "advice": ("Clean between the teeth with interdental brushes.",
                   "Stop smoking to help the gums heal."),
        "orders": ("Periodontal re-evaluation in six weeks.",),
    },
}
# Conditions outside the table get these, with the capitalised class name.
GENERIC_CONDITION = {
    "exam": ("{t}: signs consistent with {name}",),
    "diagnosis": ("{Name} of {t}", "{Name} ({t})", "{Name}"),
    "plan": ("Treat {t} as indicated", "Restore {t} after review"),
    "advice": ("Keep follow-up appointments.",),
    "orders": ("Review in two weeks.",),
}

# A checkup with no condition ("No disease" in anomalies_en): wording the label parser reads as no finding.
HEALTHY_DIAGNOSES = ("No disease", "No findings", "Healthy")
HEALTHY_PLANS = ("No treatment needed", "Routine prophylaxis and review in six months")
# Extra findings of a COde-length examination (the real records list many teeth).
DETAIL_EXAM = ("{t}: composite restoration intact, margins sealed", "{t}: no caries, no percussion pain",
               "Probing depth 2-3 mm around {t}", "{t}: mild wear facets on the incisal edge",
               "{t}: pit and fissure sealant present", "Mucosa near {t} pink and firm")
DETAIL_ILLNESS = ("Brushes twice a day, flosses rarely.", "Had scaling {d} ago at another clinic.",
                  "No bleeding tendency, no drug allergy reported.", "Sleeps poorly when the pain comes.")

GENERIC_COMPLAINTS = ("routine checkup", "wants a cleaning", "no complaints", "regular examination",
                      "wants teeth whitening", "check-up before travel")
GENERIC_ILLNESS = ("No obvious discomfort recently.", "Patient reports no pain or swelling.",
                   "Last dental visit {d} ago, nothing special since.", "No history of toothache.")
GENERIC_EXAM = ("Oral hygiene {hygiene}, soft deposits on the lower anteriors", "Calculus (+) on {t}",
                "Oral mucosa without abnormality", "TMJ: no clicking, mouth opening normal",
                "Tongue and floor of mouth normal")
PAST_HISTORY = ("No systemic disease.", "Hypertension, controlled with medication.", "Type 2 diabetes.",
                "Denies drug allergy.", "Penicillin allergy.", "No history of surgery.", "Asthma.")
GENERIC_ADVICE = ("Brush twice a day with a soft toothbrush.", "Have a check-up every six months.",
                  "Replace the toothbrush every three months.")
GENERIC_ORDERS = ("Follow up in {n}.", "Return if pain or swelling appears.")
REMARKS = ("Patient informed of the diagnosis and treatment options.", "Informed consent signed.",
           "Patient will decide on treatment after discussing costs.", "Oral hygiene instruction given.")
FOLLOW_UPS = ("one week", "two weeks", "a month")
DURATIONS = ("two days", "a week", "two weeks", "a month", "three months", "half a year", "a year")


def capitalised(name: str) -> str:
    """A condition name as written in `anomalies_en` ("dentition defect" -> "Dentition defect")."""
    return name[:1].upper() + name[1:]


def pick_teeth(label: str, rng: random.Random) -> str:
    """FDI numbers a condition concerns, as text ("36" or "36 and 37")."""
    pool = ANTERIOR_TEETH if label in ("malocclusion", "gingivitis") else POSTERIOR_TEETH
    teeth = sorted(rng.sample(pool, 1 if label == "pulpitis" else rng.choice((1, 1, 2))))
    return " and ".join(str(t) for t in teeth)


class CheckupText:
    """Draws the text of one checkup from its labels.

    Args:
        labels: The checkup's conditions (normalised names); none for a healthy checkup.
        classes: The class list, so that misleading signs come from conditions it knows.
        rng: The release's random source (consumed in a fixed order, hence deterministic).
        detail: Extra examination findings and history sentences, up to this many (0: the short
            demo text; the "code" profile's records are about as long as COde's).
    """

    def __init__(self, labels: Sequence[str], classes: Sequence[str], rng: random.Random, detail: int = 0):
        self.labels = list(labels)
        self.rng = rng
        self.detail = detail
        self.teeth = {label: pick_teeth(label, rng) for label in self.labels}
        self.informative = [label for label in self.labels if rng.random() < INFORMATIVE_P]
        others = [c for c in classes if c in CONDITIONS and c not in self.labels]
        # A misleading sign goes to one field only, like a patient's unrelated worry.
        self.misleading = rng.choice(others) if others and rng.random() < MISLEADING_P else None
        self.misleading_field = rng.choice(("complaint", "illness", "exam"))
        self.misleading_teeth = pick_teeth(self.misleading, rng) if self.misleading else ""

    def fields(self) -> dict[str, str]:
        """All text columns of the row (patient information and report sections)."""
        known = [label for label in self.informative if label in CONDITIONS]
        complaint_signs = [label for label in known if self.rng.random() < COMPLAINT_P]
        illness_signs = [label for label in known if self.rng.random() < ILLNESS_P]
        return {
            "chief_complaint": self._complaint(complaint_signs),
            "present_illness": self._illness(illness_signs),
            "past_medical_record": " ".join(self.rng.sample(PAST_HISTORY, self.rng.choice((1, 1, 2)))),
            "examination": self._examination(),
            "diagnosis": self.diagnosis(),
            "treatment_plan": self._joined("plan", "; ") or self.rng.choice(HEALTHY_PLANS),
            "treatment_advice": self._advice(),
            "doctors_orders": self._orders(),
            "remarks": "" if self.rng.random() < EMPTY_REMARKS_P else self.rng.choice(REMARKS),
        }

    def diagnosis(self) -> str:
        """Names every label once, with tooth numbers; one line per label or one line in all."""
        parts = [self._fill(self._templates(label, "diagnosis"), label) for label in self.labels]
        if not parts:
            return self.rng.choice(HEALTHY_DIAGNOSES)
        if len(parts) > 1 and self.rng.random() < 0.3:
            return "\n".join(f"{i}. {part}" for i, part in enumerate(parts, start=1))
        return self.rng.choice(("; ", ", ")).join(parts)

    def _complaint(self, signs: list[str]) -> str:
        phrases = [self._fill(CONDITIONS[lb]["complaint"], lb) for lb in signs]
        if self.misleading_field == "complaint" and self.misleading:
            phrases.append(self._misleading_sign("complaint"))
        if not phrases:
            return capitalised(self.rng.choice(GENERIC_COMPLAINTS))
        duration = self.rng.choice(("", "", f" for {self.rng.choice(DURATIONS)}"))
        return capitalised(" and ".join(phrases)) + duration

    def _illness(self, signs: list[str]) -> str:
        sentences = [self._fill(CONDITIONS[lb]["illness"], lb) for lb in signs]
        if self.misleading_field == "illness" and self.misleading:
            sentences.append(self._misleading_sign("illness"))
        if self.detail:
            sentences += self.rng.sample(DETAIL_ILLNESS, self.rng.randint(1, min(self.detail, len(DETAIL_ILLNESS))))
        return " ".join(sentences) if sentences else self._fill(GENERIC_ILLNESS, "")

    def _examination(self) -> str:
        lines = [self._fill(GENERIC_EXAM, "gingivitis") for _ in range(self.rng.choice((1, 1, 2)))]
        lines += [self._fill(self._templates(lb, "exam"), lb) for lb in self.informative]
        if self.detail:
            lines += [self._fill(DETAIL_EXAM, "caries") for _ in range(self.rng.randint(self.detail // 2, self.detail))]
        if self.misleading_field == "exam" and self.misleading:
            lines.append(self._misleading_sign("exam"))
        self.rng.shuffle(lines)
        if self.rng.random() < MULTILINE_P:
            return "\n".join(lines)  # the release has line breaks inside quoted cells
        return "; ".join(lines) + "."

    def _advice(self) -> str:
        specific = [self.rng.choice(self._templates(lb, "advice")) for lb in self.labels]
        return " ".join(dict.fromkeys([*specific, self.rng.choice(GENERIC_ADVICE)]))

    def _orders(self) -> str:
        specific = [self._fill(self._templates(lb, "orders"), lb) for lb in self.labels]
        generic = self.rng.choice(GENERIC_ORDERS).format(n=self.rng.choice(FOLLOW_UPS))
        return " ".join(dict.fromkeys([*specific, generic]))

    def _joined(self, section: str, separator: str) -> str:
        return separator.join(self._fill(self._templates(lb, section), lb) for lb in self.labels)

    def _misleading_sign(self, field: str) -> str:
        assert self.misleading is not None
        template = self.rng.choice(CONDITIONS[self.misleading][field])
        return self._format(template, self.misleading, self.misleading_teeth)

    def _templates(self, label: str, section: str) -> tuple[str, ...]:
        return CONDITIONS.get(label, GENERIC_CONDITION)[section]

    def _fill(self, templates: tuple[str, ...], label: str) -> str:
        teeth = self.teeth.get(label) or pick_teeth(label, self.rng)
        return self._format(self.rng.choice(templates), label, teeth)

    def _format(self, template: str, label: str, teeth: str) -> str:
        return template.format(t=teeth, d=self.rng.choice(DURATIONS), name=label, Name=capitalised(label),
                               hygiene=self.rng.choice(("good", "fair", "poor")))
