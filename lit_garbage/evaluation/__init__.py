"""Stage 6, evaluation: the seed's report (accuracy, per-class precision/recall/F1, figures) for any model file."""
