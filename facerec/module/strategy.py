"""DDP whose checkpoints keep Partial FC's centres sharded: every rank writes its own rows beside the file."""

from __future__ import annotations

import uuid
from typing import Any

from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.strategies import DDPStrategy

from facerec.heads.classifiers.partial_fc_checkpoint import SHARD_KEY, remove_stale_shards, write_shard


class ShardedCentresDDPStrategy(DDPStrategy):
    """Lightning's DDP (same arguments; ``trainer=ddp``, ``trainer=ddp_sim``) with sharded Partial FC checkpoints.

    A checkpoint that a sharded head prepared (``SHARD_KEY``) is saved as: every rank writes its centre rows
    to ``<file>.centres/<save id>/`` (one id per save, broadcast from rank 0), then rank 0 writes the file
    naming that folder and deletes older saves' folders. A kill mid-save leaves the previous file with its
    own shards intact. No rank gathers another's rows. Removing a checkpoint removes its shards.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: _PATH, storage_options: Any | None = None) -> None:
        """Writes this rank's centre shard (if any), then rank 0 the checkpoint file (collective if sharded)."""
        if SHARD_KEY not in checkpoint:
            super().save_checkpoint(checkpoint, filepath, storage_options)
            return
        save_id = self.broadcast(uuid.uuid4().hex[:16])
        write_shard(checkpoint, filepath, save_id)
        self.barrier("partial_fc_shards_written")
        super().save_checkpoint(checkpoint, filepath, storage_options)
        if self.is_global_zero:
            remove_stale_shards(filepath, keep=save_id)

    def remove_checkpoint(self, filepath: _PATH) -> None:
        """Removes the checkpoint file and its centre shards (rank 0)."""
        super().remove_checkpoint(filepath)
        if self.is_global_zero:
            remove_stale_shards(filepath, keep=None)
