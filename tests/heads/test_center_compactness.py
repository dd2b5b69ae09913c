"""Center loss makes classes compact, more so as λ grows (Wen et al., ECCV 2016, Figure 3)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from facerec.heads import CenterLoss, create_head


def intra_to_inter_class_spread(center_weight: float, steps: int = 300) -> tuple[float, float]:
    """Trains a small MLP to 2-d features with the ``center`` head (softmax + center term) on 4 noisy 8-d clusters.

    Returns:
        Mean squared distance of the features to their class mean, divided by the mean squared
        distance of the class means to their mean (lower: more compact classes); train accuracy.
    """
    torch.manual_seed(0)
    num_classes, dim = 4, 8
    labels = torch.arange(128) % num_classes
    data = 3.0 * F.normalize(torch.randn(num_classes, dim), dim=1)[labels] + torch.randn(128, dim)
    net = nn.Sequential(nn.Linear(dim, 32), nn.ReLU(), nn.Linear(32, 2))
    head = create_head("softmax", 2, num_classes, terms={"center": partial(CenterLoss, weight=center_weight)})
    optimizer = torch.optim.SGD([*net.parameters(), *head.parameters()], lr=0.05, momentum=0.9)
    for _ in range(steps):
        loss = head(net(data), labels).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        head.after_optimizer_step()
    with torch.no_grad():
        features = net(data)
        accuracy = float((head(features, labels).logits.argmax(dim=1) == labels).float().mean())
    means = torch.stack([features[labels == c].mean(dim=0) for c in range(num_classes)])
    intra = (features - means[labels]).pow(2).sum(dim=1).mean()
    inter = (means - means.mean(dim=0)).pow(2).sum(dim=1).mean()
    return float(intra / inter), accuracy


def test_classes_get_more_compact_as_center_weight_grows():
    spreads, accuracies = zip(*(intra_to_inter_class_spread(weight) for weight in (0.0, 0.1, 1.0)), strict=True)
    assert all(accuracy == 1.0 for accuracy in accuracies)
    assert spreads[1] < 0.75 * spreads[0] and spreads[2] < 0.5 * spreads[1], spreads
