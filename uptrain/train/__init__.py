"""Training: group datasets, the Lightning bi-encoder module, and the training-phase stage."""
