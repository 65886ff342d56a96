"""Any face-embedding ONNX model, run by onnxruntime (CPU; the CUDA execution provider when the device
is a GPU and onnxruntime-gpu is installed).

The model file says its input shape and output dimension; a preset (gallery.faces.models.registry
ONNX_PRESETS) says what the file cannot: colour order, normalisation and the 5-point template.
insightface's rule is kept for the `arcface-112` preset: a graph whose first 8 nodes include a
subtraction and a multiplication (the mxnet conversions) normalises its own input and gets raw pixels.

onnxruntime and onnx are imported here only: the product needs them only for these models.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from gallery.device import TorchDevice
from gallery.errors import ModelMismatch, ModelWeightsMissing
from gallery.faces.models.spec import ModelSpec

log = logging.getLogger(__name__)


def self_normalising(path: Path) -> bool:
    """insightface ArcFaceONNX's test: 'Sub'/'_minus' and 'Mul'/'_mul' nodes among the first 8."""
    try:
        import onnx
    except ImportError:
        raise ModelWeightsMissing(
            "the arcface-112 preset reads the model graph with the 'onnx' package: "
            "pip install 'face-gallery[onnx]' (or pip install onnx)"
        ) from None
    graph = onnx.load(str(path), load_external_data=False).graph
    names = [node.name for node in graph.node[:8]]
    has_sub = any(n.startswith(("Sub", "_minus")) for n in names)
    has_mul = any(n.startswith(("Mul", "_mul")) for n in names)
    return has_sub and has_mul


def _providers(device: TorchDevice) -> list:
    import onnxruntime as ort

    if device.is_cuda and "CUDAExecutionProvider" in ort.get_available_providers():
        index = int(device.name.split(":")[1]) if ":" in device.name else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    if device.is_cuda:
        log.warning("onnxruntime has no CUDA execution provider here (install onnxruntime-gpu): running on the CPU")
    return ["CPUExecutionProvider"]


class OnnxEmbedder:
    """An onnxruntime session with its preset's preprocessing; same interface as `Embedder`."""

    def __init__(self, spec: ModelSpec, path: Path, device: TorchDevice) -> None:
        from gallery.faces.models.registry import ONNX_PRESETS

        try:
            import onnxruntime as ort
        except ImportError:
            raise ModelWeightsMissing(
                "--model onnx runs models with onnxruntime: pip install 'face-gallery[onnx]' "
                "(or onnxruntime-gpu for the GPU)"
            ) from None
        assert spec.preset is not None
        preset = ONNX_PRESETS[spec.preset]
        try:
            self.session = ort.InferenceSession(str(path), providers=_providers(device))
        except Exception as exc:  # onnxruntime raises its own types for unreadable or invalid files
            raise ModelWeightsMissing(f"{path} is not an ONNX model onnxruntime can run: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ModelWeightsMissing(f"{path}: a face-embedding model has one input, this one has {len(inputs)}")
        self.input_name = inputs[0].name
        shape = list(inputs[0].shape)
        if len(shape) != 4:
            raise ModelWeightsMissing(f"{path}: expected an image input (N, C, H, W), found shape {shape}")
        self.channels_last = shape[3] == 3 and shape[1] != 3
        height, width = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        size = self.size = spec.input_size
        if any(isinstance(d, int) and d != size for d in (height, width)):
            raise ModelMismatch(
                f"{path} takes {height}x{width} images, and preset '{preset.name}' is for {size}x{size}: "
                f"choose the preset of this model's family (--preset: {', '.join(ONNX_PRESETS)})"
            )
        self.fixed_batch = shape[0] if isinstance(shape[0], int) else None
        self.dtype = np.float16 if inputs[0].type == "tensor(float16)" else np.float32
        self.flip = preset.channels == "BGR"
        self.mean, self.std = preset.mean, preset.std
        if preset.self_normalising_check and self_normalising(path):
            self.mean, self.std = 0.0, 1.0
        dim = self._output_dim()
        if spec.dim and spec.dim != dim:
            raise ModelMismatch(f"{path} gives {dim}-d embeddings; the gallery's model gives {spec.dim}-d ones.")
        self.spec = replace(spec, dim=dim)

    def _output_dim(self) -> int:
        last = self.session.get_outputs()[0].shape[-1]
        if isinstance(last, int):
            return last
        probe = np.zeros(self._input_shape(1), dtype=self.dtype)
        return int(np.prod(self.session.run(None, {self.input_name: probe})[0].shape[1:]))

    def _input_shape(self, n: int) -> tuple[int, ...]:
        shape = self.session.get_inputs()[0].shape
        hw = (shape[1], shape[2]) if self.channels_last else (shape[2], shape[3])
        side = [d if isinstance(d, int) else self.size for d in hw]
        return (n, *side, 3) if self.channels_last else (n, 3, *side)

    def embed(self, chips: torch.Tensor) -> torch.Tensor:
        """chips: (N, 3, S, S) uint8 RGB aligned to the preset's template. Returns (N, D) float32 on CPU."""
        if chips.shape[0] == 0:
            return torch.empty((0, self.spec.dim), dtype=torch.float32)
        x = chips.cpu().float()
        if self.flip:
            x = x.flip(1)
        x = (x - self.mean) / self.std
        if self.channels_last:
            x = x.permute(0, 2, 3, 1)
        batch = np.ascontiguousarray(x.numpy(), dtype=self.dtype)
        step = self.fixed_batch or len(batch)
        parts = [self.session.run(None, {self.input_name: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        out = torch.from_numpy(np.concatenate(parts).reshape(len(batch), -1).astype(np.float32))
        return F.normalize(out, dim=1)


def load_onnx(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> OnnxEmbedder:
    """The registry's loader for `onnx` (spec from `onnx_spec(preset)` or a gallery's stamp)."""
    assert weights is not None, "ModelSpec.load locates the model file"
    return OnnxEmbedder(spec, weights, device)
