"""A head composed of a classifier, a margin, a classification loss and extra loss terms."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from facerec.heads.classifiers.full import FullClassifier
from facerec.heads.legacy import upgrade_checkpoint
from facerec.heads.losses import ClassificationLoss, CrossEntropy
from facerec.heads.margin import Margin
from facerec.heads.numerics import full_precision
from facerec.heads.terms import LossTerm

ClassifierFactory = Callable[..., FullClassifier]
"""Builds a classifier from ``embedding_size``, ``num_classes``, ``rows_per_class``, ``bias``, ``linear_init``."""
TermFactory = Callable[..., LossTerm]
"""Builds a loss term from ``embedding_size`` and ``num_classes``."""


@dataclass
class HeadOutput:
    """Head result: ``loss`` scalar batch mean; ``logits`` as fed to the loss (margin applied).

    ``logits`` are (B, C), class-indexed, with ``classifier=full``; (B_global, n_sampled) under Partial FC.
    """

    loss: Tensor
    logits: Tensor


class Head(nn.Module):
    """Embeddings + labels → loss: ``loss(margin(classifier(x, y))) + Σ terms(x, y)``.

    Runs in float32 (float64 for float64 inputs) regardless of autocast. The LightningModule calls
    :meth:`param_groups`, :meth:`setup_distributed`, :meth:`before_optimizer_step`,
    :meth:`after_optimizer_step`, :meth:`clip_grad_norm_` and the checkpoint hooks; they delegate to the
    parts. Outside Lightning::

        head = Head(512, 1000, ArcFace(scale=64.0, margin=0.5))
        optimizer = torch.optim.SGD([*net_groups, *head.param_groups()], lr=0.1)
        head(embeddings, labels).loss.backward()
        head.before_optimizer_step(optimizer); optimizer.step(); head.after_optimizer_step()

    Args:
        embedding_size: E.
        num_classes: C.
        margin: The logit transform (``conf/margin``).
        classifier: Factory of the classifier (``conf/classifier``: ``full`` or ``partial_fc``); default full.
        loss: The classification loss; default: the margin's :meth:`~facerec.heads.margin.Margin.default_loss`,
            else softmax cross-entropy.
        terms: Extra loss terms by name (``conf/loss_term``), each a :class:`~facerec.heads.terms.LossTerm`
            or a factory taking ``embedding_size`` and ``num_classes``.
        subcenters: K centres per class; a class' cosine is the max over its K (sub-center ArcFace).

    Attributes:
        classifier: Holds the class centres ``classifier.weight``.
        margin: The margin.
        loss: The classification loss.
        terms: ``nn.ModuleDict`` of the extra loss terms.
    """

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: Margin,
        classifier: ClassifierFactory = FullClassifier,
        loss: ClassificationLoss | None = None,
        terms: Mapping[str, LossTerm | TermFactory] | None = None,
        subcenters: int = 1,
    ) -> None:
        super().__init__()
        if not isinstance(margin, Margin):
            raise TypeError(f"head.margin must be a facerec.heads.Margin, got {type(margin).__name__}")
        self.embedding_size = embedding_size
        self.num_classes = num_classes
        self.classifier = classifier(
            embedding_size=embedding_size,
            num_classes=num_classes,
            rows_per_class=subcenters,
            bias=margin.class_bias,
            linear_init=margin.linear_init,
        )
        if margin.sampling == "refused" and getattr(self.classifier, "sample_rate", 1.0) < 1.0:
            raise ValueError(
                f"the {type(margin).__name__} margin needs every class in each step, so Partial FC cannot sample: "
                "set classifier.sample_rate=1.0 (Partial FC still shards the centres)"
            )
        self.margin = margin
        needed = margin.default_loss()
        self.loss = loss or needed or CrossEntropy()
        if needed is not None and not isinstance(self.loss, type(needed)):
            raise ValueError(
                f"the {type(margin).__name__} margin's logits need the loss {type(needed).__name__}, not "
                f"{type(self.loss).__name__}"
            )
        built = {
            name: term if isinstance(term, LossTerm) else term(embedding_size=embedding_size, num_classes=num_classes)
            for name, term in (terms or {}).items()
        }
        self.terms = nn.ModuleDict(built)

    @property
    def weight(self) -> Tensor:
        """Class centres (C·K, E); this rank's shard under Partial FC."""
        return self.classifier.centres

    @property
    def full_logits(self) -> bool:
        """Whether ``forward``'s logits are (B, C), class-indexed (False under Partial FC)."""
        return self.classifier.full_logits

    @property
    def updates_after_step(self) -> bool:
        """Whether :meth:`after_optimizer_step` does something."""
        parts = [self.classifier, self.margin, *self.terms.values()]
        return any(part.updates_after_step for part in parts)

    def forward(self, embeddings: Tensor, labels: Tensor) -> HeadOutput:
        """Loss and logits for embeddings (B, E), any float dtype, and int64 labels (B,) in [0, C).

        ``loss`` is the batch mean (the global batch under Partial FC).
        """
        with torch.autocast(device_type=embeddings.device.type, enabled=False):
            x = full_precision(embeddings)
            inputs = self.classifier(x, labels)
            logits = self.margin(inputs)
            loss = self.loss(logits, inputs)
            for term in self.terms.values():
                loss = loss + self.classifier.batch_mean(term(x, labels), len(labels), len(inputs.labels))
            return HeadOutput(loss=loss, logits=logits)

    def param_groups(self) -> list[dict]:
        """Optimizer parameter groups: the centres, the margin's and terms' parameters (a term may set its own
        ``lr``)."""
        groups = [*self.classifier.param_groups()]
        own = [*self.margin.parameters(), *self.loss.parameters()]
        if own:
            groups.append({"params": own})
        for term in self.terms.values():
            groups += term.param_groups()
        return groups

    def setup_distributed(self, rank: int, world_size: int) -> list[str]:
        """Prepares rank ``rank`` of ``world_size`` (Partial FC shards); returns parameters DDP must not sync."""
        return [f"classifier.{name}" for name in self.classifier.setup_distributed(rank, world_size)]

    def before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """After backward, before ``optimizer.step()`` (Partial FC r < 1: the sampled centres' state)."""
        self.classifier.before_optimizer_step(optimizer)

    def after_optimizer_step(self, skipped: bool = False) -> None:
        """After every optimizer step, on every rank (``skipped``: its gradients were dropped)."""
        self.classifier.after_optimizer_step()
        self.margin.after_optimizer_step(skipped)
        for term in self.terms.values():
            term.after_optimizer_step(skipped)

    def clip_grad_norm_(self, parameters: Sequence[Tensor], max_norm: float) -> bool:
        """Clips the whole model's gradient norm if the centres are sharded; returns whether it did."""
        return self.classifier.clip_grad_norm_(parameters, max_norm)

    def on_save_checkpoint(self, prefix: str, checkpoint: dict, optimizers: Sequence[torch.optim.Optimizer]) -> None:
        """Lets the classifier store world-size-independent state (``prefix``: the head's state-dict prefix)."""
        self.classifier.on_save_checkpoint(f"{prefix}classifier.", checkpoint, optimizers)

    def on_load_checkpoint(
        self, prefix: str, checkpoint: dict, resuming: bool = False, source: Path | None = None
    ) -> None:
        """Before the weights are loaded: renames an old head's weights (:mod:`~facerec.heads.legacy`; ValueError
        when ``resuming`` its training), then lets the classifier take its rows (Partial FC; ``source``: the
        checkpoint file, beside which sharded centres lie)."""
        upgrade_checkpoint(prefix, checkpoint, resuming)
        self.classifier.on_load_checkpoint(f"{prefix}classifier.", checkpoint, source)


def describe_head(head: nn.Module) -> str:
    """``"ArcFace margin on FullClassifier + center"``: what a head is made of, for messages."""
    if not isinstance(head, Head):
        return type(head).__name__
    terms = "".join(f" + {name}" for name in head.terms)
    return f"{type(head.margin).__name__} margin on {type(head.classifier).__name__}{terms}"
