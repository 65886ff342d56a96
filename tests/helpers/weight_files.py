"""Random-weight files in the formats users bring, written without the reference libraries (h5py and
torch only): deepface's and keras-vggface's Keras 2 HDF5 layout, and an ONNX model exported by torch.

They exercise the product end to end (ingest, search, calibrate, cluster, serve); that the networks
compute what the references compute is proven in tests/test_reference_equivalence.py.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_keras2_h5(path: Path, layers: list[tuple[str, list[tuple[str, tuple[int, ...]]]]], seed: int) -> Path:
    """Keras 2's save_weights layout: a group per layer ('/' in a name nests groups), `weight_names`
    '<layer>/<weight>:0', `layer_names` at the root. Kernels are He-scaled, batch norms near identity."""
    import h5py

    rng = np.random.default_rng(seed)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [name.encode() for name, _ in layers]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for name, weights in layers:
            group = f.create_group(name)
            names = [f"{name}/{w}:0" for w, _ in weights]
            group.attrs["weight_names"] = [n.encode() for n in names]
            for full, (w, shape) in zip(names, weights):
                if w == "kernel":
                    value = rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2 / np.prod(shape[:-1])))
                elif w in ("gamma", "moving_variance"):
                    value = rng.uniform(0.8, 1.2, shape).astype(np.float32)
                else:
                    value = (0.05 * rng.standard_normal(shape)).astype(np.float32)
                group.create_dataset(full, data=value)
    return path


def vgg16_layers(layout: str) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    """deepface's Sequential VGG-Face ('deepface': fc layers as convolutions, auto names) or
    keras-vggface's VGG16 ('keras-vggface': Dense fc layers, named conv1_1 ... fc8)."""
    layers = []
    channels, k = 3, 0
    for block, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, convs + 1):
            k += 1
            name = f"conv2d_{k}" if layout == "deepface" else f"conv{block}_{i}"
            layers.append((name, [("kernel", (3, 3, channels, filters)), ("bias", (filters,))]))
            channels = filters
    if layout == "deepface":
        fcs = [((7, 7, 512, 4096), 4096), ((1, 1, 4096, 4096), 4096), ((1, 1, 4096, 2622), 2622)]
        layers += [(f"conv2d_{k + i + 1}", [("kernel", shape), ("bias", (n,))]) for i, (shape, n) in enumerate(fcs)]
    else:
        fcs = [("fc6", (25088, 4096)), ("fc7", (4096, 4096)), ("fc8", (4096, 2622))]
        layers += [(name, [("kernel", shape), ("bias", (shape[1],))]) for name, shape in fcs]
    return layers


def _bn(name: str, n: int) -> tuple[str, list[tuple[str, tuple[int, ...]]]]:
    return (name, [(w, (n,)) for w in ("gamma", "beta", "moving_mean", "moving_variance")])


def vggface2_layers(se: bool, top: bool = False) -> list[tuple[str, list[tuple[str, tuple[int, ...]]]]]:
    """keras-vggface's RESNET50 / SENET50 layers with weights, by its names."""
    layers = [("conv1/7x7_s2", [("kernel", (7, 7, 3, 64))]), _bn("conv1/7x7_s2/bn", 64)]
    channels = 64
    for stage, blocks, (f1, f3) in ((2, 3, (64, 256)), (3, 4, (128, 512)), (4, 6, (256, 1024)), (5, 3, (512, 2048))):
        for block in range(1, blocks + 1):
            stem = f"conv{stage}_{block}"
            parts = [("1x1_reduce", (1, 1, channels, f1)), ("3x3", (3, 3, f1, f1)), ("1x1_increase", (1, 1, f1, f3))]
            for suffix, shape in parts:
                layers += [(f"{stem}_{suffix}", [("kernel", shape)]), _bn(f"{stem}_{suffix}/bn", shape[-1])]
            if se:
                layers += [(f"{stem}_1x1_down", [("kernel", (1, 1, f3, f3 // 16)), ("bias", (f3 // 16,))]),
                           (f"{stem}_1x1_up", [("kernel", (1, 1, f3 // 16, f3)), ("bias", (f3,))])]
            if block == 1:
                layers += [(f"{stem}_1x1_proj", [("kernel", (1, 1, channels, f3))]), _bn(f"{stem}_1x1_proj/bn", f3)]
            channels = f3
    if top:
        layers.append(("classifier", [("kernel", (2048, 8631)), ("bias", (8631,))]))
    return layers


def write_onnx_embedder(path: Path, size: int = 112, dim: int = 64, seed: int = 0) -> Path:
    """A small convolutional embedding network exported to ONNX with a dynamic batch."""
    import torch

    torch.manual_seed(seed)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 16, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.ReLU(),
        torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten(), torch.nn.Linear(32 * 16, dim),
    ).eval()
    torch.onnx.export(net, (torch.zeros(2, 3, size, size),), str(path), dynamo=False, input_names=["data"],
                      dynamic_axes={"data": {0: "n"}})
    return path
