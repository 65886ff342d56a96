"""FAISS index building for a gallery: parameter choice, training, adding, GPU transfer, incremental
add, deletes, save/load. The API the search module calls:

    manifest = build_index(gallery, factory=None, memory_budget=None, rerank=None, device="auto",
                           nprobe=None, seed=0)
    manifest = update_index(gallery)
    manifest = remove_ids(gallery, ids=None)        # None: every face deleted in SQLite
    index = load_index(gallery, mmap=True)          # -> LoadedIndex
    scores, ids = index.search(queries, k, nprobe=None)   # deleted faces never returned
    info = index_info(gallery)

`gallery` is a gallery.store.Gallery or a gallery folder path. Errors are gallery.errors.IndexerError
subclasses (re-exported here).
"""

from gallery.errors import (
    EmptyGalleryError,
    GpuUnavailableError,
    IndexBusyError,
    IndexerError,
    IndexMismatchError,
    IndexOutgrownWarning,
    NoIndexError,
)
from indexer.build import build_index, remove_ids, update_index
from indexer.choose import FLAT_MAX_VECTORS, IndexChoice, choose_index
from indexer.info import index_info
from indexer.loaded import LoadedIndex, load_index
from indexer.manifest import Manifest, set_search_defaults

__all__ = [
    "FLAT_MAX_VECTORS",
    "EmptyGalleryError",
    "GpuUnavailableError",
    "IndexBusyError",
    "IndexChoice",
    "IndexMismatchError",
    "IndexOutgrownWarning",
    "IndexerError",
    "LoadedIndex",
    "Manifest",
    "NoIndexError",
    "build_index",
    "choose_index",
    "index_info",
    "load_index",
    "remove_ids",
    "set_search_defaults",
    "update_index",
]
