"""The gallery store: the only code that knows SQLite, Parquet and the folder's file names."""

from gallery.errors import GalleryBusy, GalleryError, GalleryNotFound, ModelMismatch
from gallery.store.gallery import Gallery, GalleryInfo, is_gallery
from gallery.store.queries import FaceRecord, FaceSet, ShardRow
from gallery.store.writer import FileRecord, GalleryWriter, append_embedded_faces

__all__ = [
    "FaceRecord",
    "FaceSet",
    "FileRecord",
    "Gallery",
    "GalleryBusy",
    "GalleryError",
    "GalleryInfo",
    "GalleryNotFound",
    "GalleryWriter",
    "ModelMismatch",
    "ShardRow",
    "append_embedded_faces",
    "is_gallery",
]
