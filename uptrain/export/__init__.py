"""What a run produced, in the formats other toolkits read: Hugging Face datasets, TREC qrels.

``uptrain export RUN_DIR`` (:mod:`uptrain.export.cli`) writes a run's training labels as a
Hugging Face dataset folder per training phase (``datasets.load_dataset(folder)``; the columns
FlagEmbedding, Tevatron-style and sentence-transformers trainers take: query, positive and
negative passage texts) and as TREC qrels, and every label artifact of the run (pool,
annotations, REPLUG utilities, click-model relevance, judge labels, graded judgments, RAG
answers) as a Parquet file with documented columns (:mod:`uptrain.export.tables`).
"""

from uptrain.export.tables import export_run

__all__ = ["export_run"]
