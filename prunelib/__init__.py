"""prunelib: prune Keras MLPs by weight or unit magnitude, re-fit the survivors in closed form,
and measure it honestly (the pruning challenge on MNIST and Fashion-MNIST).

The layers, bottom up (``docs/package-map.md`` lists every module): :mod:`~prunelib.base` (paths,
caching, code fingerprints, the manifest), :mod:`~prunelib.data` (the IDX datasets),
:mod:`~prunelib.core` (pure numpy: masks, forward pass, least squares, compaction, evaluation),
:mod:`~prunelib.inference` (fast pruned inference), :mod:`~prunelib.toolkit` (Keras: prune, re-fit,
compact and export your own model, or prune it while it trains), :mod:`~prunelib.models` (the
challenge's MLP, its training and recovery), :mod:`~prunelib.reporting`
(tables, figures, report) and :mod:`~prunelib.study` (the study's grid, tables and runners), with
:mod:`~prunelib.cli` (``python -m prunelib``) on top.

The kernel-level functions below are numpy only. The model-level names (``prunelib.prune_model``,
``reconstruct_model``, ``compact_model``, ``export``, ``save_masks``/``load_masks``,
``PruningCallback``, ...) load Keras and TensorFlow on first use, so ``import prunelib`` stays
light; ``prunelib.schedules`` is framework-free.
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

_LAZY = {
    **{
        name: "prunelib.toolkit.api"
        for name in (
            "apply_model_masks",
            "compact_model",
            "load_masks",
            "model_masks",
            "post_training_methods",
            "post_training_model",
            "predictor_from_model",
            "prune_model",
            "reconstruct_model",
            "save_masks",
        )
    },
    "export": "prunelib.toolkit.exporting",
    "PruningCallback": "prunelib.toolkit.callback",
}
"""Model-level names and their modules: they import Keras and TensorFlow, so only on first use."""

__all__ = [
    "apply_masks",
    "compute_masks",
    "prune",
    "sparsity",
    "unit_masks",
    "unit_prune",
    "validate_k",
    "weight_masks",
    "weight_prune",
    *_LAZY,
    "schedules",
]
__version__ = "0.3.0"


def __getattr__(name: str):
    # PEP 562: ``import prunelib`` stays light; ``prunelib.prune_model`` loads Keras when first asked.
    import importlib

    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name == "schedules":  # framework-free: prunelib.schedules.PolynomialDecay(...) without importing it
        return importlib.import_module("prunelib.schedules")
    raise AttributeError(f"module 'prunelib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY) | {"schedules"})
