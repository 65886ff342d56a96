"""VGGFace2's ResNet-50 and SE-ResNet-50 (Cao et al. 2018) from keras-vggface's Keras files: the face
descriptor is the 2,048-d average-pooled output of the last stage, L2-normalised.

The networks are keras-vggface's `RESNET50` and `SENET50` (keras_vggface/models.py):

    conv1/7x7_s2 (64, stride 2, TF "same" padding: 2 before, 3 after at 224 px) bn relu, max pool 3/2
    stages 2-5: 3, 4, 6, 3 bottlenecks of (1x1 reduce [stride 2 in the first block of stages 3-5],
    3x3, 1x1 increase), each convolution without bias and followed by batch norm; the first block
    of each stage has a projection shortcut (1x1, same stride) with its batch norm
    SE-ResNet-50: the bottleneck's output is scaled by a squeeze-and-excitation gate (global mean,
    1x1 down to C/16 with bias, relu, 1x1 up with bias, sigmoid) before the shortcut is added
    average pool 7x7 -> 2,048

Batch-norm epsilon: Keras' default 1e-3 in ResNet-50, 1e-4 in SE-ResNet-50. Both the files with
the classifier top and the "notop" files load (the classifier is not used); layers are matched
by their names, as keras-vggface names them. Input: 224x224, BGR minus the VGGFace2 channel means
(keras-vggface's `preprocess_input(version=2)`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gallery.device import TorchDevice
from gallery.errors import ModelWeightsMissing
from gallery.faces.models.embedder import Embedder
from gallery.faces.models.keras_h5 import KerasFormatError, batch_norm_state, by_name, conv_weight, read_keras_h5
from gallery.faces.models.spec import ModelSpec
from gallery.faces.models.vggface import bgr_mean_preprocess

# keras-vggface utils.preprocess_input(version=2): after RGB -> BGR, subtract these (B, G, R).
VGGFACE2_BGR_MEANS = (91.4953, 103.8827, 131.0912)
# (stage, blocks, reduce channels, output channels, first stride)
STAGES = ((2, 3, 64, 256, 1), (3, 4, 128, 512, 2), (4, 6, 256, 1024, 2), (5, 3, 512, 2048, 2))


class Bottleneck(nn.Module):
    """keras-vggface's resnet/senet conv block (with projection) or identity block."""

    def __init__(self, in_channels: int, reduce: int, out: int, stride: int, project: bool, se: bool,
                 eps: float) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(in_channels, reduce, 1, stride=stride, bias=False)
        self.reduce_bn = nn.BatchNorm2d(reduce, eps=eps)
        self.conv3x3 = nn.Conv2d(reduce, reduce, 3, padding=1, bias=False)
        self.conv3x3_bn = nn.BatchNorm2d(reduce, eps=eps)
        self.increase = nn.Conv2d(reduce, out, 1, bias=False)
        self.increase_bn = nn.BatchNorm2d(out, eps=eps)
        self.proj = nn.Conv2d(in_channels, out, 1, stride=stride, bias=False) if project else None
        self.proj_bn = nn.BatchNorm2d(out, eps=eps) if project else None
        self.se_down = nn.Conv2d(out, out // 16, 1, bias=True) if se else None
        self.se_up = nn.Conv2d(out // 16, out, 1, bias=True) if se else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.reduce_bn(self.reduce(x)))
        y = F.relu(self.conv3x3_bn(self.conv3x3(y)))
        y = self.increase_bn(self.increase(y))
        if self.se_down is not None and self.se_up is not None:
            gate = torch.sigmoid(self.se_up(F.relu(self.se_down(y.mean(dim=(2, 3), keepdim=True)))))
            y = y * gate
        skip = self.proj_bn(self.proj(x)) if self.proj is not None and self.proj_bn is not None else x
        return F.relu(y + skip)


class VGGFace2ResNet(nn.Module):
    """ResNet-50 (se=False) or SE-ResNet-50 (se=True) up to the 2,048-d pooled features."""

    def __init__(self, se: bool) -> None:
        super().__init__()
        eps = 1e-4 if se else 1e-3
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, bias=False)
        self.conv1_bn = nn.BatchNorm2d(64, eps=eps)
        blocks: list[nn.Module] = []
        channels = 64
        for _stage, count, reduce, out, stride in STAGES:
            for b in range(count):
                blocks.append(Bottleneck(channels, reduce, out, stride if b == 0 else 1, b == 0, se, eps))
                channels = out
        self.blocks = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (2, 3, 2, 3))  # TensorFlow's "same" padding of a 7x7 stride-2 convolution at 224 px
        x = F.max_pool2d(F.relu(self.conv1_bn(self.conv1(x))), 3, 2)
        return self.blocks(x).mean(dim=(2, 3))  # AveragePooling2D((7, 7)) over the 7x7 map


