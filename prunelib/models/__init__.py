"""Keras models: the challenge's MLP and its training, masked training and recovery strategies,
their frozen configs, and the model-level API for anyone's Keras model (:mod:`~prunelib.models.api`:
prune, re-fit, compact, masks; :mod:`~prunelib.models.exporting`: ONNX, TFLite, .keras). The only
layer (besides the study's runners) that imports TensorFlow; this ``__init__`` imports nothing, so
:mod:`prunelib.models.config` stays framework-free.
"""
