"""Test collections: sources (ir_datasets IDs, BEIR folders, TREC files, SQuAD JSON) that load a
:class:`Collection`, with counted data problems and one subsampling rule for smoke runs."""

from uptrain.data.collection import Collection
from uptrain.data.irds import IrdsSource, irds_home, seed_ir_datasets_home
from uptrain.data.local import BeirFolderSource, TrecSource
from uptrain.data.qa import SquadSource, provides_answers
from uptrain.data.sources import PROBLEMS, DatasetUnavailableError, Source, subsample
from uptrain.data.split import QuerySubset, in_holdout

__all__ = [
    "Collection",
    "Source",
    "IrdsSource",
    "BeirFolderSource",
    "TrecSource",
    "SquadSource",
    "provides_answers",
    "QuerySubset",
    "in_holdout",
    "DatasetUnavailableError",
    "seed_ir_datasets_home",
    "irds_home",
    "subsample",
    "PROBLEMS",
]
