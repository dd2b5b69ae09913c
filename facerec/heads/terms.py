"""Extra loss terms a head adds to its classification loss (center loss, MagFace's regulariser)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class LossTerm(nn.Module, ABC):
    """A per-sample loss on this process' embeddings, already weighted, added to the head's loss.

    The head averages it over the global batch under Partial FC. Terms whose constructor needs the
    embedding size or class count take ``embedding_size`` and ``num_classes`` keyword arguments and are
    given to the head as a factory (``functools.partial``, or ``_partial_: true`` in their config).
    """

    @abstractmethod
    def forward(self, embeddings: Tensor, labels: Tensor) -> Tensor:
        """Scalar: mean over this process' samples of embeddings (B, E) with labels (B,)."""

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups of the term's parameters (none by default)."""
        params = list(self.parameters())
        return [{"params": params}] if params else []

    def after_optimizer_step(self, skipped: bool = False) -> None:
        """Called after every optimizer step on every rank (``skipped``: its gradients were dropped)."""

    @property
    def updates_after_step(self) -> bool:
        """Whether the subclass overrides :meth:`after_optimizer_step`."""
        return type(self).after_optimizer_step is not LossTerm.after_optimizer_step
