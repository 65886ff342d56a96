"""`index_info`: the manifest plus how stale the index is against SQLite."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from gallery.store import Gallery
from indexer.loaded import as_gallery
from indexer.manifest import read_manifest


def index_info(gallery: Gallery | str | Path) -> dict[str, Any]:
    """The manifest plus: stale_faces (live faces not indexed yet), deleted_filtered (deleted in SQLite
    among the covered ids: filtered at search time, reclaimed by remove_ids), live_faces, index_path."""
    g, owned = as_gallery(gallery)
    try:
        manifest = read_manifest(g.index_dir, g.root)
        max_id = int(manifest["max_face_id"])
        info: dict[str, Any] = dict(manifest)
        info["stale_faces"] = g.live_face_count(after_face_id=max_id)
        info["deleted_filtered"] = int(g.deleted_ids(max_id).size)
        info["live_faces"] = g.live_face_count()
        info["up_to_date"] = info["stale_faces"] == 0
        info["index_path"] = str(g.index_dir / manifest["index_file"])
        rerank = manifest.get("rerank") or {}
        if rerank.get("enabled") and rerank.get("file"):
            p = g.index_dir / rerank["file"]
            info["rerank_path"] = str(p)
            info["rerank_file_bytes"] = p.stat().st_size if p.exists() else 0
        return info
    finally:
        if owned:
            g.close()