def keras_block_names() -> list[str]:
    """keras-vggface's name stem of each bottleneck, in order (e.g. 'conv3_1')."""
    return [f"conv{stage}_{b + 1}" for stage, count, *_ in STAGES for b in range(count)]


def state_dict_from_keras(layers: list, se: bool) -> dict[str, torch.Tensor]:
    """Map keras-vggface's named layers onto VGGFace2ResNet's parameters."""
    named = by_name(layers)

    def layer(name: str):
        try:
            return named[name]
        except KeyError:
            family = "SE-ResNet-50 (senet50)" if se else "ResNet-50 (resnet50)"
            raise KerasFormatError(f"no layer '{name}': not keras-vggface's {family} weights") from None

    state: dict[str, np.ndarray] = {"conv1.weight": conv_weight(layer("conv1/7x7_s2").get("kernel"))}
    state.update(batch_norm_state(layer("conv1/7x7_s2/bn"), "conv1_bn"))
    for i, stem in enumerate(keras_block_names()):
        parts = [("reduce", "1x1_reduce"), ("conv3x3", "3x3"), ("increase", "1x1_increase")]
        if stem.endswith("_1"):  # the first block of a stage projects its shortcut
            parts.append(("proj", "1x1_proj"))
        for torch_name, keras_suffix in parts:
            state[f"blocks.{i}.{torch_name}.weight"] = conv_weight(layer(f"{stem}_{keras_suffix}").get("kernel"))
            state.update(batch_norm_state(layer(f"{stem}_{keras_suffix}/bn"), f"blocks.{i}.{torch_name}_bn"))
        if se:
            for torch_name, keras_suffix in (("se_down", "1x1_down"), ("se_up", "1x1_up")):
                conv = layer(f"{stem}_{keras_suffix}")
                state[f"blocks.{i}.{torch_name}.weight"] = conv_weight(conv.get("kernel"))
                state[f"blocks.{i}.{torch_name}.bias"] = conv.get("bias")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def load_vggface2_module(weights: Path, se: bool) -> VGGFace2ResNet:
    family = "SE-ResNet-50" if se else "ResNet-50"
    module = VGGFace2ResNet(se)
    try:
        state = state_dict_from_keras(read_keras_h5(weights), se)
        expected = {k: v.shape for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
        wrong = [f"{k}: {tuple(state[k].shape)} != {tuple(s)}" for k, s in expected.items()
                 if k in state and state[k].shape != s]
        if wrong:
            raise KerasFormatError("shapes differ from keras-vggface's network: " + "; ".join(wrong[:3]))
    except KerasFormatError as exc:
        raise ModelWeightsMissing(f"{weights} is not VGGFace2 {family} Keras weights: {exc}") from exc
    result = module.load_state_dict(state, strict=False)  # num_batches_tracked counters are not weights
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelWeightsMissing(
            f"{weights}: weights missing for {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return module.eval()


def _load(spec: ModelSpec, weights: Path | None, device: TorchDevice, se: bool) -> Embedder:
    assert weights is not None, "ModelSpec.load locates the weights of a pretrained model"
    return Embedder(spec, load_vggface2_module(weights, se), bgr_mean_preprocess(VGGFACE2_BGR_MEANS), device)


def load_vggface2_resnet50(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for `vggface2-resnet50`."""
    return _load(spec, weights, device, se=False)


def load_vggface2_senet50(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for `vggface2-senet50`."""
    return _load(spec, weights, device, se=True)
