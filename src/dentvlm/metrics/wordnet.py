"""WordNet for METEOR without a download.

nltk's own data is used when it has WordNet. Otherwise the WordNet 3.0 files of Debian's
`wordnet-base` and `wordnet-sense-index` packages (/usr/share/wordnet) are *copied* into a private
nltk data folder (nltk refuses corpus paths outside its data path, symlinks included), with the
`lexnames` file that nltk wants and Debian lacks.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

DEBIAN_WORDNET = Path("/usr/share/wordnet")
INSTALL_HINT = ("METEOR needs WordNet: install Debian/Ubuntu's `wordnet-base wordnet-sense-index` packages, "
                "or run `python -m nltk.downloader wordnet` where the network allows")

# WordNet 3.0 lexicographer files: number, name, syntactic category.
LEXNAMES = [
    "adj.all", "adj.pert", "adv.all", "noun.Tops", "noun.act", "noun.animal", "noun.artifact", "noun.attribute",
    "noun.body", "noun.cognition", "noun.communication", "noun.event", "noun.feeling", "noun.food", "noun.group",
    "noun.location", "noun.motive", "noun.object", "noun.person", "noun.phenomenon", "noun.plant",
    "noun.possession", "noun.process", "noun.quantity", "noun.relation", "noun.shape", "noun.state",
    "noun.substance", "noun.time", "verb.body", "verb.change", "verb.cognition", "verb.communication",
    "verb.competition", "verb.consumption", "verb.contact", "verb.creation", "verb.emotion", "verb.motion",
    "verb.perception", "verb.possession", "verb.social", "verb.stative", "verb.weather", "adj.ppl",
]
CATEGORY = {"adj": 3, "adv": 4, "noun": 1, "verb": 2}


def lexnames_text() -> str:
    return "".join(f"{i:02d}\t{name}\t{CATEGORY[name.split('.')[0]]}\n" for i, name in enumerate(LEXNAMES))


def ensure_wordnet(cache: Path | None = None) -> None:
    """Make `nltk.corpus.wordnet` loadable, or raise with the install hint."""
    import nltk

    if _loads():
        return
    from dentvlm.model.tiny import cache_dir

    data = (cache or cache_dir()) / "nltk_data"
    target = data / "corpora" / "wordnet"
    if not (target / "lexnames").is_file():
        if not (DEBIAN_WORDNET / "data.noun").is_file():
            raise RuntimeError(INSTALL_HINT)
        target.parent.mkdir(parents=True, exist_ok=True)
        # A private staging folder and an atomic rename: ranks may race to make the copy.
        staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
        for path in DEBIAN_WORDNET.iterdir():
            if path.is_file():
                shutil.copy2(path, staging / path.name)
        (staging / "lexnames").write_text(lexnames_text())
        try:
            os.rename(staging, target)
        except OSError:  # another process finished first
            shutil.rmtree(staging, ignore_errors=True)
    if str(data) not in nltk.data.path:
        nltk.data.path.insert(0, str(data))
    if not _loads():
        raise RuntimeError(f"WordNet copied to {target} but nltk cannot read it; {INSTALL_HINT}")


def _loads() -> bool:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return wordnet.synsets("tooth") != []
    except LookupError:
        return False
