"""Scanning finds photos of every accepted extension once, survives symlink loops; labels resolve."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gallery.errors import LabelSourceError
from gallery.ingest.labels import make_label_fn
from gallery.ingest.scan import scan_photos


def test_scan_extensions_case_and_loops(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    (root / "a" / "b").mkdir(parents=True)
    names = ["x.JPG", "y.jpeg", "z.Png", "w.webp", "v.BMP", "u.tif", "t.TIFF"]
    for n in names:
        (root / "a" / n).write_bytes(b"1")
    (root / "a" / "b" / "notes.txt").write_text("skip me")
    (root / "a" / "b" / "deep.jpg").write_bytes(b"1")
    os.symlink(root, root / "a" / "b" / "loop")  # a loop back to the top
    os.symlink(root / "missing.jpg", root / "dangling.jpg")
    found = sorted(f.path.name for f in scan_photos(root))
    assert found == sorted([*names, "deep.jpg"])


def test_scan_missing_source(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        list(scan_photos(tmp_path / "nope"))


def test_folder_labels(tmp_path: Path) -> None:
    label = make_label_fn("folder", tmp_path)
    assert label(tmp_path / "Ada_Lovelace" / "1.jpg") == "Ada_Lovelace"
    assert label(tmp_path / "trip" / "Ada_Lovelace" / "1.jpg") == "Ada_Lovelace"
    assert label(tmp_path / "loose.jpg") is None


def test_csv_labels(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    csv_file = tmp_path / "labels.csv"
    csv_file.write_text(f"path,identity\nphotos/a.jpg,Ada\n{tmp_path / 'photos' / 'b.jpg'},Bob\nphotos/c.jpg,\n")
    label = make_label_fn(f"csv:{csv_file}", tmp_path / "photos")
    assert label(tmp_path / "photos" / "a.jpg") == "Ada"
    assert label(tmp_path / "photos" / "b.jpg") == "Bob"
    assert label(tmp_path / "photos" / "c.jpg") is None
    assert make_label_fn("none", tmp_path)(tmp_path / "x" / "a.jpg") is None


def test_bad_label_sources(tmp_path: Path) -> None:
    with pytest.raises(LabelSourceError, match="not found"):
        make_label_fn(f"csv:{tmp_path / 'missing.csv'}", tmp_path)
    with pytest.raises(LabelSourceError, match="Unknown label source"):
        make_label_fn("exif", tmp_path)
