"""``python -m facerec.run.consolidate SRC DST``: a checkpoint written by several processes, whose Partial FC
centres lie in shard files beside it, as one ordinary file (what one process writes; resumable anywhere)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from facerec.heads.classifiers.partial_fc_checkpoint import consolidate, is_sharded
from facerec.module.checkpoint import read_training_checkpoint
from facerec.run.outputs import check_distinct, check_output_file


def consolidate_file(source: str | Path, target: str | Path, overwrite: bool = False) -> Path:
    """Writes ``source`` with its centres and their optimizer state gathered from its shard files to ``target``.

    ``target`` is checked before anything is read; it is written to a temporary file renamed into place, so a
    failure leaves no partial file. Needs host memory for the whole centre matrix.

    Raises:
        FileExistsError, PermissionError, IsADirectoryError: ``target`` cannot be written new (or replaced with
            ``overwrite``).
        ValueError: ``target`` is ``source``, or ``source`` already holds its centres.
        FileNotFoundError, CheckpointError: ``source`` or a shard file is missing or unreadable.
    """
    source, target = Path(source), Path(target)
    check_distinct([("SRC", source), ("DST", target)])
    check_output_file(target, overwrite, "DST", "--overwrite")
    checkpoint = read_training_checkpoint(source)
    if not is_sharded(checkpoint):
        raise ValueError(f"{source} holds its class centres already (one process wrote it): use it as it is")
    consolidate(checkpoint, source)
    partial = target.with_name(f".{target.name}.partial")
    torch.save(checkpoint, partial)
    partial.replace(target)
    return target


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; exit 2 with a message on stderr for bad input."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0].split(": ", 1)[1])
    parser.add_argument("src", help="checkpoint written by several processes (its .centres/ folder beside it)")
    parser.add_argument("dst", help="the single-file checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace DST if it exists")
    args = parser.parse_args(argv)
    try:
        path = consolidate_file(args.src, args.dst, args.overwrite)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
