"""What an embedding model is, without loading it: dimension, chip geometry, threshold, loader.

A gallery is stamped with `ModelSpec.stamp()`; a gallery never mixes two stamps. The loader is named
as "module:function" and imported only when the model is loaded, so reading the registry imports no
torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gallery.device import TorchDevice
    from gallery.faces.models.embedder import Embedder


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about an embedding model, without loading it."""

    name: str
    dim: int
    input_size: int
    # Where MTCNN's 5 landmarks (left eye, right eye, nose, left mouth, right mouth; "left" = smaller x
    # in the image) should land in the model's square input chip, in chip pixels.
    template: tuple[tuple[float, float], ...]
    preprocessing: str  # a version string: changing alignment or normalisation changes it
    default_threshold: float  # cosine similarity above which two faces are called the same person
    threshold_source: str
    pretrained: bool
    offline: bool  # True when the weights come with a PyPI package and need no download
    description: str
    loader: str  # "module:function" taking (spec, weights, device) and returning an Embedder
    weights_filename: str | None = None
    weights_url: str | None = None
    warning: str | None = None  # shown wherever the model appears (e.g. untrained weights)
    # Flip test-time averaging: a face's embedding is the renormalised mean of its chip's and its mirror
    # image's. A gallery keeps the setting it was built with (it is in the stamp when on).
    flip: bool = False

    def stamp(self) -> dict:
        """What a gallery records and compares: the same stamp means compatible embeddings."""
        stamp = {
            "name": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }
        if self.flip:
            stamp["flip"] = True
        return stamp

    def template_array(self) -> np.ndarray:
        return np.asarray(self.template, dtype=np.float32)

    def load(self, device: TorchDevice, weights: Path | None = None) -> Embedder:
        """The network with its weights on `device` (half precision where the device says so)."""
        module_name, function = self.loader.split(":")
        return getattr(importlib.import_module(module_name), function)(self, weights, device)
