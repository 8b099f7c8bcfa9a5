"""A stand-in for a scored variant: synthetic checkups with known labels, answers, subgroups and per-class
probabilities (AUROC far from 0.5; some classes badly calibrated), shared by the clinical-metric tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from dentvlm.metrics.classification import ClassificationScores
from dentvlm.predictions import Prediction

CLASSES = ["caries", "gingivitis", "pulpitis", "periodontitis", "calculus"]
PREVALENCE = np.array([0.4, 0.3, 0.15, 0.25, 0.5])


def probabilities_for(truth: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Positives drawn high and negatives low (AUROC about 0.95; pulpitis about 0.7), gingivitis sharpened
    towards 0 and 1, calculus squeezed into [0.55, 0.85] (badly calibrated: ECE about 0.3); never exactly 0 or 1."""
    p = np.where(truth, rng.beta(5, 2, truth.shape), rng.beta(2, 5, truth.shape))
    p[:, 2] = np.where(truth[:, 2], rng.beta(3, 2, len(p)), rng.beta(2, 3, len(p)))
    p[:, 1] = p[:, 1] ** 3 / (p[:, 1] ** 3 + (1 - p[:, 1]) ** 3)
    p[:, 4] = 0.55 + 0.3 * p[:, 4]
    return np.clip(p, 1e-4, 1 - 1e-4)


def groups_for(rng: np.random.Generator) -> dict[str, str]:
    return {"gender": str(rng.choice(["female", "male", "unknown"], p=[0.5, 0.45, 0.05])),
            "age_band": str(rng.choice(["<18", "18-39", "40-59", "60+"], p=[0.05, 0.4, 0.35, 0.2])),
            "visit_type": str(rng.choice(["first", "follow-up"]))}


def standin(n: int = 200, seed: int = 0, split: str = "test", probabilities: bool = True,
            multi_label: bool = True) -> list[Prediction]:
    """`n` classification predictions of one split: answers right for about 70% of labels, 5% unparseable."""
    rng = np.random.default_rng(seed)
    if multi_label:
        truth = rng.random((n, len(CLASSES))) < PREVALENCE
    else:
        truth = np.eye(len(CLASSES), dtype=bool)[rng.choice(len(CLASSES), n, p=PREVALENCE / PREVALENCE.sum())]
    probs = probabilities_for(truth, rng)
    predictions = []
    for i in range(n):
        true = [c for c, t in zip(CLASSES, truth[i]) if t]
        if split == "val":
            parsed, generated = None, ""
        elif rng.random() < 0.05:
            parsed, generated = None, "?"
        elif multi_label:
            flips = rng.random(len(CLASSES)) < 0.12
            parsed = [c for c, t, f in zip(CLASSES, truth[i], flips) if t != f]
            generated = ", ".join(parsed) or "none"
        else:
            parsed = true if rng.random() < 0.7 else [str(rng.choice(CLASSES))]
            generated = parsed[0]
        predictions.append(Prediction(
            f"{split}-{i}", "classification", "which conditions?", ", ".join(true) or "none", generated,
            true_labels=true, parsed_labels=parsed,
            class_probabilities=dict(zip(CLASSES, probs[i].tolist())) if probabilities else None,
            split=split, groups=groups_for(rng)))
    return predictions


def arrays(predictions: list[Prediction]) -> tuple[np.ndarray, np.ndarray]:
    """(probabilities, truth) of `predictions`, as the reference computations read them."""
    probs = np.array([[p.class_probabilities[c] for c in CLASSES] for p in predictions])
    truth = np.array([[c in p.true_labels for c in CLASSES] for p in predictions])
    return probs, truth


def datamodule(multi_label: bool = True):
    """What `ResultsWriter` reads of a datamodule."""
    return SimpleNamespace(classes=CLASSES, eval_tasks=["classification"], hparams=SimpleNamespace(
        shards="shards/demo", test_split="test", multi_label=multi_label, modality="both", max_images=8))


def variant_entry(predictions: list[Prediction], multi_label: bool = True) -> dict:
    """A results-writer entry of one variant: its predictions and the callbacks' scores of the test split."""
    test = [p for p in predictions if p.split == "test"]
    scores = ClassificationScores(CLASSES, multi_label)
    scores.update([p.parsed_labels for p in test], [p.true_labels for p in test])
    return {"predictions": predictions, "classification": scores.compute()}
