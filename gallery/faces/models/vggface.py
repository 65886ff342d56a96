"""VGG-Face (Parkhi et al. 2015): VGG-16 trained on 2,622 identities; the face descriptor is fc7
(4,096-d, after its ReLU), L2-normalised.

Weights from Keras files, in either published layout:

- deepface's `vgg_face_weights.h5`: a Sequential model with fc6/fc7/fc8 as convolutions
  (kernels 7x7x512x4096, 1x1x4096x4096, 1x1x4096x2622); deepface's descriptor is fc7 after its ReLU;
- keras-vggface's `rcmalli_vggface_tf_vgg16.h5`: fc6/fc7/fc8 as Dense layers after Flatten
  (25088x4096 over (h, w, c), 4096x4096, 4096x2622); the descriptor is the `fc7/relu` output.
  (keras-vggface's "notop" file has no fc layers and so no fc7: it is refused.)

Both are loaded the way Keras loads them, by layer order: 13 convolutions, then fc6 and fc7 (fc8,
the classifier, is not used). Input: 224x224, BGR, minus the training set's channel means
(keras-vggface's `preprocess_input(version=1)`, deepface's "VGGFace" normalisation).
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
from gallery.faces.models.keras_h5 import KerasFormatError, KerasLayer, conv_weight, read_keras_h5
from gallery.faces.models.spec import ModelSpec

# keras-vggface utils.preprocess_input(version=1): after RGB -> BGR, subtract these (B, G, R).
VGGFACE1_BGR_MEANS = (93.5940, 104.7624, 129.1863)
# (out channels) per convolution, 0 = 2x2 max pool: VGG-16's configuration D
VGG16_LAYOUT = (64, 64, 0, 128, 128, 0, 256, 256, 256, 0, 512, 512, 512, 0, 512, 512, 512, 0)


class VGGFace16(nn.Module):
    """VGG-16 up to fc7 (after its ReLU); input (N, 3, 224, 224) from `bgr_mean_preprocess`."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 3
        for out in VGG16_LAYOUT:
            if out == 0:
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
        self.features = nn.Sequential(*layers)
        self.fc6 = nn.Linear(512 * 7 * 7, 4096)
        self.fc7 = nn.Linear(4096, 4096)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x), 1)
        return F.relu(self.fc7(F.relu(self.fc6(x))))


def bgr_mean_preprocess(bgr_means: tuple[float, float, float]):
    """RGB 0..255 chips -> BGR minus per-channel means (Caffe's convention, kept by keras-vggface)."""
    mean = torch.tensor(bgr_means, dtype=torch.float32).view(1, 3, 1, 1)

    def preprocess(x: torch.Tensor) -> torch.Tensor:
        return x.flip(1) - mean.to(x.device, x.dtype)

    return preprocess


def _fc_kernel(layer: KerasLayer, inputs: tuple[int, ...], outputs: int) -> np.ndarray:
    """A fully connected layer stored as a convolution (kh, kw, in, out) or a Dense (in, out)."""
    kernel = layer.get("kernel")
    n_in = int(np.prod(inputs))
    if kernel.shape == (*inputs, outputs) or kernel.shape == (n_in, outputs):
        return kernel.reshape(*inputs, outputs)
    raise KerasFormatError(f"layer '{layer.name}': expected a {inputs + (outputs,)} kernel, found {kernel.shape}")


def state_dict_from_keras(layers: list[KerasLayer]) -> dict[str, torch.Tensor]:
    """Map the file's layers, in order, onto VGGFace16's parameters."""
    convs = [c for c in VGG16_LAYOUT if c]
    if len(layers) == len(convs):
        raise KerasFormatError(
            "the file has the 13 convolutions but no fc6/fc7 (keras-vggface's 'notop' file?); VGG-Face's "
            "descriptor is fc7: use the file with the top (rcmalli_vggface_tf_vgg16.h5 or vgg_face_weights.h5)"
        )
    if len(layers) not in (len(convs) + 2, len(convs) + 3):
        raise KerasFormatError(f"expected VGG-16's 13 convolutions and fc6, fc7 (fc8), the file has {len(layers)} "
                               "layers with weights")
    state: dict[str, np.ndarray] = {}
    channels = 3
    positions = [i for i, c in enumerate(VGG16_LAYOUT) if c]
    for k, (layer, out) in enumerate(zip(layers, convs)):
        kernel = layer.get("kernel")
        if kernel.shape != (3, 3, channels, out):
            raise KerasFormatError(f"layer {k} '{layer.name}': expected a (3, 3, {channels}, {out}) kernel, "
                                   f"found {kernel.shape}")
        module = positions[k] + k  # index in `features`: each earlier convolution also added a ReLU
        state[f"features.{module}.weight"] = conv_weight(kernel)
        state[f"features.{module}.bias"] = layer.get("bias")
        channels = out
    fc6, fc7 = layers[len(convs)], layers[len(convs) + 1]
    state["fc6.weight"] = conv_weight(_fc_kernel(fc6, (7, 7, 512), 4096)).reshape(4096, -1)
    state["fc6.bias"] = fc6.get("bias")
    state["fc7.weight"] = np.ascontiguousarray(_fc_kernel(fc7, (1, 1, 4096), 4096).reshape(4096, 4096).T)
    state["fc7.bias"] = fc7.get("bias")
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def load_vggface16_module(weights: Path) -> VGGFace16:
    try:
        state = state_dict_from_keras(read_keras_h5(weights))
    except KerasFormatError as exc:
        raise ModelWeightsMissing(f"{weights} is not VGG-Face's Keras weights: {exc}") from exc
    module = VGGFace16()
    module.load_state_dict(state, strict=True)
    return module.eval()


def load_vggface16(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for `vggface-vgg16`."""
    assert weights is not None, "ModelSpec.load locates the weights of a pretrained model"
    return Embedder(spec, load_vggface16_module(weights), bgr_mean_preprocess(VGGFACE1_BGR_MEANS), device)
