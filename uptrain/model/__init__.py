"""Model families behind one interface (:class:`RankingModel`): the shared-weight bi-encoder,
which can build a dense index, and the cross-encoder, which re-scores candidates.

``load_model(path)`` reads any family's artifact (its JSON file names the family).
"""

from uptrain.model.backbone import ModelUnavailableError, backbone_fingerprint, resolve_backbone
from uptrain.model.base import FAMILIES, RankingModel, load_model
from uptrain.model.batch import ScoredBatch, TrainItem
from uptrain.model.biencoder import BiEncoder
from uptrain.model.cross_encoder import CrossEncoder

__all__ = [
    "BiEncoder", "CrossEncoder", "FAMILIES", "ModelUnavailableError", "RankingModel", "ScoredBatch", "TrainItem",
    "backbone_fingerprint", "load_model", "resolve_backbone",
]
