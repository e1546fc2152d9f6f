"""prunelib: magnitude pruning of a Keras MLP, measured honestly.

Modules, one job each: :mod:`~prunelib.data` (IDX files, fetching), :mod:`~prunelib.models.mlp`
(the MLP, training, caching), :mod:`~prunelib.core.pruning` (pure mask functions),
:mod:`~prunelib.core.evaluate` (sweeps into tidy tables), :mod:`~prunelib.models.masked` and
:mod:`~prunelib.models.recovery` (training with masks: fine-tuning, gradual pruning, IMP, targeted
dropout), :mod:`~prunelib.study.analysis` (sensitivity, distributions, retrain baseline),
:mod:`~prunelib.reporting.stats`, :mod:`~prunelib.reporting.plotting`, :mod:`~prunelib.study.experiment` (the study end to
end), :mod:`~prunelib.reporting.report` and :mod:`~prunelib.cli` (``python -m prunelib``).

Your own Keras model: :mod:`~prunelib.models` (``prunelib.prune_model``, ``reconstruct_model``,
``compact_model``, ``export``, ``save_masks``/``load_masks``, ...), loaded on first use so that
``import prunelib`` does not import TensorFlow.
"""

from prunelib.core.pruning import (
    apply_masks,
    compute_masks,
    prune,
    sparsity,
    unit_masks,
    unit_prune,
    validate_k,
    weight_masks,
    weight_prune,
)

_LAZY = ("apply_model_masks", "compact_model", "export", "load_masks", "model_masks",
         "predictor_from_model", "prune_model", "reconstruct_model", "save_masks")
"""Model-level names (:mod:`prunelib.models`): they import Keras and TensorFlow, so only on first use."""

__all__ = ["apply_masks", "compute_masks", "prune", "sparsity", "unit_masks", "unit_prune",
           "validate_k", "weight_masks", "weight_prune", *_LAZY]


def __getattr__(name: str):
    # PEP 562: ``import prunelib`` stays light; ``prunelib.prune_model`` loads Keras when first asked
    if name in _LAZY:
        import prunelib.models

        return getattr(prunelib.models, name)
    raise AttributeError(f"module 'prunelib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
__version__ = "0.2.0"
