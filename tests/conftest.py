"""Shared fixtures: the LFW A–J photos from ../shared/data (skip when absent) and small archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from gallery.device import apply_process_defaults

# The test run is an entry point like the `gallery` command: the same OpenMP waiting policy, set before
# any test module imports torch or faiss (importing gallery itself sets nothing).
apply_process_defaults()

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw-aj"
LFW_IMAGES = LFW / "images"


def lfw_available() -> bool:
    return LFW_IMAGES.is_dir()


requires_lfw = pytest.mark.skipif(
    not lfw_available(),
    reason=f"needs the LFW A–J photos at {LFW_IMAGES} (../shared/data/lfw-aj beside the repository)",
)


def lfw_photo(name: str, number: int) -> Path:
    return LFW_IMAGES / name / f"{name}_{number:04d}.jpg"


def copy_lfw_people(dest: Path, people: dict[str, int]) -> list[Path]:
    """Copy the first N photos of each named person into dest/NAME/ (a labeled archive in tmp)."""
    copied = []
    for name, count in people.items():
        (dest / name).mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            src = lfw_photo(name, i)
            target = dest / name / src.name
            shutil.copyfile(src, target)
            copied.append(target)
    return copied


@pytest.fixture
def lfw_archive(tmp_path: Path) -> Path:
    """12 photos of 3 people (4 each), labeled by folder."""
    if not lfw_available():
        pytest.skip(f"needs the LFW A–J photos at {LFW_IMAGES}")
    src = tmp_path / "archive"
    copy_lfw_people(src, {"Aaron_Peirsol": 4, "Abdullah_Gul": 4, "Alejandro_Toledo": 4})
    return src
