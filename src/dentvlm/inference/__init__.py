"""Answering with a trained model outside Lightning's loops: `dentvlm serve` and `dentvlm predict`."""
