"""A per-epoch timer shared by both sides of compare_tfmot.py.

Each side has its own Keras (Keras 3 here, tf-keras in tfmot's subprocess), so the callback base
class is passed in rather than imported.
"""

import time


def epoch_timer_class(callback_base: type) -> type:
    """A Keras callback class, subclassing ``callback_base``, recording seconds per epoch in ``times``."""

    class EpochTimer(callback_base):
        def on_train_begin(self, logs=None):
            self.times = []

        def on_epoch_begin(self, epoch, logs=None):
            self._t = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.times.append(time.perf_counter() - self._t)

    return EpochTimer
