"""VerificationCallback: gathered embeddings placed by image index, best accuracy across a resume."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from facerec.callbacks import VerificationCallback
from facerec.callbacks.verification import rows_by_index
from tests.helpers import quiet_trainer, smoke_model


def test_padded_duplicates_keep_the_first_occurrence():
    """5 images on 3 ranks: the sampler pads to 6 by giving rank 2 image 0 again, last in rank order."""
    index = torch.cat([torch.tensor(list(DistributedSampler(range(5), 3, rank, shuffle=False))) for rank in range(3)])
    assert index.tolist() == [0, 3, 1, 4, 2, 0]
    rows = torch.arange(6.0).unsqueeze(1).repeat(1, 2)  # row j holds j: the padded repeat of image 0 holds 5
    placed, covered = rows_by_index(index, rows, 5)
    assert placed[:, 0].tolist() == [0.0, 2.0, 4.0, 1.0, 3.0]
    assert covered.all()
    placed, covered = rows_by_index(index[:3], rows[:3], 5)
    assert covered.tolist() == [True, True, False, True, False]
    assert placed[~covered].abs().sum() == 0


def fit(callback: VerificationCallback, tmp_path, ckpt_path=None) -> L.Trainer:
    trainer = quiet_trainer(1, default_root_dir=tmp_path, callbacks=[callback])
    loader = DataLoader(TensorDataset(torch.randn(8, 3, 32, 32), torch.arange(8) % 4), batch_size=8)
    trainer.fit(smoke_model(), train_dataloaders=loader, ckpt_path=ckpt_path)
    return trainer


def test_best_accuracy_survives_a_resume(tmp_path):
    callback = VerificationCallback()
    callback.best_accuracy = {"lfw": 0.75}
    fit(callback, tmp_path).save_checkpoint(tmp_path / "last.ckpt")
    resumed = VerificationCallback()
    fit(resumed, tmp_path, ckpt_path=tmp_path / "last.ckpt")
    assert resumed.best_accuracy == {"lfw": 0.75}
