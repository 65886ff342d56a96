"""Embedding models: the registry (a table of specs), weights resolution and the networks themselves.

Importing this package imports no torch: the networks load when `ModelSpec.load()` is called.
"""

from gallery.faces.models.registry import (
    DEFAULT_MODEL,
    get_model_spec,
    list_models,
    model_for_gallery,
    registered,
)
from gallery.faces.models.spec import ModelSpec
from gallery.faces.models.weights import cache_dir, check_weights

__all__ = ["DEFAULT_MODEL", "ModelSpec", "cache_dir", "check_weights", "get_model_spec", "list_models",
           "model_for_gallery",
           "registered"]
