"""Encoders: the shared-weight bi-encoder and where its weights come from."""

from uptrain.model.backbone import ModelUnavailableError, resolve_backbone
from uptrain.model.biencoder import BiEncoder

__all__ = ["BiEncoder", "ModelUnavailableError", "resolve_backbone"]
