"""Errors the user can act on: each message says what to run next."""

from __future__ import annotations


class IndexerError(RuntimeError):
    """Base class: a problem with building, updating or loading a gallery's FAISS index."""


class EmptyGalleryError(IndexerError):
    """The gallery has no (live) faces to index."""


class NoIndexError(IndexerError):
    """The gallery has no index yet (or its manifest is missing)."""


class IndexMismatchError(IndexerError):
    """The index on disk does not match the gallery (other model or dimension)."""


class GpuUnavailableError(IndexerError):
    """device='cuda' was asked for but this faiss build or this machine has no usable GPU."""


class IndexBusyError(IndexerError):
    """Another build/update/remove holds the index lock."""


class IndexOutgrownWarning(UserWarning):
    """The gallery outgrew the trained index (coarse quantizer or flat size): a rebuild is advised."""
