"""`dentvlm predict`: answers for new checkups (no diagnosis yet) from a trained model."""
