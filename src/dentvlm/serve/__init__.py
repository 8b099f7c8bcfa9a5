"""`dentvlm serve`: a checkpoint behind an OpenAI-compatible chat completions endpoint (LitServe)."""
