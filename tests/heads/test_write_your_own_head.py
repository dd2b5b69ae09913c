"""README "Write your own head": the example margin, defined here alone, is exact and trains through train.py."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
from torch import Tensor

from facerec.heads import ArcFace, Head, Margin, MarginInput, register_margin
from tests.helpers import REPO, run_dir, run_entry_point


@register_margin("warmup_arcface")
class WarmupArcFace(Margin):
    """ArcFace whose margin grows from 0 to ``margin`` over the first ``warmup_steps`` optimizer steps."""

    def __init__(self, scale: float = 64.0, margin: float = 0.5, warmup_steps: int = 1000) -> None:
        super().__init__()
        self.scale, self.margin, self.warmup_steps = scale, margin, warmup_steps
        self.register_buffer("steps", torch.zeros(()))  # a buffer: saved in checkpoints, same on every rank

    def forward(self, inputs: MarginInput) -> Tensor:
        """(B, n) logits ``s·cos θ_j``, the target's ``s·cos(θ_y + m_t)``."""
        m = self.margin * (self.steps / self.warmup_steps).clamp(max=1.0)
        theta = torch.acos(inputs.target(inputs.cos).clamp(-1 + 1e-7, 1 - 1e-7))
        target = torch.cos((theta + m).clamp(max=math.pi))
        return self.scale * inputs.with_target(inputs.cos, target)

    def after_optimizer_step(self, skipped: bool = False) -> None:
        """One more step of warm-up (none for a step whose gradients were dropped)."""
        self.steps += 0.0 if skipped else 1.0


def test_the_readme_shows_this_margin_verbatim():
    assert inspect.getsource(WarmupArcFace) in (REPO / "README.md").read_text()


def test_it_equals_arcface_at_the_margin_of_its_step():
    """After k of 4 warm-up steps the logits, loss and gradients are ArcFace's with m = 0.4·k/4 (float64)."""
    torch.manual_seed(0)
    head = Head(8, 5, WarmupArcFace(scale=30.0, margin=0.4, warmup_steps=4)).double()
    x, labels = torch.randn(6, 8, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 4, 0])
    for step in range(6):
        reference = Head(8, 5, ArcFace(scale=30.0, margin=0.4 * min(step, 4) / 4)).double()
        reference.load_state_dict({"classifier.weight": head.classifier.weight.detach()})
        got_x, want_x = x.clone().requires_grad_(), x.clone().requires_grad_()
        got, want = head(got_x, labels), reference(want_x, labels)
        got.loss.backward()
        want.loss.backward()
        torch.testing.assert_close(got.logits, want.logits, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got_x.grad, want_x.grad, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(head.weight.grad, reference.weight.grad, rtol=1e-12, atol=1e-12)
        head.zero_grad()
        head.after_optimizer_step(skipped=step == 5)
    assert head.margin.steps.item() == 5.0, "the skipped step did not count"


@pytest.mark.slow  # starts train.py
def test_a_head_defined_in_this_file_trains_through_train_py(data_dir, tmp_path):
    margin = f"{{_target_:{__name__}.WarmupArcFace,scale:30.0,margin:0.3,warmup_steps:2}}"
    run_entry_point(
        "train.py", "experiment=smoke", "~head.margin", f"+head.margin={margin}", "classifier=partial_fc",
        "classifier.sample_rate=0.5", "trainer.max_epochs=1", log_dir=tmp_path, data_dir=data_dir,
    )  # fmt: skip
    checkpoint = torch.load(run_dir(tmp_path) / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["head"]["margin"]["_target_"] == f"{__name__}.WarmupArcFace"
    assert checkpoint["state_dict"]["head.margin.steps"].item() == checkpoint["global_step"] > 0
