"""The LightningDataModule: training identities plus verification sets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from facerec.data.synthetic import SyntheticSpec, generate
from facerec.data.training.folder import IdentityFolderDataset
from facerec.data.training.rec_dataset import RecordDataset
from facerec.data.training.sampling import EpochSeededDistributedSampler, EpochSeededSampler, seed_worker
from facerec.data.training.selection import IdentitySubset, restrict_identities
from facerec.data.training.training_set import open_training_set
from facerec.data.transforms import Crop, check_crop, eval_transform, train_transform
from facerec.data.verification.sets import VerificationImages, VerificationSet, load_verification_set


class FaceDataModule(L.LightningDataModule):
    """Training identities (identity folder or ``.rec``) and verification sets.

    Images are decoded to RGB uint8 (H, W, 3) and reach the model as float (3, H, W) in [-1, 1],
    (H, W) = ``image_size``.

    Args:
        root: Training data: one sub-folder per identity (``format=folder``) or a folder with ``train.rec``
            + ``train.idx`` (``format=rec``); None for evaluation only.
        val_sets: ``{name: {"pairs": pairs.txt, "images": root[, "drop_missing": bool][, "detect": bool]}}`` or
            ``{name: {"bin": insightface .bin}}``.
        format: ``folder`` or ``rec``.
        image_size: (H, W) the network sees.
        crop: Applied to every image before resizing: centre fraction in (0, 1], pixel box
            ``[top, left, height, width]``, or None.
        min_images_per_identity: Identities with fewer images are dropped.
        max_images_per_identity: Identities with more keep a random subset (from ``seed``); None keeps all.
        strict_size: Reject images not of ``image_size`` instead of resizing them.
        batch_size: Training batch size per process.
        eval_batch_size: Batch size for verification images.
        num_workers: DataLoader workers.
        persistent_workers: Keep workers alive between epochs.
        prefetch_factor: Batches each worker loads ahead.
        pin_memory: None pins when CUDA is available.
        augment: ``none``, ``default`` or ``strong``.
        skip_corrupt: Replace undecodable training images instead of stopping.
        synthetic: :class:`~facerec.data.synthetic.SyntheticSpec` fields: generate synthetic data into
            ``synthetic_dir``.
        synthetic_dir: Synthetic data cache.
        seed: Training order and augmentation come from ``seed + epoch``, so resumed runs repeat them.

    Raises:
        ValueError: ``synthetic`` without ``synthetic_dir``.
    """

    def __init__(
        self,
        root: str | None = None,
        val_sets: Mapping[str, Mapping[str, Any]] | None = None,
        format: str = "folder",
        image_size: tuple[int, int] = (112, 112),
        crop: Crop = None,
        min_images_per_identity: int = 1,
        max_images_per_identity: int | None = None,
        strict_size: bool = False,
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
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.root = root
        self.val_set_paths = {name: dict(options) for name, options in (val_sets or {}).items()}
        self.format = format
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.crop = check_crop(crop)
        self.min_images_per_identity = min_images_per_identity
        self.max_images_per_identity = max_images_per_identity
        self.expected_size = self.image_size if strict_size else None
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
        self.seed = seed
        if self.synthetic and not synthetic_dir:
            raise ValueError("data.synthetic needs data.synthetic_dir")
        self.train_set: IdentityFolderDataset | RecordDataset | IdentitySubset | None = None
        self.val_sets: list[VerificationSet] = []

    def prepare_data(self) -> None:
        """Generates the synthetic data if configured (cached; safe on every process)."""
        if self.synthetic:
            generate(self.synthetic_dir, self.synthetic)

    def _training_set(self) -> IdentityFolderDataset | RecordDataset | IdentitySubset:
        if self.train_set is None:
            if self.root is None:
                raise ValueError(
                    "training needs data.root: a folder with one sub-folder per identity (data=folder) "
                    "or holding train.rec and train.idx (data=rec)"
                )
            train_set = open_training_set(
                self.root,
                self.format,
                train_transform(self.image_size, self.augment, self.crop),
                self.skip_corrupt,
                self.expected_size,
            )
            train_set = restrict_identities(
                train_set, self.min_images_per_identity, self.max_images_per_identity, self.seed
            )
            if len(train_set.class_names) < 2:
                hint = train_set.index.wrong_root_hint() if isinstance(train_set, IdentityFolderDataset) else None
                raise ValueError(
                    f"{self.root}: {len(train_set.class_names)} training identity "
                    f"({', '.join(train_set.class_names)}); face recognition needs at least 2 "
                    f"(data.root holds one sub-folder per identity). {hint or ''}".rstrip()
                )
            self.train_set = train_set
        return self.train_set

    @property
    def class_names(self) -> list[str]:
        """Identity names in label order (reads the index only)."""
        return self._training_set().class_names

    @property
    def num_classes(self) -> int:
        """Number of training identities."""
        return len(self.class_names)

    def setup(self, stage: str | None = None) -> None:
        """Opens the training data (for ``fit``) and loads every verification set."""
        if stage in (None, "fit"):
            self._training_set()
        if not self.val_sets:
            self.val_sets = [
                load_verification_set(name, options, self.expected_size) for name, options in self.val_set_paths.items()
            ]

    def train_dataloader(self) -> DataLoader:
        """Training batches (drop_last), order and augmentation fixed by ``seed``, epoch and rank.

        Raises ValueError if a process gets less than one full batch.
        """
        trainer = self.trainer
        world_size = trainer.world_size if trainer is not None else 1
        per_process = math.ceil(len(self.train_set) / world_size)
        if per_process < self.batch_size:
            raise ValueError(
                f"data.batch_size={self.batch_size} is larger than the {per_process} training images each of the "
                f"{world_size} process(es) gets ({len(self.train_set)} in all): not one full batch, nothing would "
                f"train. Lower data.batch_size to at most {per_process}"
            )
        if world_size > 1:
            sampler = EpochSeededDistributedSampler(self.train_set, trainer.world_size, trainer.global_rank, self.seed)
        else:
            sampler = EpochSeededSampler(self.train_set, self.seed)
        return DataLoader(
            self.train_set,
            self.batch_size,
            sampler=sampler,
            drop_last=True,
            worker_init_fn=seed_worker,
            **self.loader_options,
        )

    def val_dataloader(self) -> list[DataLoader]:
        transform = eval_transform(self.image_size, self.crop)
        return [
            DataLoader(
                VerificationImages(val_set.images, transform, self.expected_size),
                self.eval_batch_size,
                **self.loader_options,
            )
            for val_set in self.val_sets
        ]
