"""A deterministic synthetic release in the real COde layout: the demo data and the test data."""

from dentvlm.synth.release import write_synthetic_release

__all__ = ["write_synthetic_release"]
