"""The run's log file (``<run dir>/<task>.log``), failing with the run directory named when it cannot be written."""

from __future__ import annotations

import logging
from pathlib import Path


class RunLogFileHandler(logging.FileHandler):
    """``logging.FileHandler`` for Hydra's ``job_logging`` (``conf/hydra/default.yaml``).

    Hydra opens the log before the task runs, and ``logging.config`` turns any error into
    ``Unable to configure handler 'file'``; this handler exits instead (``SystemExit``, status 1) with the
    file, the reason and the fix.
    """

    def __init__(self, filename: str, mode: str = "a", encoding: str | None = None, delay: bool = False) -> None:
        try:
            super().__init__(filename, mode, encoding, delay)
        except OSError as error:
            raise SystemExit(
                f"error: cannot write the run log {filename} ({error.strerror or error}): the run directory "
                f"{Path(filename).parent} must be writable; choose another with hydra.run.dir=DIR "
                "(hydra.sweep.dir=DIR for -m sweeps)"
            ) from None
