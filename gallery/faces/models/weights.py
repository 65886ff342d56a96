"""Where model weights come from: an explicit path, the gallery cache directory, or a download.

The cache directory is `$FACE_GALLERY_CACHE` if set, else `~/.cache/face-gallery`. Weights for a
model go to `<cache>/weights/<filename>`. Missing weights are a normal situation with a clear
message, never a crash with a traceback.
"""

from __future__ import annotations

import os
from pathlib import Path

from gallery.errors import ModelWeightsMissing
from gallery.fsutil import atomic_write


def cache_dir() -> Path:
    root = os.environ.get("FACE_GALLERY_CACHE")
    path = Path(root).expanduser() if root else Path.home() / ".cache" / "face-gallery"
    return path


def weights_dir() -> Path:
    return cache_dir() / "weights"


def torch_hub_checkpoint(filename: str) -> Path:
    """Where facenet-pytorch itself stores downloads, so an earlier online download is reused."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def resolve_weights(
    model_name: str, filename: str, url: str | None, explicit: Path | None, offline_alternative: str
) -> Path:
    """Find a weights file, downloading it when the network allows; explain what to do otherwise."""
    if explicit is not None:
        explicit = Path(explicit).expanduser()
        if not explicit.is_file():
            raise ModelWeightsMissing(f"--weights {explicit}: no such file.")
        return explicit
    for candidate in (weights_dir() / filename, torch_hub_checkpoint(filename)):
        if candidate.is_file():
            return candidate
    target = weights_dir() / filename
    error: Exception | None = None
    import torch

    if url and not os.environ.get("FACE_GALLERY_OFFLINE"):
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: torch.hub.download_url_to_file(url, str(tmp), progress=False))
            return target
        except Exception as exc:  # network refused, DNS failure, HTTP error: all mean "not here"
            error = exc
    reason = f" (download failed: {type(error).__name__}: {error})" if error else ""
    raise ModelWeightsMissing(
        f"Weights for model '{model_name}' are not available{reason}.\n"
        f"  - pass the file with --weights PATH, or\n"
        f"  - put it at {target}\n"
        f"    (download it on a machine with internet from {url}), or\n"
        f"  - use '--model {offline_alternative}', which works offline (its weights ship on PyPI)."
    )
