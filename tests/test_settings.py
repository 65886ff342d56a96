"""The settings object: one FACE_GALLERY_ prefix, the old names still read with a warning, nothing read
or changed on import."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import gallery.settings as settings_module
from gallery.errors import GalleryError
from gallery.faces.detect import detector_kind
from gallery.faces.models import cache_dir
from gallery.settings import DEPRECATED, DeprecatedSetting, Settings, SettingsError, env_name, settings

REPO = Path(__file__).resolve().parents[1]
NAMES = ["FACE_GALLERY_CACHE", "FACE_GALLERY_OFFLINE", "FACE_GALLERY_DETECTOR", "FACE_GALLERY_SERVE_CONFIG",
         "GALLERY_DETECTOR", "GALLERY_SERVE_CONFIG"]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(settings_module, "_WARNED", set())  # the one-time warnings, afresh for each test


def test_every_variable_has_the_one_prefix() -> None:
    assert sorted(env_name(f) for f in Settings.model_fields) == sorted(NAMES[:4])
    assert all(new.startswith("FACE_GALLERY_") and not old.startswith("FACE_GALLERY_")
               for old, new in DEPRECATED.items())


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = settings()
    assert s.cache == tmp_path / ".cache" / "face-gallery" and s.offline is False
    assert s.detector is None and s.serve_config is None
    assert detector_kind() == "mtcnn-batched"


def test_the_new_names_are_read_when_asked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    first = settings()
    monkeypatch.setenv("FACE_GALLERY_CACHE", str(tmp_path / "c"))
    monkeypatch.setenv("FACE_GALLERY_OFFLINE", "1")
    monkeypatch.setenv("FACE_GALLERY_DETECTOR", "facenet-mtcnn")
    monkeypatch.setenv("FACE_GALLERY_SERVE_CONFIG", '{"gallery": "g"}')
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no deprecation warning for the new names
        s = settings()
    assert s is not first and s is settings()  # read again after a change, then cached
    assert (s.cache, s.offline, s.detector) == (tmp_path / "c", True, "facenet-mtcnn")
    assert s.serve_config == '{"gallery": "g"}'
    assert cache_dir() == tmp_path / "c" and detector_kind() == "facenet-mtcnn"
    monkeypatch.setenv("FACE_GALLERY_OFFLINE", "0")
    monkeypatch.setenv("FACE_GALLERY_CACHE", "")  # empty: not set
    assert settings().offline is False and settings().cache == Path.home() / ".cache" / "face-gallery"


@pytest.mark.parametrize(("old", "field", "value"), [
    ("GALLERY_DETECTOR", "detector", "facenet-mtcnn"),
    ("GALLERY_SERVE_CONFIG", "serve_config", '{"gallery": "g"}'),
])
def test_an_old_name_is_read_with_a_warning_once(monkeypatch: pytest.MonkeyPatch, old: str, field: str,
                                                 value: str) -> None:
    monkeypatch.setenv(old, value)
    with pytest.warns(DeprecatedSetting, match=f"{old} is deprecated: set {DEPRECATED[old]} instead"):
        assert getattr(settings(), field) == value
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert getattr(settings(), field) == value  # once per process
    monkeypatch.setattr(settings_module, "_WARNED", set())
    monkeypatch.setenv(DEPRECATED[old], value.replace("facenet-mtcnn", "mtcnn-batched").replace('"g"', '"h"'))
    with pytest.warns(DeprecatedSetting, match=f"{old} is ignored: {DEPRECATED[old]} is set"):
        assert getattr(settings(), field) == os.environ[DEPRECATED[old]]  # the new name wins


def test_a_bad_value_is_a_gallery_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE_GALLERY_OFFLINE", "maybe")
    with pytest.raises(SettingsError, match="FACE_GALLERY_OFFLINE='maybe'.*Correct it or unset it") as caught:
        settings()
    assert isinstance(caught.value, GalleryError)
    monkeypatch.delenv("FACE_GALLERY_OFFLINE")
    monkeypatch.setenv("GALLERY_DETECTOR", "retina")
    refused = r"from \$GALLERY_DETECTOR.*unset GALLERY_DETECTOR"
    with pytest.warns(DeprecatedSetting), pytest.raises(GalleryError, match=refused):
        detector_kind()


def test_the_serve_config_travels_in_the_new_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from gallery.server.config import ENV_VAR, ServeConfig

    assert ENV_VAR == "FACE_GALLERY_SERVE_CONFIG"
    config = ServeConfig(gallery=str(tmp_path), jobs_dir=str(tmp_path / "jobs"), enrol_dir=str(tmp_path / "e"))
    with pytest.raises(RuntimeError, match="FACE_GALLERY_SERVE_CONFIG is not set"):
        ServeConfig.from_env()
    monkeypatch.setenv(ENV_VAR, config.to_env())  # what `gallery serve` does before starting uvicorn
    assert ServeConfig.from_env() == config


def _python(code: str, **env: str | None) -> str:
    environment = {k: v for k, v in os.environ.items() if k not in env and k != "OMP_WAIT_POLICY"}
    environment.update({k: v for k, v in env.items() if v is not None})
    environment["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=environment, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().splitlines()[-1]


def test_importing_gallery_changes_nothing_and_reads_nothing() -> None:
    # OMP_WAIT_POLICY unset, and a value settings() would refuse: importing must neither set one nor read the other
    code = ("import os, gallery, gallery.settings, gallery.faces.models, gallery.faces.detect, gallery.cli\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    assert _python(code, FACE_GALLERY_OFFLINE="maybe") == "None"


def test_the_gallery_command_applies_the_openmp_default(tmp_path: Path) -> None:
    code = ("import os\nfrom gallery.cli import app\n"
            f"try:\n    app(['info', '--gallery', {str(tmp_path / 'none')!r}])\nexcept SystemExit:\n    pass\n"
            "print(os.environ.get('OMP_WAIT_POLICY'))")
    assert _python(code) == "PASSIVE"
    assert _python(code, OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"  # a user's own value is kept
