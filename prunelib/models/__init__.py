"""The challenge's Keras models: its MLP and training, masked training and the recovery strategies,
and their frozen configs. The model-level toolkit for anyone's Keras model lives in
:mod:`prunelib.toolkit`. This ``__init__`` imports nothing, so :mod:`prunelib.models.config` stays
framework-free.
"""
