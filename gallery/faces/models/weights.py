"""Where model weights come from, and which file they are: explicit path, cache, package or download.

The cache directory is `$FACE_GALLERY_CACHE` if set, else `~/.cache/face-gallery` (gallery.settings). Weights for a
model go to `<cache>/weights/<filename>`; a file given once with `--weights` is remembered under
`<cache>/weights/by-sha256/<sha256>` (a hard link, or a symbolic link across file systems), so later
commands on a gallery stamped with that hash find it without `--weights`. Every file is identified by
its SHA-256: a gallery built with one file refuses another. Missing weights are a normal situation
with a clear message, never a crash with a traceback.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import threading
from pathlib import Path
from typing import Protocol

from gallery.errors import ModelMismatch, ModelWeightsMissing
from gallery.fsutil import atomic_write

log = logging.getLogger(__name__)


class WeightsSpec(Protocol):
    """What finding a model's weights reads of its spec (gallery.faces.models.spec.ModelSpec has it all):
    this module sits below the spec, which calls `locate_weights` when it loads a model."""

    @property
    def name(self) -> str: ...
    @property
    def weights_filename(self) -> str | None: ...
    @property
    def weights_url(self) -> str | None: ...
    @property
    def packaged_weights(self) -> str | None: ...
    @property
    def weights_formats(self) -> str: ...
    @property
    def weights_elsewhere(self) -> tuple[str, ...]: ...
    @property
    def weights_sha256(self) -> str | None: ...

_HASHES: dict[tuple[str, int, int], str] = {}  # (real path, size, mtime) -> sha256, for this process
_HASH_LOCK = threading.Lock()


def cache_dir() -> Path:
    from gallery.settings import settings  # pydantic loads when a command needs a setting, not with the CLI

    return settings().cache


def weights_dir() -> Path:
    return cache_dir() / "weights"


def by_hash_path(sha256: str) -> Path:
    return weights_dir() / "by-sha256" / sha256


def file_sha256(path: Path) -> str:
    """The file's SHA-256 (hex), computed once per process for an unchanged file."""
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    with _HASH_LOCK:
        known = _HASHES.get(key)
    if known is not None:
        return known
    digest = hashlib.sha256()
    with open(real, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    value = digest.hexdigest()
    with _HASH_LOCK:
        _HASHES[key] = value
    return value


def torch_hub_checkpoint(filename: str) -> Path:
    """Where facenet-pytorch itself stores downloads, so an earlier online download is reused."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints" / filename


def remember(path: Path, sha256: str) -> None:
    """Make a file given with --weights findable by its hash later. Best effort: a cache that cannot
    be written only means passing --weights again."""
    target = by_hash_path(sha256)
    try:
        if target.exists() and file_sha256(target) == sha256:
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{sha256}.{os.getpid()}.tmp")
        tmp.unlink(missing_ok=True)
        try:
            os.link(path, tmp)
        except OSError:
            os.symlink(Path(path).resolve(), tmp)
        os.replace(tmp, target)
    except OSError as exc:
        log.info("could not remember %s in the weights cache: %s", path, exc)


def _short(sha256: str) -> str:
    return sha256[:16]


def _packaged(spec: WeightsSpec) -> Path | None:
    if spec.packaged_weights is None:
        return None
    module_name, function = spec.packaged_weights.split(":")
    try:
        return getattr(importlib.import_module(module_name), function)()
    except ModelWeightsMissing:
        return None


def _candidates(spec: WeightsSpec) -> list[Path]:
    """Known places, most specific first: the file remembered by hash, the cache, facenet-pytorch's
    download folder, where deepface or keras-vggface keep the file, the file a package ships."""
    found: list[Path] = []
    if spec.weights_sha256:
        found.append(by_hash_path(spec.weights_sha256))
    if spec.weights_filename:
        found.append(weights_dir() / spec.weights_filename)
        if spec.weights_url:
            found.append(torch_hub_checkpoint(spec.weights_filename))
    found += [Path(p).expanduser() for p in spec.weights_elsewhere]
    packaged = _packaged(spec)
    if packaged is not None:
        found.append(packaged)
    return [p for p in found if p.is_file()]


def _mismatch(spec: WeightsSpec, path: Path, sha256: str) -> ModelMismatch:
    return ModelMismatch(
        f"Weights mismatch for model '{spec.name}': the gallery was built with the weights file of SHA-256 "
        f"{_short(spec.weights_sha256 or '')}…, and {path} has SHA-256 {_short(sha256)}…. Other weights give "
        "embeddings that cannot be compared with the gallery's. Pass the original file with --weights, "
        "or use a new --gallery folder for these weights."
    )


def check_weights(spec: WeightsSpec, explicit: Path | None) -> None:
    """Refuse an explicit weights file that is not the one the gallery was built with, before any work
    (a run with nothing new to read never loads the model, and would not notice)."""
    if explicit is None or not spec.weights_sha256:
        return
    path = Path(explicit).expanduser()
    if not path.is_file():
        raise ModelWeightsMissing(f"--weights {path}: no such file.")
    sha256 = file_sha256(path)
    if sha256 != spec.weights_sha256:
        raise _mismatch(spec, path, sha256)


def locate_weights(spec: WeightsSpec, explicit: Path | None) -> tuple[Path, str]:
    """(path, sha256) of the weights file for `spec`; a spec that expects a hash gets only that file."""
    expected = spec.weights_sha256
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ModelWeightsMissing(f"--weights {path}: no such file.")
        sha256 = file_sha256(path)
        if expected and sha256 != expected:
            raise _mismatch(spec, path, sha256)
        remember(path, sha256)
        return path, sha256
    wrong: list[tuple[Path, str]] = []
    for path in _candidates(spec):
        sha256 = file_sha256(path)
        if expected is None or sha256 == expected:
            return path, sha256
        wrong.append((path, sha256))
    if wrong:
        raise _mismatch(spec, *wrong[0])
    if expected:
        raise ModelWeightsMissing(
            f"The weights this gallery was built with (model '{spec.name}', SHA-256 {_short(expected)}…) are not "
            f"in the cache ({by_hash_path(expected).parent}). Pass the file with --weights PATH."
        )
    return _download(spec)


def _download(spec: WeightsSpec) -> tuple[Path, str]:
    filename, url = spec.weights_filename, spec.weights_url
    target = weights_dir() / (filename or spec.name)
    error: Exception | None = None
    from gallery.settings import settings

    if url and filename and not settings().offline:
        import torch

        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(target, lambda tmp: torch.hub.download_url_to_file(url, str(tmp), progress=False))
            return target, file_sha256(target)
        except Exception as exc:  # network refused, DNS failure, HTTP error: all mean "not here"
            error = exc
    reason = f" (download failed: {type(error).__name__}: {error})" if error else ""
    where = f"    (download it on a machine with internet from {url}), or\n" if url else ""
    accepts = f" ({spec.weights_formats})" if spec.weights_formats else ""
    raise ModelWeightsMissing(
        f"Weights for model '{spec.name}' are not available{reason}.\n"
        f"  - pass the file with --weights PATH{accepts}, or\n"
        f"  - put it at {target}\n"
        f"{where}"
        f"  - or use '--model dlib-resnet', which works offline (its weights ship on PyPI)."
    )
