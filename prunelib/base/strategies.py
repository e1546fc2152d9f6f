"""The registry of pruning strategies: one place for their names, order, labels and epoch counts.

Every strategy the study compares against the challenge's one-shot pruning is declared here once;
the CLI's choices, the order of the report's tables and of the figures' legends, the epochs a
result row records and the validation of a config all come from :data:`STRATEGIES`. The training
code of each strategy lives in :mod:`prunelib.models.recovery`, which refuses to import if its
implementations and this registry disagree. Nothing here imports a deep-learning framework, so
names are checked before any model is built.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Strategy:
    """One way to reach a pruned network.

    Attributes:
        name: the name in tables, configs and on the command line.
        label: a short description for reports and legends.
        kind: ``"one-shot"`` (no training), ``"recovery"`` (trains a pruned copy of the dense
            model, configured by :class:`~prunelib.models.config.RecoveryConfig`) or ``"from-scratch"``
            (trains its own model, configured by :class:`~prunelib.models.config.AwareTarget`).
        epochs: the training epochs a recovery strategy spends, given its config.
    """

    name: str
    label: str
    kind: str
    epochs: Callable[..., int] | None = None  # of a prunelib.models.config.RecoveryConfig


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in (
        Strategy("one-shot", "prune once, no training", "one-shot", lambda c: 0),
        Strategy("finetune", "prune once, then fine-tune with the mask fixed", "recovery", lambda c: c.recipe.epochs),
        Strategy(
            "refit-finetune",
            "prune and re-fit with the best post-training method, then fine-tune with the mask fixed",
            "recovery",
            lambda c: c.recipe.epochs,
        ),
        Strategy("gradual", "Zhu & Gupta's cubic schedule while training", "recovery", lambda c: c.recipe.epochs),
        Strategy(
            "imp",
            "iterative magnitude pruning: prune, retrain, repeat",
            "recovery",
            lambda c: c.imp_epochs * c.imp_rounds,
        ),
        Strategy("targeted-dropout", "train from scratch with targeted dropout, then prune once", "from-scratch"),
    )
}
"""Every strategy, in the order reports and figures show them."""

RECOVERY = tuple(name for name, s in STRATEGIES.items() if s.kind == "recovery")
"""The strategies that train a pruned copy of the dense model (``--recovery`` choices)."""


def get(name: str) -> Strategy:
    """The strategy called ``name``.

    Raises:
        ValueError: no strategy has that name (the message lists them).
    """
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(f"unknown strategy {name!r}; choose one of {list(STRATEGIES)}") from None


def epochs(name: str, config) -> int:
    """Training epochs of strategy ``name`` under ``config``, a
    :class:`~prunelib.models.config.RecoveryConfig` (0 for one-shot).

    Raises:
        ValueError: ``name`` is unknown or trains its own model (its epochs are its recipe's).
    """
    strategy = get(name)
    if strategy.epochs is None:
        raise ValueError(f"strategy {name!r} trains from scratch: its epochs are those of its recipe")
    return strategy.epochs(config)


def order(names) -> list[str]:
    """``names`` sorted in registry order (unknown names last, as given)."""
    rank = {name: i for i, name in enumerate(STRATEGIES)}
    return sorted(names, key=lambda n: rank.get(n, len(rank)))
