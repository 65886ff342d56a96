"""What an embedding model is, without loading it: dimension, chip geometry, threshold, loader.

A gallery is stamped with `ModelSpec.stamp()`; a gallery never mixes two stamps. A spec is *bound*
to a weights file when it is loaded: the file's SHA-256 joins the stamp, so two weight files for one
architecture are two models. The loader is named as "module:function" and imported only when the
model is loaded, so reading the registry imports no torch.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch

    from gallery.device import TorchDevice


class EmbeddingModel(Protocol):
    """A loaded model: aligned uint8 RGB chips (N, 3, S, S) in, (N, D) float32 unit vectors out (CPU)."""

    spec: ModelSpec

    def embed(self, chips: torch.Tensor) -> torch.Tensor: ...


@dataclass(frozen=True)
class ModelSpec:
    """Everything the pipeline needs to know about an embedding model, without loading it."""

    name: str
    dim: int  # 0: read from the weights file when it is loaded (ONNX models)
    input_size: int
    # Where MTCNN's 5 landmarks (left eye, right eye, nose, left mouth, right mouth; "left" = smaller x
    # in the image) should land in the model's square input chip, in chip pixels.
    template: tuple[tuple[float, float], ...]
    preprocessing: str  # a version string: changing alignment or normalisation changes it
    # cosine similarity above which two faces are the same person (registry.UNPUBLISHED, above any
    # cosine, for a model with no published threshold: it names no one until calibrated)
    default_threshold: float
    threshold_source: str
    pretrained: bool
    offline: bool  # True when the weights come with a PyPI package and need no download
    description: str
    loader: str  # "module:function" taking (spec, weights path or None, device) and returning an Embedder
    weights_filename: str | None = None
    weights_url: str | None = None
    warning: str | None = None  # shown wherever the model appears (e.g. untrained weights)
    # "module:function" returning the path of weights that ship inside an installed package
    packaged_weights: str | None = None
    weights_formats: str = ""  # what --weights accepts, for messages and `gallery models`
    # where other tools keep this model's file (deepface, keras-vggface): found there without --weights
    weights_elsewhere: tuple[str, ...] = ()
    preset: str | None = None  # the input convention of a model family run from a file (ONNX)
    # The SHA-256 of the weights file this spec is bound to (None: unbound, or a gallery stamped
    # before weights were hashed). Part of the stamp.
    weights_sha256: str | None = None
    weights_path: Path | None = field(default=None, compare=False)  # where the bound file was found

    # Flip test-time averaging: a face's embedding is the renormalised mean of its chip's and its mirror
    # image's. A gallery keeps the setting it was built with (it is in the stamp when on).
    flip: bool = False

    @property
    def needs_weights(self) -> bool:
        return self.pretrained

    def stamp(self) -> dict:
        """What a gallery records and compares: the same stamp means compatible embeddings."""
        stamp = {
            "name": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }
        if self.preset is not None:
            stamp["preset"] = self.preset
        if self.weights_sha256 is not None:
            stamp["weights_sha256"] = self.weights_sha256
        if self.flip:
            stamp["flip"] = True
        return stamp

    def template_array(self) -> np.ndarray:
        return np.asarray(self.template, dtype=np.float32)

    def bound(self, path: Path, sha256: str) -> ModelSpec:
        """This spec bound to one weights file."""
        return replace(self, weights_path=path, weights_sha256=sha256)

    def load(self, device: TorchDevice, weights: Path | None = None) -> EmbeddingModel:
        """The network with its weights on `device` (half precision where the device says so).

        The weights file is found (explicit path, cache, package, download) and hashed first; a spec
        that expects a hash (a gallery's) refuses a file with another one. The returned embedder's
        `spec` is bound to the file: its stamp carries the file's SHA-256.
        """
        from gallery.faces.models.weights import locate_weights

        spec, path = self, None
        if self.needs_weights:
            path, sha256 = locate_weights(self, weights)
            spec = self.bound(path, sha256)
        module_name, function = self.loader.split(":")
        return getattr(importlib.import_module(module_name), function)(spec, path, device)
