"""The gallery store: SQLite metadata, Parquet shards, and the folder that holds them."""

from gallery.store.gallery import Gallery, GalleryBusy, GalleryError, GalleryNotFound, ModelMismatch

__all__ = ["Gallery", "GalleryBusy", "GalleryError", "GalleryNotFound", "ModelMismatch"]
