"""The run's log file (``<run dir>/<task>.log``), failing with the run directory named when unwritable."""

from __future__ import annotations

import logging
from pathlib import Path


class RunLogFileHandler(logging.FileHandler):
    """``FileHandler`` for Hydra's ``job_logging``: if the file cannot be opened, exits (status 1) with file, reason
    and fix, instead of ``logging.config``'s "Unable to configure handler 'file'".
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
