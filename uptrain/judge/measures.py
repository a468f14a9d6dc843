"""Whole-page relevance measures of ranked result pages: sDCG@K, and nDCG@K through ir_measures.

**sDCG@K** follows Wang, Whitworth, Cheung, Zhang, Kamath, "LLM-based Relevance Assessment for
Web-Scale Search Evaluation at Pinterest" (RecSys 2025 EARL workshop, arXiv 2509.03764, Eq. 2):
DCG@K of the page over the DCG@K of an ideal page made of an *infinite supply of top-grade
documents*, so a page is judged against the best page possible, not against the best reordering
of the documents someone happened to label (which is what nDCG does):

    sDCG@K = sum_{r<=K} gain_r / log2(1 + r)  /  sum_{r<=K} L / log2(1 + r)

Two normalisations of the grades 0..G (G = ``max_grade``) are offered:

* ``shift=True`` (the paper's): the grades are mapped onto 1..L with L = G + 1 (gain = g + 1;
  the paper's 5-point scale 1..5 is grades 0..4 here). A non-relevant result still earns 1/L of a
  top one, so the measure is bounded below by (D_filled / D_K) / L and differences between systems
  are compressed.
* ``shift=False`` (raw): gain = g, L = G. This is exactly the C/W/L framework's SDCG
  (``ir_measures.SDCG(cutoff=K, max_rel=G)``, provider ``cwl_eval``, which scales gains to
  (rel - min_rel) / (max_rel - min_rel) with min_rel 0), used here as the independent cross-check
  (:func:`ir_measures_sdcg`).

With D_K = sum_{r<=K} 1/log2(1 + r) and D_filled the same sum over the ranks <= K that hold a
labelled document, the two are related, for any page, by

    sDCG_shift = (G * sDCG_raw + D_filled / D_K) / (G + 1)

so for full, fully labelled pages (D_filled = D_K) a difference between two systems under the
paper's normalisation is G / (G + 1) of the raw difference (3/4 on TREC DL's 0-3, 4/5 on a
5-point scale): say which normalisation a table shows.

**Short pages and unlabelled documents.** The denominator always runs over K ranks: a ranking
shorter than K earns 0 at the missing ranks, i.e. a short page is penalised (as an empty slot on
the page would be). An unlabelled document (grade ``None``) earns gain 0 under both
normalisations, i.e. less than a labelled non-relevant one under ``shift=True``; the callers count
them (:func:`query_sdcg`'s ``unlabelled`` and ``judged_at_k``), so a table can say how much of
each page was judged.
"""

from __future__ import annotations

import logging
import math
import operator
from typing import Mapping, Sequence

log = logging.getLogger("uptrain")

Run = Mapping[str, Sequence[str]]  # query id -> document ids in rank order (rank 1 first)
Labels = Mapping[str, Mapping[str, int]]  # query id -> {doc id: grade 0..max_grade}

_logged_unavailable = False


