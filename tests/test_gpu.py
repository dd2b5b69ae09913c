"""On a CUDA GPU: fp16-mixed and bf16-mixed training steps, channels-last inputs, ``model.compile=true``, 1:N search,
Partial FC sampling.

Every test here is marked ``gpu``: skipped with the reason where ``torch.cuda.is_available()`` is false, run with
``pytest -m gpu`` on a machine with CUDA. The 2-process NCCL DDP equality test is the ``nccl`` case of
``tests/test_ddp_exactness.py`` (also marked ``gpu``; it needs 2 GPUs).
"""

from __future__ import annotations

from collections.abc import Iterator

import lightning as L
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from facerec.eval.search import search
from facerec.heads import PartialFC
from tests.helpers import quiet_trainer, smoke_model, without_tf32

pytestmark = pytest.mark.gpu

STEPS, BATCH = 8, 8
HEADS = {
    "arcface": ("head=arcface",),
    "center_paper": (
        "head=center",
        "head.terms.center.update=paper",
    ),  # updated after each step, unless fp16's scaler skipped it
    "partial_fc": ("head=cosface", "classifier=partial_fc"),
}
AUTOCAST_DTYPES = {"16-mixed": torch.float16, "bf16-mixed": torch.bfloat16, "32-true": None}


@pytest.fixture
def float32() -> Iterator[None]:
    """TF32 off during the test, so that two float32 computations compare as tightly as on the CPU."""
    with without_tf32():
        yield


class StepRecorder(L.Callback):
    """Records each training batch's loss and the autocast dtype the embedding net ran under (None: autocast off),
    and for each optimizer step whether every gradient was finite. Lightning unscales fp16 gradients before
    ``on_before_optimizer_step``, so these are the gradients the optimizer would apply."""

    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []
        self.autocast_dtypes: set[torch.dtype | None] = set()
        self.finite_gradients: list[bool] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.net.register_forward_hook(self._record_autocast)

    def _record_autocast(self, module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        enabled = torch.is_autocast_enabled("cuda")
        self.autocast_dtypes.add(torch.get_autocast_dtype("cuda") if enabled else None)

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach())

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        gradients = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        self.finite_gradients.append(bool(gradients) and all(bool(torch.isfinite(g).all()) for g in gradients))


def fit_on_cuda(model: L.LightningModule, tmp_path, precision: str = "32-true") -> StepRecorder:
    """``STEPS`` optimizer steps of ``BATCH`` random 32×32 images on one CUDA GPU (Lightning moves the model
    back to the CPU afterwards)."""
    generator = torch.Generator().manual_seed(1)
    images = torch.randn(STEPS * BATCH, 3, 32, 32, generator=generator)
    labels = torch.arange(STEPS * BATCH) % model.hparams.num_classes
    recorder = StepRecorder()
    trainer = quiet_trainer(
        STEPS, accelerator="gpu", devices=1, precision=precision, callbacks=[recorder], default_root_dir=tmp_path
    )
    trainer.fit(model, train_dataloaders=DataLoader(TensorDataset(images, labels), batch_size=BATCH))
    assert len(recorder.losses) == len(recorder.finite_gradients) == STEPS
    assert recorder.autocast_dtypes == {AUTOCAST_DTYPES[precision]}
    assert all(loss.dtype == torch.float32 and bool(torch.isfinite(loss)) for loss in recorder.losses)
    return recorder


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().cpu().clone() for name, value in model.state_dict().items()}


def assert_trained(before: dict[str, torch.Tensor], model: torch.nn.Module) -> None:
    """Every weight and buffer is finite, and the backbone's weights moved."""
    after = snapshot(model)
    assert all(bool(torch.isfinite(value).all()) for value in after.values() if value.is_floating_point())
    moved = [name for name in before if name.startswith("net.backbone.") and not torch.equal(before[name], after[name])]
    assert moved, "no backbone weight changed"


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_mixed_precision_training_steps(precision, head, tmp_path):
    """The net runs under autocast, the head's loss stays float32 and finite, the gradients are finite.

    fp16's gradient scaler starts at 2**16 and may find inf gradients in the first steps (it then skips the step
    and halves its scale: normal AMP), so fp16 needs finite gradients in some steps, bf16 (no scaler) in all.
    """
    torch.manual_seed(0)
    model = smoke_model(*HEADS[head])
    before = snapshot(model)
    recorder = fit_on_cuda(model, tmp_path, precision)
    if precision == "bf16-mixed":
        assert all(recorder.finite_gradients)
    else:
        assert any(recorder.finite_gradients), "the gradient scaler skipped every step"
    assert_trained(before, model)


def test_channels_last_gives_the_contiguous_embeddings_on_cuda(float32):
    torch.manual_seed(0)
    model = smoke_model("backbone.channels_last=true").cuda().eval()
    torch.manual_seed(0)
    reference = smoke_model().cuda().eval()
    first_conv = next(m for m in model.net.backbone.modules() if isinstance(m, torch.nn.Conv2d))
    assert first_conv.weight.is_cuda and first_conv.weight.is_contiguous(memory_format=torch.channels_last)
    seen = []
    first_conv.register_forward_pre_hook(lambda module, args: seen.append(args[0]))
    images = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        torch.testing.assert_close(model(images), reference(images), rtol=1e-4, atol=1e-4)
    assert seen[0].is_contiguous(memory_format=torch.channels_last)


def test_compiled_backbone_trains_and_embeds_like_eager_on_cuda(float32, tmp_path):
    torch.manual_seed(0)
    model = smoke_model("model.compile=true")
    assert hasattr(model.net.backbone, "_orig_mod"), "model.compile=true did not compile the backbone"
    before = snapshot(model)
    recorder = fit_on_cuda(model, tmp_path)
    assert all(recorder.finite_gradients)
    assert_trained(before, model)
    model.cuda().eval()
    images = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.no_grad():
        compiled = model(images)
        model.net.backbone = model.net.backbone._orig_mod  # the same weights, eager
        eager = model(images)
    torch.testing.assert_close(compiled, eager, rtol=1e-3, atol=1e-4)


def test_search_on_cuda_equals_the_cpu(float32):
    generator = torch.Generator().manual_seed(0)
    probes, gallery, distractors = (torch.randn(n, 32, generator=generator) for n in (300, 500, 2000))
    gallery_labels, probe_labels = torch.arange(500), torch.randint(0, 600, (300,), generator=generator)
    options = {"distractors": distractors, "k": 5, "probe_chunk": 64, "gallery_chunk": 256}
    on_cpu = search(probes, gallery, gallery_labels, probe_labels, device="cpu", **options)
    on_cuda = search(probes, gallery, gallery_labels, probe_labels, device="cuda", **options)
    assert (on_cuda.ranks == on_cpu.ranks).all() and (on_cuda.topk_indices == on_cpu.topk_indices).all()
    assert abs(on_cuda.topk_scores - on_cpu.topk_scores).max() < 1e-5


def test_partial_fc_samples_the_same_classes_on_cuda_as_on_the_cpu():
    """Sampling draws on torch's default CPU generator (insightface's rule): the same seed, the same classes."""
    classifier = PartialFC(8, 10_000, sample_rate=0.1, rank=1, world_size=3)
    labels = torch.randint(0, 10_000, (64,))
    torch.manual_seed(5)
    on_cpu = classifier.sample(labels)
    torch.manual_seed(5)
    on_cuda = classifier.to("cuda").sample(labels.cuda())
    for cpu, cuda in zip(on_cpu, on_cuda, strict=True):
        assert torch.equal(cuda.cpu(), cpu)
