"""Training: group datasets, the one Lightning module for every model family, and the training-phase stage."""
