"""Lightning callbacks."""

from facerec.callbacks.feature_plot import FeaturePlot
from facerec.callbacks.interrupt import InterruptCheckpoint
from facerec.callbacks.nonfinite import NonFiniteLossError, NonFiniteLossGuard
from facerec.callbacks.rng_state import RNGStateCallback
from facerec.callbacks.run_config import RunConfigRecord
from facerec.callbacks.throughput import ImagesPerSecond
from facerec.callbacks.verification import VerificationCallback
from facerec.callbacks.wandb_summary import WandbBestSummary

__all__ = [
    "FeaturePlot",
    "ImagesPerSecond",
    "InterruptCheckpoint",
    "NonFiniteLossError",
    "NonFiniteLossGuard",
    "RNGStateCallback",
    "RunConfigRecord",
    "VerificationCallback",
    "WandbBestSummary",
]
