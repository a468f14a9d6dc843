"""Click logs, click models, a click simulator over real collections, and click labels.

``log``        the in-memory log (:class:`ClickLog`) and uptrain's JSONL format
``readers``    the Yandex WSCD (PyClick's aggregated sample and the raw 2011 log), the
               TREC Session Track / TianGong-ST session XML, and JSONL
``models``     click models fit by EM or MLE (Chuklin, Markov, de Rijke 2015), one file each:
               GCTR, RCTR, DCTR, PBM, CM, DCM, UBM, DBN, SDBN, CCM
``sampling``   vectorised click samplers of PBM, CM, DCM, UBM, DBN, SDBN
``evaluate``   held-out log-likelihood, perplexity per rank, CTR error, per frequency bucket
``buckets``    query-frequency buckets (the Baidu-ULTR convention by default)
``agreement``  click models' relevance estimates against human grades
``simulate``   click logs over a real collection's queries, SERPs and human grades
``stages``     the run-graph stages: read a log, fit a click model, compare click models
``bench``      the click workload of ``make bench``
"""

from uptrain.clicks.log import ClickLog, ClickLogBuilder, ClickLogError, LogStats, Session, from_arrays

__all__ = ["ClickLog", "ClickLogBuilder", "ClickLogError", "LogStats", "Session", "from_arrays"]
