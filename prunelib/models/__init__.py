"""Prune your own Keras model: the model-level API (imports Keras; :mod:`prunelib` loads it lazily)."""

from prunelib.models.api import (
    apply_model_masks,
    compact_model,
    load_masks,
    model_masks,
    predictor_from_model,
    prune_model,
    reconstruct_model,
    save_masks,
)
from prunelib.models.exporting import export

__all__ = ["apply_model_masks", "compact_model", "export", "load_masks", "model_masks",
           "predictor_from_model", "prune_model", "reconstruct_model", "save_masks"]
