"""The LightningDataModule: training identities plus verification sets."""

from __future__ import annotations

from collections.abc import Mapping

import lightning as L
import torch
from torch.utils.data import DataLoader

from facerec.data.folder import IdentityFolderDataset, scan_identity_folder
from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.transforms import eval_transform, train_transform
from facerec.data.verification import VerificationImages, VerificationSet, load_pairs_set


class FaceDataModule(L.LightningDataModule):
    """Identity-folder training data and LFW-style verification sets.

    Args:
        root: Training folder, one sub-folder per identity. ``None`` for evaluation-only use.
        val_sets: ``{name: {"pairs": pairs.txt, "images": image root}}``.
        image_size: (H, W) the network sees.
        batch_size: Training batch size per process.
        eval_batch_size: Batch size for embedding verification images.
        num_workers: DataLoader worker processes.
        persistent_workers: Keep workers alive between epochs.
        prefetch_factor: Batches each worker loads ahead.
        pin_memory: Pin host memory; ``None`` pins when CUDA is available.
        augment: Training augmentation: ``none``, ``default`` or ``strong``.
        skip_corrupt: Replace undecodable training images instead of stopping.
        synthetic: If given, the built-in synthetic data is generated with these
            :class:`~facerec.data.synthetic.SyntheticSpec` fields into ``synthetic_dir``.
        synthetic_dir: Where the synthetic data is cached.
    """

    def __init__(
        self,
        root: str | None = None,
        val_sets: Mapping[str, Mapping[str, str]] | None = None,
        image_size: tuple[int, int] = (112, 112),
        batch_size: int = 128,
        eval_batch_size: int = 256,
        num_workers: int = 2,
        persistent_workers: bool = True,
        prefetch_factor: int = 2,
        pin_memory: bool | None = None,
        augment: str = "default",
        skip_corrupt: bool = False,
        synthetic: Mapping[str, int] | None = None,
        synthetic_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.root = root
        self.val_set_paths = {name: dict(paths) for name, paths in (val_sets or {}).items()}
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.augment = augment
        self.skip_corrupt = skip_corrupt
        self.loader_options = {
            "num_workers": num_workers,
            "persistent_workers": persistent_workers and num_workers > 0,
            "prefetch_factor": prefetch_factor if num_workers > 0 else None,
            "pin_memory": torch.cuda.is_available() if pin_memory is None else pin_memory,
        }
        self.synthetic = SyntheticSpec(**synthetic) if synthetic else None
        self.synthetic_dir = synthetic_dir
        if self.synthetic and not synthetic_dir:
            raise ValueError("data.synthetic needs data.synthetic_dir")
        self.train_set: IdentityFolderDataset | None = None
        self.val_sets: list[VerificationSet] = []

    def prepare_data(self) -> None:
        """Generates the synthetic data if configured (cached; safe to call from every process)."""
        if self.synthetic:
            generate(self.synthetic_dir, self.synthetic)

    @property
    def class_names(self) -> list[str]:
        """Identity names in label order, from a scan of ``root``."""
        if self.train_set is not None:
            return self.train_set.class_names
        if self.root is None:
            raise ValueError("no training data configured: set data.root")
        return scan_identity_folder(self.root).class_names

    @property
    def num_classes(self) -> int:
        """Number of training identities."""
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        """Indexes the training folder (for ``fit``) and loads every verification set."""
        if stage in (None, "fit") and self.train_set is None:
            if self.root is None:
                raise ValueError("training needs data.root: a folder with one sub-folder per identity")
            self.train_set = IdentityFolderDataset(
                self.root, train_transform(self.image_size, self.augment), skip_corrupt=self.skip_corrupt
            )
        if not self.val_sets:
            self.val_sets = [load_pairs_set(name, **paths) for name, paths in self.val_set_paths.items()]

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self.train_set, self.batch_size, shuffle=True, drop_last=True, **self.loader_options)

    def val_dataloader(self) -> list[DataLoader]:
        transform = eval_transform(self.image_size)
        return [
            DataLoader(VerificationImages(val_set, transform), self.eval_batch_size, **self.loader_options)
            for val_set in self.val_sets
        ]
