"""Where identity labels come from: folder names, a CSV file, or nowhere (an unlabeled archive).

- `folder`: the photo's parent folder is the identity (`people/Ada_Lovelace/1.jpg` → Ada_Lovelace).
  Photos directly in the source folder itself get no label.
- `csv:FILE`: rows `path,identity` (a header row `path,identity` is allowed). Paths may be absolute,
  relative to the source folder, or relative to the CSV's own folder. Empty identity = unlabeled.
- `none`: every face is stored unlabeled.
- `xmp`: the names of XMP face regions (digiKam, Lightroom, Picasa, Windows Photo Gallery), embedded
  or in `.xmp` sidecars, each given to the detected face its region overlaps (gallery.faces.xmp).
  Combined as `xmp+folder` or `xmp+csv:FILE`: a face an XMP region names takes that name (it names
  that very face); the folder or CSV label goes to the photo's main face when no region named it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from pathlib import Path

from gallery.errors import LabelSourceError

LabelFn = Callable[[Path], "str | None"]


def _key(path: Path) -> str:
    return os.path.normcase(os.path.abspath(path))


def folder_labels(source: Path) -> LabelFn:
    root = _key(source) if source.is_dir() else _key(source.parent)

    def label(path: Path) -> str | None:
        parent = path.parent
        if _key(parent) == root:
            return None
        return parent.name or None

    return label


def csv_labels(csv_path: Path, source: Path) -> LabelFn:
    if not csv_path.is_file():
        raise LabelSourceError(f"Label file not found: '{csv_path}' (expected rows: path,identity).")
    table: dict[str, str] = {}
    line_of: dict[str, int] = {}
    base_dirs = [source if source.is_dir() else source.parent, csv_path.parent]
    line_no = 0
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            for row in reader:
                line_no = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if line_no == 1 and [c.strip().lower() for c in row[:2]] == ["path", "identity"]:
                    continue
                if len(row) < 2:
                    raise LabelSourceError(f"{csv_path}:{line_no}: expected 'path,identity', got {row!r}")
                rel, name = row[0].strip(), row[1].strip()
                if not name:
                    continue
                candidates = [Path(rel)] if os.path.isabs(rel) else [base / rel for base in base_dirs]
                for candidate in candidates:
                    key = _key(candidate)
                    if key in table and table[key] != name:  # never "the first row wins" in silence
                        raise LabelSourceError(
                            f"{csv_path}:{line_no}: {rel} is labeled '{name}', but line {line_of[key]} labels the "
                            f"same photo '{table[key]}'; keep one of the two rows. Nothing was read.")
                    table.setdefault(key, name)
                    line_of.setdefault(key, line_no)
    except csv.Error as exc:  # an unbalanced quote, a field over the size limit: never a silent merge
        raise LabelSourceError(
            f"{csv_path}:{line_no + 1}: not valid CSV ({exc}); fix the file and run again."
        ) from None
    except UnicodeDecodeError as exc:
        raise LabelSourceError(f"{csv_path}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8.") from None

    def label(path: Path) -> str | None:
        return table.get(_key(path))

    return label


def split_xmp(spec: str) -> tuple[bool, str]:
    """(whether XMP face regions are read, the folder/CSV/none part) of a `--labels` value."""
    spec = spec.strip()
    if spec == "xmp":
        return True, "none"
    if spec.startswith("xmp+"):
        return True, spec[4:]
    if spec.endswith("+xmp"):
        return True, spec[:-4]
    return False, spec


def make_label_fn(spec: str, source: Path) -> LabelFn:
    """Parse `--labels`: `folder`, `none`, `csv:FILE`, or either with `xmp+` (the photo-level part here;
    the XMP regions are read per photo by the ingest)."""
    spec = split_xmp(spec)[1]
    if spec == "folder":
        return folder_labels(source)
    if spec == "none":
        return lambda _path: None
    if spec.startswith("csv:"):
        return csv_labels(Path(spec[4:]).expanduser(), source)
    raise LabelSourceError(f"Unknown label source '{spec}': use folder, none, csv:FILE, xmp, xmp+folder or "
                           "xmp+csv:FILE.")


def read_label_rows(csv_path: Path) -> list[tuple[int, str, str | None]]:
    """Rows of a labels file for `gallery labels import`: (face id or photo path, identity or None).

    Two columns `key,identity`, or the three of `gallery labels export` (`face_id,path,identity`, where
    the face id is used). A header row is allowed; an empty identity means unlabeled. Parsing is strict:
    an unbalanced quote is an error with its line number, never a silently merged field."""
    if csv_path.is_dir():
        raise LabelSourceError(f"'{csv_path}' is a folder; give the labels CSV file.")
    if not csv_path.is_file():
        raise LabelSourceError(f"Label file not found: '{csv_path}'.")
    rows: list[tuple[int, str, str | None]] = []
    first_line: dict[str, int] = {}
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.reader(fh, strict=True)
            for row in reader:
                if not row or all(not cell.strip() for cell in row):
                    continue
                cells = [c.strip() for c in row]
                if reader.line_num == 1 and cells[-1].lower() == "identity":
                    continue
                if len(cells) not in (2, 3) or (len(cells) == 3 and not cells[0].isdigit()):
                    raise LabelSourceError(
                        f"{csv_path}:{reader.line_num}: expected 'face id or path,identity' or "
                        f"'face_id,path,identity', got {row!r}"
                    )
                if cells[0] in first_line:
                    raise LabelSourceError(
                        f"{csv_path}:{reader.line_num}: {cells[0]} is labeled again (first on line "
                        f"{first_line[cells[0]]}); give each face one row. Nothing was changed."
                    )
                first_line[cells[0]] = reader.line_num
                rows.append((reader.line_num, cells[0], cells[-1] or None))
    except csv.Error as exc:
        raise LabelSourceError(f"{csv_path}:{reader.line_num}: not valid CSV ({exc}); nothing was changed.") from None
    except UnicodeDecodeError as exc:
        raise LabelSourceError(f"{csv_path}: not UTF-8 text ({exc.reason}); save the CSV as UTF-8.") from None
    if not rows:
        raise LabelSourceError(f"{csv_path} holds no label rows (expected 'face id or path,identity').")
    return rows
