"""prunelib: magnitude pruning of a Keras MLP, measured honestly.

Modules, one job each: :mod:`~prunelib.data` (IDX files, fetching), :mod:`~prunelib.model`
(the MLP, training, caching), :mod:`~prunelib.pruning` (pure mask functions),
:mod:`~prunelib.evaluate` (sweeps into tidy tables), :mod:`~prunelib.masked` and
:mod:`~prunelib.recovery` (training with masks: fine-tuning, gradual pruning, IMP, targeted
dropout), :mod:`~prunelib.analysis` (sensitivity, distributions, retrain baseline),
:mod:`~prunelib.stats`, :mod:`~prunelib.plotting`, :mod:`~prunelib.experiment` (the study end to
end), :mod:`~prunelib.report` and :mod:`~prunelib.cli` (``python -m prunelib``).
"""

from prunelib.pruning import (
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
