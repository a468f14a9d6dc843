"""Retrieval: the top-k of every query as a TREC run."""
