"""Prune anyone's Keras 3 model: the model-level toolkit, read top to bottom.

* :mod:`~prunelib.toolkit.chain`: reading a Keras model (which layers, activations, weights);
* :mod:`~prunelib.toolkit.api`: prune, re-fit (least squares), compact, masks, the fast predictor;
* :mod:`~prunelib.toolkit.kernels`: every layer that holds a kernel, and which axes are its units;
* :mod:`~prunelib.toolkit.schedules`: when to prune how much while training (framework-free);
* :mod:`~prunelib.toolkit.masking`: the mechanism of pruning while training (masks as variable
  constraints on a schedule), which the challenge's recovery strategies train on;
* :mod:`~prunelib.toolkit.callback`: :class:`~prunelib.toolkit.callback.PruningCallback`, pruning
  a model during its own ``model.fit`` (the mechanism, plus a closed-form start);
* :mod:`~prunelib.toolkit.exporting`: ``.keras``, ONNX and TFLite files, each written to a
  temporary file and renamed into place (:mod:`prunelib.base.files`).

The challenge's own MLP and its training live in :mod:`prunelib.models`, above this layer. This
``__init__`` imports nothing, so :mod:`~prunelib.toolkit.schedules` stays framework-free; the public
names are re-exported, loaded on first use, by :mod:`prunelib`.
"""
