"""Keras models: the challenge's MLP and its training, masked training and recovery strategies,
and their frozen configs. The only layer (besides the study's runners) that imports TensorFlow."""
