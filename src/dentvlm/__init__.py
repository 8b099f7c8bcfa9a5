"""dentvlm: fine-tune and benchmark vision-language models on oro-dental checkups."""

__version__ = "0.1.0"
