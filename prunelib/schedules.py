"""Pruning schedules, ``prunelib.schedules``: the public name of :mod:`prunelib.toolkit.schedules`.

Example:
    >>> from prunelib.schedules import PolynomialDecay
    >>> PolynomialDecay(0, 90, begin_step=0, end_step=100).k_at(100)
    90.0
"""

from prunelib.toolkit.schedules import ConstantSparsity, PolynomialDecay, Schedule

__all__ = ["ConstantSparsity", "PolynomialDecay", "Schedule"]