def _check_k_grade(k: int, max_grade: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the cutoff k must be an integer of at least 1, got {k!r}")
    if isinstance(max_grade, bool) or not isinstance(max_grade, int) or max_grade < 1:
        raise ValueError(f"max_grade must be an integer of at least 1 (grades run 0..max_grade), got {max_grade!r}")


def _check_grade(g, max_grade: int, where: str = "") -> int:
    try:
        if isinstance(g, bool):
            raise TypeError
        g = operator.index(g)
    except TypeError:
        raise ValueError(f"a grade must be an integer 0..{max_grade} or None (unlabelled), got {g!r}{where}") from None
    if not 0 <= g <= max_grade:
        raise ValueError(f"a grade must lie in 0..{max_grade} (max_grade), got {g}{where}: map the label scale "
                         "onto 0..max_grade first (negative grades such as TREC's -1 'junk' to 0)")
    return g


def discount_sum(n: int) -> float:
    """sum_{r=1..n} 1 / log2(1 + r) (0 for n <= 0)."""
    return sum(1.0 / math.log2(1 + r) for r in range(1, n + 1))


def sdcg(grades: Sequence[int | None], k: int, max_grade: int, shift: bool = True) -> float:
    """sDCG@k of one page whose documents, in rank order, have ``grades`` (None: unlabelled).

    See the module docstring: gain = g + 1 over L = max_grade + 1 (``shift=True``, the paper's
    Eq. 2) or gain = g over L = max_grade (``shift=False``, ir_measures' ``SDCG@k(max_rel=G)``);
    an unlabelled document earns 0; only the first k grades count and the ideal always has k
    ranks, so a shorter page earns 0 at the missing ranks.
    """
    _check_k_grade(k, max_grade)
    top = max_grade + 1 if shift else max_grade
    num = 0.0
    for r, g in enumerate(list(grades)[:k], start=1):
        if g is None:
            continue
        g = _check_grade(g, max_grade, f" at rank {r}")
        num += (g + 1 if shift else g) / math.log2(1 + r)
    return num / (top * discount_sum(k))


def _dedupe(docs: Sequence[str]) -> tuple[list[str], int]:
    seen: set[str] = set()
    out = []
    for d in docs:
        d = str(d)
        if d not in seen:
            seen.add(d)
            out.append(d)
    return out, len(docs) - len(out)


def query_sdcg(run: Run, labels: Labels, k: int, max_grade: int, shift: bool = True,
               queries: Sequence[str] | None = None, warn: str | bool = True) -> tuple[dict[str, float], dict]:
    """Per-query sDCG@k of ``run`` under ``labels`` (see :func:`sdcg`), and the counts.

    ``queries`` (default: the run's queries, in its order) is the query set: a query of it without
    a ranking (absent from the run, or an empty list) gets 0; run queries outside it are ignored.
    A document repeated within a ranking keeps its first rank (the repeats are dropped, counted).
    The counts: ``queries``; ``queries_without_ranking``; ``run_queries_not_evaluated``;
    ``short_rankings`` (fewer than k documents: penalised); ``duplicate_documents``;
    ``labelled`` and ``unlabelled`` documents in the top k (an unlabelled one earns gain 0); and
    ``judged_at_k``, the mean over the queries with a ranking of the share of their top-k
    documents (min(k, length) of them) that is labelled (None when no query has a ranking).
    Anything counted is also logged as a warning (``warn``: a label for the message, or False when
    the caller reports the counts itself, e.g. the unjudged documents of human labels as Judged@k).
    """
    _check_k_grade(k, max_grade)
    query_ids = [str(q) for q in (run.keys() if queries is None else queries)]
    chosen = set(query_ids)
    counts = {"queries": len(query_ids), "queries_without_ranking": 0,
              "run_queries_not_evaluated": sum(1 for q in run if str(q) not in chosen), "short_rankings": 0,
              "duplicate_documents": 0, "labelled": 0, "unlabelled": 0, "judged_at_k": None}
    values: dict[str, float] = {}
    shares = []
    for q in query_ids:
        docs = run.get(q)
        if not docs:
            values[q] = 0.0
            counts["queries_without_ranking"] += 1
            continue
        docs, dup = _dedupe(docs)
        counts["duplicate_documents"] += dup
        if len(docs) < k:
            counts["short_rankings"] += 1
        rel = labels.get(q, {})
        grades = [rel.get(d) for d in docs[:k]]
        labelled = sum(1 for g in grades if g is not None)
        counts["labelled"] += labelled
        counts["unlabelled"] += len(grades) - labelled
        shares.append(labelled / len(grades))
        values[q] = sdcg(grades, k, max_grade, shift)
    if shares:
        counts["judged_at_k"] = sum(shares) / len(shares)
    problems = {n: counts[n] for n in ("queries_without_ranking", "run_queries_not_evaluated", "short_rankings",
                                        "duplicate_documents", "unlabelled") if counts[n]}
    if problems and warn:
        log.warning("[sdcg@%d%s] %s (of %d queries; unranked queries score 0, short pages earn 0 at missing ranks, "
                    "unlabelled documents gain 0)", k, f", {warn}" if isinstance(warn, str) else "", ", ".join(f"{v} {n.replace('_', ' ')}" for n, v in problems.items()),
                    len(query_ids))
    return values, counts


def _scored_run(run: Run) -> dict[str, dict[str, float]]:
    """query -> {doc: score}, the scores descending with the rank (first occurrence of a repeat)."""
    out = {}
    for q, docs in run.items():
        docs, _ = _dedupe(docs)
        n = len(docs)
        out[str(q)] = {d: float(n - i) for i, d in enumerate(docs)}
    return out


def ir_measures_sdcg(run: Run, labels: Labels, k: int, max_grade: int) -> dict[str, float] | None:
    """Per-query ``SDCG(cutoff=k, max_rel=max_grade)`` of ir_measures' C/W/L provider, or None
    (logged once at info) when that provider is unavailable (it needs the ``cwl-eval`` package,
    module ``cwl``).

    The run's rank order becomes descending scores (no ties to break); the labels become qrels.
    The provider skips a query without any label; such a run query gets 0.0 here, which is what
    the definition gives (every gain 0), so the result covers the run's queries like
    :func:`query_sdcg` with ``shift=False``. Grades are checked as :func:`sdcg` checks them.
    """
    global _logged_unavailable
    _check_k_grade(k, max_grade)
    import ir_measures
    from ir_measures.providers import registry

    measure = ir_measures.SDCG(cutoff=k, max_rel=max_grade)
    provider = registry.get("cwl_eval")
    try:
        available = provider is not None and provider.is_available() and provider.supports(measure)
    except Exception:  # noqa: BLE001 - a provider failing its own check is an unavailable one
        available = False
    if not available:
        if not _logged_unavailable:
            log.info("ir_measures' cwl_eval provider is unavailable (install cwl-eval): no SDCG cross-check")
            _logged_unavailable = True
        return None
    qrels = {}
    for q, rel in labels.items():
        checked = {str(d): _check_grade(g, max_grade, f" (query {q!r}, document {d!r})") for d, g in rel.items()}
        if checked:
            qrels[str(q)] = checked
    scored = _scored_run(run)
    values = {q: 0.0 for q in scored}
    evaluated = {q: s for q, s in scored.items() if s and q in qrels}
    if evaluated:
        for metric in provider.iter_calc([measure], qrels, evaluated):
            if metric.query_id in values:
                values[metric.query_id] = float(metric.value)
    return values


def ndcg(run: Run, labels: Labels, k: int) -> dict[str, float]:
    """Per-query nDCG@k (``ir_measures.nDCG@k`` through its default pipeline: pytrec_eval, linear
    gain, log2(1 + r) discount, ideal = the best reordering of the query's labels).

    The run's rank order becomes descending scores. Behaviour kept from ir_measures: a run query
    whose labels hold no grade > 0 gets 0.0 (the ideal DCG is 0); a run query without any label
    is not scored by ir_measures, and is left out of the result; a negative grade counts as gain
    0; a run query with an empty ranking but with labels gets 0.0 (ir_measures scores a labelled
    query without a ranking as 0). Queries in ``labels`` but not in the run are not scored here (evaluate them against the
    query set with :func:`uptrain.evaluate.metrics.evaluate_run` if they must count as 0).
    """
    _check_k_grade(k, 1)
    import ir_measures

    qrels = {str(q): {str(d): int(g) for d, g in rel.items()} for q, rel in labels.items() if rel}
    ranked = _scored_run(run)
    scored = {q: s for q, s in ranked.items() if s}
    values: dict[str, float] = {}
    if not scored or not qrels:
        return {q: 0.0 for q in ranked if q in qrels}
    for metric in ir_measures.iter_calc([ir_measures.nDCG @ k], qrels, scored):
        if metric.query_id in ranked:
            values[metric.query_id] = float(metric.value)
    return values
