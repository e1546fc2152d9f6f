"""When to prune how much while training: small frozen schedules, tfmot's knobs in prunelib's k.

A schedule answers two questions about an optimizer step: the percent ``k`` the masks should have
there (:meth:`~Schedule.k_at`), and whether the masks are recomputed there (:meth:`~Schedule.updates_at`).
:class:`ConstantSparsity` and :class:`PolynomialDecay` take the arguments of tfmot's classes of the
same names, with ``k`` in percent (tfmot's ``0.8`` is ``80``), so tfmot code maps one to one:

==========================================================  ================================================
tfmot (``tfmot.sparsity.keras``)                            prunelib (``prunelib.schedules``)
==========================================================  ================================================
``ConstantSparsity(0.8, begin_step=0, frequency=100)``      ``ConstantSparsity(80, begin_step=0, frequency=100)``
``PolynomialDecay(0.5, 0.8, 0, end_step, power=3,           ``PolynomialDecay(50, 80, 0, end_step, power=3,
frequency=100)``                                            frequency=100)``
==========================================================  ================================================

Unlike tfmot's, the last update of a :class:`PolynomialDecay` always falls on ``end_step``, so the
final ``k`` is reached exactly even when ``end_step - begin_step`` is not a multiple of
``frequency``. Framework-free: nothing here imports Keras.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Protocol

from prunelib.core.pruning import check_percent


class Schedule(Protocol):
    """What :class:`prunelib.PruningCallback` asks a schedule."""

    begin_step: int

    def k_at(self, step: int) -> float:
        """The percent of each pruned layer that should be pruned at optimizer step ``step``."""

    def updates_at(self, step: int) -> bool:
        """Whether the masks are recomputed at ``step``."""


def _step(value: object, name: str, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 0:
        raise ValueError(f"{name} must be a whole number of optimizer steps >= 0, got {value!r}")
    return int(value)


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:20] + "..."


def _percent(value: object, name: str) -> float:
    return check_percent(value, name)


def _frequency(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"frequency must be a whole number of steps >= 1, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class ConstantSparsity:
    """``k`` percent from ``begin_step`` on, masks recomputed every ``frequency`` steps until ``end_step``.

    Args:
        k: percent pruned in each pruned layer, in [0, 100].
        begin_step: the first step with masks (dense before it).
        end_step: the last step whose masks are recomputed (``None``: to the end of training).
        frequency: steps between mask updates (tfmot's default 100).

    Example:
        >>> from prunelib.schedules import ConstantSparsity
        >>> s = ConstantSparsity(80, begin_step=10)
        >>> s.k_at(5), s.k_at(10), s.updates_at(10), s.updates_at(60), s.updates_at(110)
        (0.0, 80.0, True, False, True)
    """

    k: float
    begin_step: int = 0
    end_step: int | None = None
    frequency: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "k", _percent(self.k, "k"))
        object.__setattr__(self, "begin_step", _step(self.begin_step, "begin_step"))
        object.__setattr__(self, "end_step", _step(self.end_step, "end_step", allow_none=True))
        object.__setattr__(self, "frequency", _frequency(self.frequency))
        if self.end_step is not None and self.end_step < self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) precedes begin_step ({self.begin_step})")

    def k_at(self, step: int) -> float:
        return self.k if step >= self.begin_step else 0.0

    def updates_at(self, step: int) -> bool:
        if step < self.begin_step or (self.end_step is not None and step > self.end_step):
            return False
        return (step - self.begin_step) % self.frequency == 0


@dataclass(frozen=True)
class PolynomialDecay:
    """Zhu & Gupta's schedule: ``k`` rises from ``initial_k`` to ``final_k`` as ``1 - (1 - t)^power``.

    ``t`` runs from 0 at ``begin_step`` to 1 at ``end_step``; masks are recomputed every
    ``frequency`` steps from ``begin_step`` and at ``end_step`` itself, then kept as they are.

    Args:
        initial_k: percent at ``begin_step``.
        final_k: percent from ``end_step`` on (at least ``initial_k``: masks only tighten).
        begin_step: the first step with masks (dense before it).
        end_step: the step at which ``final_k`` is reached; ``None`` lets
            :class:`prunelib.PruningCallback` put it half-way through its ``fit``.
        power: the polynomial's exponent (3: the cubic of Zhu & Gupta, tfmot's default).
        frequency: steps between mask updates.

    Example:
        >>> from prunelib.schedules import PolynomialDecay
        >>> s = PolynomialDecay(50, 80, begin_step=0, end_step=1000)
        >>> s.k_at(0), round(s.k_at(500), 2), s.k_at(1000), s.updates_at(1000), s.updates_at(1100)
        (50.0, 76.25, 80.0, True, False)
    """

    initial_k: float
    final_k: float
    begin_step: int = 0
    end_step: int | None = None
    power: float = 3.0
    frequency: int = 100

    def __post_init__(self) -> None:
        object.__setattr__(self, "initial_k", _percent(self.initial_k, "initial_k"))
        object.__setattr__(self, "final_k", _percent(self.final_k, "final_k"))
        object.__setattr__(self, "begin_step", _step(self.begin_step, "begin_step"))
        object.__setattr__(self, "end_step", _step(self.end_step, "end_step", allow_none=True))
        object.__setattr__(self, "frequency", _frequency(self.frequency))
        power = self.power
        try:
            good = not isinstance(power, bool) and isinstance(power, Real) and math.isfinite(power) and power > 0
        except OverflowError:  # an integer too large for a float
            good = False
        if not good:
            raise ValueError(f"power must be a positive number such as 3, got {_short(power)}")
        object.__setattr__(self, "power", float(power))
        if self.final_k < self.initial_k:
            raise ValueError(
                f"final_k ({self.final_k:g}) is below initial_k ({self.initial_k:g}); masks only tighten while training"
            )
        if self.end_step is not None and self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must come after begin_step ({self.begin_step})")

    def with_end(self, end_step: int) -> PolynomialDecay:
        """This schedule ending at ``end_step`` (what the callback does with ``end_step=None``)."""
        from dataclasses import replace

        return replace(self, end_step=end_step)

    def _end(self) -> int:
        if self.end_step is None:
            raise ValueError("this PolynomialDecay has no end_step yet; give one, or let PruningCallback set it")
        return self.end_step

    def k_at(self, step: int) -> float:
        if step < self.begin_step:
            return 0.0
        end = self._end()
        t = min((step - self.begin_step) / (end - self.begin_step), 1.0)
        return self.final_k + (self.initial_k - self.final_k) * (1.0 - t) ** self.power

    def updates_at(self, step: int) -> bool:
        end = self._end()
        if step < self.begin_step or step > end:
            return False
        return step == end or (step - self.begin_step) % self.frequency == 0
