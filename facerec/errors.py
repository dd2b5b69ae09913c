"""facerec's error types: untrusted files, checkpoints, class-count mismatches."""

from __future__ import annotations


class DataFileError(ValueError):
    """A malformed or unsafe data file (pairs list, ``.bin``, ``.rec``/``.idx``, image, ...); every reader raises
    it (or a subclass) naming the file, the place in it and what was expected.
    """


class CheckpointError(DataFileError):
    """A file given as a checkpoint that facerec cannot read; the message says what it is."""


def class_count_error(head_classes: int, data_classes: int) -> ValueError:
    """Error for a checkpoint's head and training data with different identity counts."""
    return ValueError(
        f"the head has {head_classes} classes but the training data has {data_classes} identities. "
        "A checkpoint resumes only on its own identities; to fine-tune on new ones with a new head, export "
        "the embedding network (torch.save(FaceRecognitionModule.load_embedding_net(CKPT).net.state_dict(), "
        "'net.pth')) and start a new run from it: python train.py backbone.checkpoint_path=net.pth (no ckpt_path)"
    )
