"""prunelib: magnitude pruning of a Keras MLP, measured honestly.

Modules, one job each: :mod:`~prunelib.data` (IDX files, fetching), :mod:`~prunelib.models.mlp`
(the MLP, training, caching), :mod:`~prunelib.core.pruning` (pure mask functions),
:mod:`~prunelib.core.evaluate` (sweeps into tidy tables), :mod:`~prunelib.models.masked` and
:mod:`~prunelib.models.recovery` (training with masks: fine-tuning, gradual pruning, IMP, targeted
dropout), :mod:`~prunelib.study.analysis` (sensitivity, distributions, retrain baseline),
:mod:`~prunelib.reporting.stats`, :mod:`~prunelib.reporting.plotting`, :mod:`~prunelib.study.experiment` (the study end to
end), :mod:`~prunelib.reporting.report` and :mod:`~prunelib.cli` (``python -m prunelib``).
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

__all__ = ["apply_masks", "compute_masks", "prune", "sparsity", "unit_masks", "unit_prune",
           "validate_k", "weight_masks", "weight_prune"]
__version__ = "0.2.0"
