"""Embedding models: the registry, weights resolution and the models themselves."""

from gallery.models.registry import ModelSpec, UnknownModelError, get_model_spec, list_models
from gallery.models.weights import ModelWeightsMissing, cache_dir

__all__ = ["ModelSpec", "ModelWeightsMissing", "UnknownModelError", "cache_dir", "get_model_spec", "list_models"]
