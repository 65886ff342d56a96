"""One error root for everything a user can act on.

Every problem the product explains (a missing gallery, missing weights, a model mismatch, no index
yet, a bad option value) is a `GalleryError`; the CLI turns any of them into one red line and the
error's `exit_code`, never a traceback. Subclasses exist so that callers of the Python API can catch
the case they care about.
"""

from __future__ import annotations


class GalleryError(RuntimeError):
    """A problem the user can act on; the message says how."""

    exit_code = 2


# --- the gallery folder -------------------------------------------------------------------------


class GalleryNotFound(GalleryError):
    """No gallery at that folder."""


class GalleryBusy(GalleryError):
    """Another writer holds the gallery's lock."""


class SchemaVersionError(GalleryError):
    """The gallery was written by another version of the product with an incompatible schema."""


class ModelMismatch(GalleryError):
    """A model other than the gallery's own was asked for."""


class DamagedData(GalleryError):
    """A shard, index file or database that does not hold what SQLite says it holds: never served."""


class NotInGallery(GalleryError):
    """An identity, face id or photo path that the gallery does not hold."""


class PhotoRefused(GalleryError):
    """A photo the product will not open: not a regular file, over the size or pixel limits. `reason`
    is the ingest's reason code for it."""

    def __init__(self, reason: str, message: str, file: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.file = file  # the name the photo was given (an upload's file name), when there is one


class LabelConflict(GalleryError):
    """A rename onto an existing name, a merge of one identity, or a bad labels file row."""


# --- models and devices ---------------------------------------------------------------------------


class UnknownModelError(GalleryError):
    """A model name that is not in the registry."""


class ModelWeightsMissing(GalleryError):
    """A model's weights are neither given, cached, nor downloadable."""


class DeviceUnavailable(GalleryError):
    """--device cuda (or a faiss GPU) was asked for but is not there."""


# --- ingestion --------------------------------------------------------------------------------------


class LabelSourceError(GalleryError):
    """A --labels value or label file that cannot be used."""


# --- the index --------------------------------------------------------------------------------------


class IndexerError(GalleryError):
    """A problem with building, updating or loading a gallery's FAISS index."""


class EmptyGalleryError(IndexerError):
    """The gallery has no (live) faces to index."""


class NoIndexError(IndexerError):
    """The gallery has no index yet."""


class IndexMismatchError(IndexerError):
    """The index on disk does not match the gallery (other model or dimension)."""


class IndexBusyError(IndexerError):
    """Another build/update/remove holds the index lock."""


class GpuUnavailableError(DeviceUnavailable, IndexerError):
    """device='cuda' was asked for but this faiss build or this machine has no usable GPU."""


class IndexOutgrownWarning(UserWarning):
    """The gallery outgrew the trained index (coarse quantizer or flat size): a rebuild is advised."""


# --- search -----------------------------------------------------------------------------------------


class CalibrationError(GalleryError):
    """The gallery's labeled faces cannot support a calibration."""


class VerifyError(GalleryError):
    """A photo given to verify has no usable face: the question has no answer (exit 1, as search).
    `reason` is the pipeline's reason code (no_face, not_an_image, ...), `file` the photo's name."""

    exit_code = 1

    def __init__(self, message: str, reason: str | None = None, file: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.file = file


class BenchError(GalleryError):
    """A benchmark that cannot run on this gallery as asked."""
