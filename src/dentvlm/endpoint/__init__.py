"""Evaluating a model behind an OpenAI-compatible chat completions API (`dentvlm test --endpoint.*`)."""
