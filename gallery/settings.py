"""The product's settings from the environment: one object, one `FACE_GALLERY_` prefix.

    FACE_GALLERY_CACHE         where downloaded and remembered model weights are kept
                               (default ~/.cache/face-gallery)
    FACE_GALLERY_OFFLINE       1/true: never try to download weights (default: off)
    FACE_GALLERY_DETECTOR      the face detector of every pipeline: mtcnn-batched (default) or facenet-mtcnn
    FACE_GALLERY_SERVE_CONFIG  set by `gallery serve` for its worker processes (JSON), never by hand

Earlier names (`GALLERY_DETECTOR`, `GALLERY_SERVE_CONFIG`) are still read, with a one-time warning;
the new name wins when both are set.

Nothing is read when this module is imported: `settings()` reads the environment when first asked, and
again only when one of these variables has changed since (a command, a benchmark or a test that sets
one takes effect on the next call). `import gallery` changes nothing in the process either; the
process-wide defaults that the commands want (gallery.device.apply_process_defaults) are applied by
the entry points: the `gallery` command, the server's application factory and the distributed
ingest's workers.
"""

from __future__ import annotations

import functools
import os
import warnings
from pathlib import Path

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from gallery.errors import GalleryError

PREFIX = "FACE_GALLERY_"
# old name -> the name that replaces it
DEPRECATED = {
    "GALLERY_DETECTOR": "FACE_GALLERY_DETECTOR",
    "GALLERY_SERVE_CONFIG": "FACE_GALLERY_SERVE_CONFIG",
}


class DeprecatedSetting(FutureWarning):
    """An environment variable under its old name (shown to users: FutureWarning is, DeprecationWarning is not)."""


class SettingsError(GalleryError):
    """An environment variable of the product with a value it cannot use."""


def default_cache() -> Path:
    return Path.home() / ".cache" / "face-gallery"


class Settings(BaseSettings):
    """Every setting the product reads from the environment (see the module doc)."""

    model_config = SettingsConfigDict(
        env_prefix=PREFIX,
        env_ignore_empty=True,  # FACE_GALLERY_CACHE= (empty) means "not set", as it always did
        extra="ignore",
        validate_by_name=True,
        validate_by_alias=True,
        frozen=True,
    )

    cache: Path = Field(default_factory=default_cache,
                        description="Where model weights are downloaded to and remembered (weights/ inside).")
    offline: bool = Field(False, description="Never try to download model weights.")
    detector: str | None = Field(
        None, validation_alias=AliasChoices("FACE_GALLERY_DETECTOR", "GALLERY_DETECTOR"),
        description="The face detector of every pipeline (gallery.faces.detect.DETECTORS); None: the default.",
    )
    serve_config: str | None = Field(
        None, validation_alias=AliasChoices("FACE_GALLERY_SERVE_CONFIG", "GALLERY_SERVE_CONFIG"),
        description="`gallery serve`'s configuration for its workers (JSON of gallery.server.config.ServeConfig).",
    )

    @field_validator("cache")
    @classmethod
    def _expand_user(cls, value: Path) -> Path:
        return value.expanduser()


def env_name(field: str) -> str:
    """The environment variable of a setting: `env_name("detector")` is FACE_GALLERY_DETECTOR."""
    return PREFIX + field.upper()


def source_of(field: str) -> str:
    """The environment variable a setting's value comes from: its name, or the deprecated one that is
    set in its place (for messages that tell the user what to change)."""
    new = env_name(field)
    if not os.environ.get(new):
        for old, replacement in DEPRECATED.items():
            if replacement == new and os.environ.get(old):
                return old
    return new


_WARNED: set[str] = set()


def _warn_deprecated() -> None:
    for old, new in DEPRECATED.items():
        if os.environ.get(old) and old not in _WARNED:
            _WARNED.add(old)
            also = f" ({old} is ignored: {new} is set)" if os.environ.get(new) else ""
            warnings.warn(f"The environment variable {old} is deprecated: set {new} instead{also}.",
                          DeprecatedSetting, stacklevel=3)


def _watched() -> tuple[tuple[str, str | None], ...]:
    names = [env_name(f) for f in Settings.model_fields] + list(DEPRECATED) + ["HOME"]  # the cache's default
    return tuple((n, os.environ.get(n)) for n in names)


@functools.lru_cache(maxsize=8)
def _read(environment: tuple[tuple[str, str | None], ...]) -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        values = dict(environment)
        problems = []
        for error in exc.errors(include_url=False):
            where = str(error["loc"][0]) if error["loc"] else ""
            name = env_name(where) if where in Settings.model_fields else where
            problems.append(f"{name}={values.get(name)!r}: {error['msg']}")
        raise SettingsError("An environment variable of the product has a value it cannot use: "
                            + "; ".join(problems) + ". Correct it or unset it.") from None


def settings() -> Settings:
    """The settings in force: read from the environment when first asked (never at import), and read
    again only when one of the product's variables changed since."""
    _warn_deprecated()
    return _read(_watched())

