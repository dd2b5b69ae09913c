"""The interface of an ``eval.py`` evaluation set: one entry of ``eval_sets``, built from ``conf/eval_set/``."""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

from facerec.inference import FaceEmbedder


class EvalSet(ABC):
    """One evaluation set: built from its config entry, loaded before any embedding, then run.

    Args:
        name: The set's name in ``eval_sets``; it names its row and its output files.
        batch_size: Images per embedding batch; None: the data config's ``eval_batch_size``.
        num_workers: Loader processes; None: the data config's ``num_workers``.

    Attributes:
        config_name: Its option in the config group ``conf/eval_set/``.
        title: The title of its kind's result table.
        columns: The metrics shown in that table.
        folder_options: The options that name folders, checked by :meth:`check`.
    """

    config_name: ClassVar[str]
    title: ClassVar[str]
    columns: ClassVar[tuple[str, ...]]
    folder_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str, batch_size: int | None = None, num_workers: int | None = None) -> None:
        self.name = name
        self.batch_size = batch_size
        self.num_workers = num_workers

    def check(self) -> None:
        """Checks that its folder options name folders, before any set reads its files.

        Raises:
            FileNotFoundError: Naming the option and the folder.
        """
        for option in self.folder_options:
            folder = getattr(self, option)
            if folder is not None and not Path(folder).is_dir():
                raise FileNotFoundError(f"eval_sets.{self.name}.{option}: folder not found: {folder}")

    @abstractmethod
    def load(self) -> None:
        """Reads and checks its files, so that a bad file fails before any image of any set is embedded."""

    @abstractmethod
    def run(self, embedder: FaceEmbedder, output_dir: Path, batch_size: int, num_workers: int) -> dict[str, float]:
        """Embeds its images and scores them.

        Args:
            embedder: The model to evaluate.
            output_dir: The run directory, for the set's output files.
            batch_size: Images per embedding batch.
            num_workers: Loader processes.

        Returns:
            ``{metric: value}``, with (at least) the keys of :attr:`columns`.
        """
