"""MTCNN's three networks (P-, R-, O-Net) with facenet-pytorch's layers and its shipped weights.

The architecture and parameter names are facenet-pytorch's (`facenet_pytorch/models/mtcnn.py`), so its
state dicts (`facenet_pytorch/data/{pnet,rnet,onet}.pt`, inside the installed package) load unchanged.
They are defined here rather than imported because importing `facenet_pytorch` imports torchvision's
whole package (its `detect_face` helpers), which costs a photo search seconds of start-up; the weights
file is found without importing the package. tests/test_detect_batched.py checks both give the same
outputs.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from gallery.errors import ModelWeightsMissing


def weights_path(net: str) -> Path:
    """facenet-pytorch's weights file of one network ('pnet', 'rnet', 'onet'), found without importing it."""
    spec = importlib.util.find_spec("facenet_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec is not None else []:
        path = Path(folder) / "data" / f"{net}.pt"
        if path.is_file():
            return path
    raise ModelWeightsMissing(
        f"The face detector's weights ({net}.pt) ship with facenet-pytorch, which is not installed (or lacks "
        "them): pip install 'facenet-pytorch==2.5.3'."
    )


def _load(module: nn.Module, net: str) -> nn.Module:
    module.load_state_dict(torch.load(weights_path(net), map_location="cpu", weights_only=True))
    return module.eval()


class PNet(nn.Module):
    """Proposal network: fully convolutional, 12-pixel cells; returns (box offsets, face probabilities)."""

    def __init__(self, pretrained: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 10, kernel_size=3)
        self.prelu1 = nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2 = nn.Conv2d(10, 16, kernel_size=3)
        self.prelu2 = nn.PReLU(16)
        self.conv3 = nn.Conv2d(16, 32, kernel_size=3)
        self.prelu3 = nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, kernel_size=1)
        self.softmax4_1 = nn.Softmax(dim=1)
        self.conv4_2 = nn.Conv2d(32, 4, kernel_size=1)
        if pretrained:
            _load(self, "pnet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x)))))))
        return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))


class RNet(nn.Module):
    """Refinement network on 24×24 crops; returns (box offsets, face probabilities)."""

    def __init__(self, pretrained: bool = True) -> None:
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
        self.softmax5_1 = nn.Softmax(dim=1)
        self.dense5_2 = nn.Linear(128, 4)
        if pretrained:
            _load(self, "rnet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.pool2(self.prelu2(self.conv2(x)))))
        x = x.permute(0, 3, 2, 1).contiguous()  # the original (Caffe) weights flatten width first
        x = self.prelu4(self.dense4(x.view(x.shape[0], -1)))
        return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))


class ONet(nn.Module):
    """Output network on 48×48 crops; returns (box offsets, 5 landmarks, face probabilities)."""

    def __init__(self, pretrained: bool = True) -> None:
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
        self.softmax6_1 = nn.Softmax(dim=1)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)
        if pretrained:
            _load(self, "onet")

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))
        x = x.permute(0, 3, 2, 1).contiguous()
        x = self.prelu5(self.dense5(x.view(x.shape[0], -1)))
        return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))
