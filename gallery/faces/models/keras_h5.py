"""Keras weight files (`.h5`) read into numpy arrays, for the networks that users bring from Keras.

The layout is Keras' HDF5 format (written by Keras 2's `save_weights`/`save` and by Keras 3's legacy
HDF5 writer): the root group, or its `model_weights` group in a whole-model file, has the attribute
`layer_names` in model order; each layer's group has `weight_names` in the layer's own weight order,
each naming a dataset (`conv2d_1/kernel:0` in Keras 2 files, `model/conv2d/kernel` in Keras 3 ones).
Keras itself loads such a file by layer order (or by name), so a reader keeps both.

h5py is imported here only: the product needs it only to read these files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


class KerasFormatError(ValueError):
    """The file is not a Keras HDF5 weights file, or not of the expected network."""


@dataclass
class KerasLayer:
    """One layer with weights: its name and its arrays by short name (kernel, bias, gamma, beta,
    moving_mean, moving_variance, ...)."""

    name: str
    weights: dict[str, np.ndarray]

    def get(self, key: str) -> np.ndarray:
        try:
            return self.weights[key]
        except KeyError:
            known = sorted(self.weights)
            raise KerasFormatError(f"layer '{self.name}' has no '{key}' weight (it has {known})") from None


def _short(weight_name: str) -> str:
    """'block1/conv2d_1/kernel:0' -> 'kernel'."""
    return weight_name.rsplit("/", 1)[-1].split(":", 1)[0]


def _text(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def read_keras_h5(path: Path) -> list[KerasLayer]:
    """The layers that have weights, in the file's layer order."""
    try:
        import h5py
    except ImportError:
        raise KerasFormatError(
            "reading Keras .h5 weights needs h5py: pip install 'face-gallery[keras-weights]' (or pip install h5py)"
        ) from None
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise KerasFormatError(f"not an HDF5 file ({exc})") from None
    with f:
        root = f["model_weights"] if "model_weights" in f else f
        if "layer_names" not in root.attrs:
            raise KerasFormatError("an HDF5 file without Keras' 'layer_names' attribute (not a Keras weights file)")
        layers: list[KerasLayer] = []
        for raw in root.attrs["layer_names"]:
            name = _text(raw)
            group = root[name]
            names = [_text(n) for n in group.attrs.get("weight_names", [])]
            if not names:
                continue
            weights: dict[str, np.ndarray] = {}
            for weight_name in names:
                key = _short(weight_name)
                if key in weights:
                    raise KerasFormatError(f"layer '{name}' has two weights named '{key}'")
                weights[key] = np.asarray(group[weight_name], dtype=np.float32)
            layers.append(KerasLayer(name, weights))
    return layers


def by_name(layers: list[KerasLayer]) -> dict[str, KerasLayer]:
    return {layer.name: layer for layer in layers}


def conv_weight(kernel: np.ndarray) -> np.ndarray:
    """A Keras Conv2D kernel (kh, kw, in, out) as a torch Conv2d weight (out, in, kh, kw)."""
    if kernel.ndim != 4:
        raise KerasFormatError(f"expected a 4-d convolution kernel, got shape {kernel.shape}")
    return np.ascontiguousarray(kernel.transpose(3, 2, 0, 1))


def batch_norm_state(layer: KerasLayer, prefix: str) -> dict[str, np.ndarray]:
    """A Keras BatchNormalization layer as torch BatchNorm state (a layer built with scale=False or
    center=False has no gamma or beta: 1 and 0)."""
    mean = layer.get("moving_mean")
    return {
        f"{prefix}.weight": layer.weights.get("gamma", np.ones_like(mean)),
        f"{prefix}.bias": layer.weights.get("beta", np.zeros_like(mean)),
        f"{prefix}.running_mean": mean,
        f"{prefix}.running_var": layer.get("moving_variance"),
    }
