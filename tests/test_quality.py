"""Face quality: the five measures, the gate and its reasons (pure, made-up arrays), and on LFW photos: a
cut-off face and a blurred face are answered "too poor to identify" with their reason, faces below the gate
stay out of templates, and a gallery from before quality gets its measures (sharpness from the photos)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models.registry import DLIB_TEMPLATE
from gallery.faces.quality import (
    QUALITY_GATE,
    QualityGate,
    chip_masks,
    gate_issue,
    inside_shares,
    measure_faces,
    pose_offsets,
    sharpness,
)
from tests.conftest import lfw_photo

runner = CliRunner()
TEMPLATE = np.asarray(DLIB_TEMPLATE, np.float32)
FRONTAL = np.array([[100, 100], [140, 100], [120, 122], [104, 145], [136, 145]], np.float32)


def test_sharpness_falls_with_blur() -> None:
    rng = np.random.default_rng(0)
    texture = (rng.random((1, 3, 150, 150)) * 255).astype(np.uint8)
    sharp = torch.from_numpy(texture)
    blurred = torch.from_numpy(np.asarray(Image.fromarray(texture[0].transpose(1, 2, 0)).filter(
        ImageFilter.GaussianBlur(3))).transpose(2, 0, 1)[None].copy())
    flat = torch.full((1, 3, 150, 150), 128, dtype=torch.uint8)
    values = sharpness(torch.cat([sharp, blurred, flat]))
    assert values[0] > 20 * values[1] > 0 and values[2] == 0
    assert sharpness(torch.empty((0, 3, 150, 150), dtype=torch.uint8)).shape == (0,)


def test_the_zero_padding_of_a_cut_off_face_is_not_sharpness() -> None:
    smooth = np.tile(np.linspace(60, 200, 150, dtype=np.float32), (150, 1))  # a soft gradient: no detail
    chip = np.repeat(smooth[None, None], 3, axis=1).astype(np.uint8)
    chip[..., :60] = 0  # the part of the chip outside the photo
    mask = np.ones((1, 150, 150), bool)
    mask[..., :60] = False
    unmasked, masked = sharpness(torch.from_numpy(chip))[0], sharpness(torch.from_numpy(chip), mask)[0]
    assert unmasked > 50 and masked < 0.5  # the padding's edge alone made it look sharp
    at_edge = FRONTAL - np.array([100, 0], np.float32)
    m = chip_masks(at_edge[None], TEMPLATE, 150, 250, 250)
    assert m.shape == (1, 150, 150) and 0.3 < m.mean() < 0.75 and m[0, 75, -1] and not m[0, 75, 0]


def test_inside_share_and_pose() -> None:
    assert inside_shares(FRONTAL[None], TEMPLATE, 150, 250, 250)[0] == pytest.approx(1.0)
    at_edge = FRONTAL - np.array([100, 0], np.float32)  # the face's left half leaves the photo
    share = inside_shares(at_edge[None], TEMPLATE, 150, 250, 250)[0]
    assert 0.3 < share < 0.75
    assert pose_offsets(FRONTAL[None])[0] < 0.01
    turned = FRONTAL.copy()
    turned[2, 0] += 20  # the nose moves towards one side: a face turning away
    assert pose_offsets(turned[None])[0] == pytest.approx(0.5, abs=0.02)


def test_gate_reasons() -> None:
    gate = QualityGate(min_size=24, min_det_score=0.95, min_inside=0.85, min_sharpness=20, max_pose=0.45)
    assert gate_issue(100, 0.999, 1.0, 80, 0.1, gate) is None
    assert gate_issue(None, None, None, None, None, gate) is None  # not measured never fails a face
    issue = gate_issue(12, 0.9, 0.5, 3, 0.7, gate)
    for word in ("cut off", "too small", "blurred", "turned away", "unsure detection"):
        assert word in issue
    assert gate_issue(100, 0.999, 1.0, None, 0.1, gate) is None  # sharpness unknown (an old gallery)
    faces = measure_faces(np.array([[90, 80, 150, 160], [0, 0, 10, 10]], np.float32), np.array([0.999, 0.97]),
                          np.stack([FRONTAL, FRONTAL * 0.05]), 250, 250, TEMPLATE, 150, np.array([80.0, np.nan]),
                          gate)
    assert faces[0].issue is None and faces[0].size == 60 and faces[0].sharpness == 80
    assert faces[1].sharpness is None and "too small" in faces[1].issue
    assert faces[0].columns()["quality_issue"] is None and faces[1].as_dict()["ok"] is False
    assert QUALITY_GATE.as_dict().keys() == gate.as_dict().keys()


@pytest.fixture
def lfw_gallery(lfw_archive: Path, tmp_path: Path) -> Path:
    g = tmp_path / "g"
    for args in (["ingest", str(lfw_archive), "--workers", "0"], ["index", "build"]):
        result = runner.invoke(app, [*args, "--gallery", str(g)])
        assert result.exit_code == 0, result.output
    return g


def search_json(photo: Path, gallery: Path) -> dict:
    result = runner.invoke(app, ["search", str(photo), "--gallery", str(gallery), "--json", "--largest-only"])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout.splitlines()[0])


def test_a_cut_off_and_a_blurred_face_are_too_poor_to_identify(lfw_gallery: Path, tmp_path: Path) -> None:
    photo = lfw_photo("Abdullah_Gul", 6)  # not in the gallery (its first 4 photos are)
    good = search_json(photo, lfw_gallery)
    assert good["too_poor"] is None and good["quality"]["ok"] and good["candidates"]
    assert good["candidates"][0]["identity"] == "Abdullah_Gul"
    box = good["face"]["box"]
    with Image.open(photo) as im:
        cut = im.crop((int(box[0] + 0.5 * (box[2] - box[0])), 0, im.size[0], im.size[1]))  # half the face out
        blurred = im.filter(ImageFilter.GaussianBlur(4))
    cut.save(tmp_path / "cut.jpg", quality=95)
    blurred.save(tmp_path / "blurred.jpg", quality=95)
    for name, reason in (("cut.jpg", "cut off"), ("blurred.jpg", "blurred")):
        answer = search_json(tmp_path / name, lfw_gallery)
        assert answer["too_poor"] and reason in answer["too_poor"], answer
        assert answer["identity"] is None and answer["unknown"] and answer["candidates"] == []
        assert answer["quality"]["ok"] is False
    text = runner.invoke(app, ["search", str(tmp_path / "blurred.jpg"), "--gallery", str(lfw_gallery)])
    assert "too poor to identify" in text.output and "blurred" in text.output


def test_an_old_gallery_gets_its_quality_measured(lfw_gallery: Path) -> None:
    con = sqlite3.connect(lfw_gallery / "gallery.db")
    before = dict(con.execute("SELECT face_id, q_sharpness FROM faces").fetchall())
    with con:  # as a gallery from before quality measures: nothing measured
        con.execute("UPDATE faces SET q_size = NULL, q_inside = NULL, q_sharpness = NULL, q_pose = NULL, "
                    "quality_issue = NULL")
    con.close()
    info = json.loads(runner.invoke(app, ["info", "--gallery", str(lfw_gallery), "--json"]).stdout)
    assert info["unmeasured_faces"] == len(before)
    result = runner.invoke(app, ["faces", "quality", "--gallery", str(lfw_gallery), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["measured"] == len(before) and report["without_sharpness"] == len(before)
    shown = runner.invoke(app, ["faces", "quality", "--gallery", str(lfw_gallery)])
    assert "--from-photos" in shown.output  # says what cannot be computed and how to get it
    result = runner.invoke(app, ["faces", "quality", "--from-photos", "--gallery", str(lfw_gallery), "--json"])
    report = json.loads(result.stdout)
    assert report["sharpness_measured"] == len(before) and report["without_sharpness"] == 0
    con = sqlite3.connect(lfw_gallery / "gallery.db")
    after = dict(con.execute("SELECT face_id, q_sharpness FROM faces").fetchall())
    low = con.execute("SELECT count(*) FROM faces WHERE quality_issue IS NOT NULL").fetchone()[0]
    con.close()
    for face_id, value in before.items():  # the same chips as the ingest's: the same sharpness
        assert after[face_id] == pytest.approx(value, rel=1e-5)
    shown = json.loads(runner.invoke(app, ["identities", "show", "Aaron_Peirsol", "--gallery", str(lfw_gallery),
                                           "--json"]).stdout)
    assert all(f["quality"]["sharpness"] is not None for f in shown["faces"])
    assert report["below_gate"] == low


def test_flip_is_kept_by_the_gallery(lfw_archive: Path, tmp_path: Path) -> None:
    g = tmp_path / "plain"
    first = runner.invoke(app, ["ingest", str(lfw_archive / "Aaron_Peirsol"), "--gallery", str(g), "--workers", "0",
                                "--no-flip", "--json"])
    assert first.exit_code == 0, first.output
    con = sqlite3.connect(g / "gallery.db")
    stamp = json.loads(con.execute("SELECT value FROM meta WHERE key = 'model'").fetchone()[0])
    con.close()
    assert "flip" not in stamp
    refused = runner.invoke(app, ["ingest", str(lfw_archive), "--gallery", str(g), "--workers", "0", "--flip"])
    assert refused.exit_code == 2 and "flip" in refused.output
    kept = runner.invoke(app, ["ingest", str(lfw_archive), "--gallery", str(g), "--workers", "0", "--json"])
    assert kept.exit_code == 0 and json.loads(kept.stdout)["photos"] == 8  # the rest, embedded the same way
