"""The embedding model registry: what each model is, how its chips are aligned, how it is loaded.

A gallery is stamped with `ModelSpec.stamp()`; a gallery never mixes two stamps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from gallery.models.embedder import Embedder


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
    loader: Callable[[ModelSpec, Path | None, str, bool], Embedder] = field(compare=False, repr=False)
    weights_filename: str | None = None
    weights_url: str | None = None
    warning: str | None = None  # shown wherever the model appears (e.g. untrained weights)

    def stamp(self) -> dict:
        """What a gallery records and compares: the same stamp means compatible embeddings."""
        return {
            "name": self.name,
            "dim": self.dim,
            "input_size": self.input_size,
            "preprocessing": self.preprocessing,
        }

    def template_array(self) -> np.ndarray:
        return np.asarray(self.template, dtype=np.float32)

    def load(self, weights: Path | None = None, device: str = "cpu", half: bool = False) -> Embedder:
        return self.loader(self, weights, device, half)


class UnknownModelError(ValueError):
    pass


_REGISTRY: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    _REGISTRY[spec.name] = spec
    return spec


def get_model_spec(name: str) -> ModelSpec:
    _ensure_builtin_models()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownModelError(f"Unknown model '{name}'. Known models: {known}.") from None


def list_models() -> list[ModelSpec]:
    _ensure_builtin_models()
    return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def _ensure_builtin_models() -> None:
    # Importing the modules registers their specs (once: Python caches modules); kept lazy so that
    # `import gallery` stays light. Not keyed on an empty registry: importing one model module
    # directly must not hide the others.
    from gallery.models import dlib_resnet, facenet  # noqa: F401
