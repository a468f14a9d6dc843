"""uptrain: train and evaluate rankers from LLM annotations, clicks and human labels."""

__version__ = "0.1.0"
