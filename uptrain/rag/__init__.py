"""Retrieval-augmented generation: answers written from a run's top-k passages, and their measures.

:mod:`uptrain.rag.generate` (the generator stage), :mod:`uptrain.rag.measures` (EM, F1,
ROUGE-L, BLEU, answer recall) and :mod:`uptrain.rag.path` (the ``rag`` evaluation path).
"""
