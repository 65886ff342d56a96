"""The batched MTCNN (gallery.faces.mtcnn_batched) computes what facenet-pytorch's MTCNN.detect does.

The pure parts are checked against the operations they replace (area interpolation, greedy NMS,
facenet-pytorch's pyramid and P-Net); the whole detector against MTCNN.detect on random photos with
low stage thresholds (so every stage has hundreds of candidates, no data needed) and on real LFW
photos plus made-up multi-face and large ones (skipped without ../shared/data).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmarks.detector_compare import batched_detect, match_faces, reference_detect
from gallery.errors import GalleryError
from gallery.faces.detect import DETECTOR_ENV, FaceDetector, detector_kind
from gallery.faces.mtcnn_batched import (
    BatchedMTCNN,
    Level,
    area_crops,
    level_size,
    min_overlap_nms,
    pack_levels,
    pnet_out_side,
    pyramid_scales,
)
from tests.conftest import LFW_IMAGES, requires_lfw


def test_pyramid_matches_facenet_pytorch_formula() -> None:
    scales = pyramid_scales(250, 250, 20)
    assert scales[0] == pytest.approx(0.6) and len(scales) == 8
    assert all(b == pytest.approx(a * 0.709) for a, b in zip(scales, scales[1:]))
    assert min(level_size(250, 250, scales[-1])) >= 12 and 250 * scales[-1] * 0.709 < 12
    assert pyramid_scales(11, 400, 12) == []  # too small for one level
    assert pnet_out_side(12) == 1 and pnet_out_side(13) == 2 and pnet_out_side(14) == 2


def test_pack_levels_never_overlaps_and_uses_even_offsets() -> None:
    rng = np.random.default_rng(0)
    levels = [Level(i, 1.0, int(h), int(w)) for i, (h, w) in enumerate(rng.integers(12, 300, (60, 2)))]
    canvases = pack_levels(levels, 200_000)
    assert len(canvases) > 1
    for c, (ch, cw) in enumerate(canvases):
        occupied = np.zeros((ch, cw), bool)
        for lv in (lv for lv in levels if lv.canvas == c):
            assert lv.y % 2 == 0 and lv.x % 2 == 0
            assert lv.y + lv.height <= ch and lv.x + lv.width <= cw
            assert not occupied[lv.y : lv.y + lv.height, lv.x : lv.x + lv.width].any()
            occupied[lv.y : lv.y + lv.height, lv.x : lv.x + lv.width] = True
    assert sum(lv.height * lv.width for lv in levels) / sum(h * w for h, w in canvases) > 0.6


def test_area_crops_equal_area_interpolation_of_each_crop() -> None:
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((37, 51), (120, 90))]
    mtcnn = BatchedMTCNN("cpu")
    tables, bases, strides = mtcnn._summed_area_tables([torch.from_numpy(im) for im in images])
    crops = [(0, (0, 37), (0, 51)), (0, (5, 6), (7, 9)), (1, (10, 110), (3, 80)), (1, (0, 13), (60, 90))]
    idx = torch.tensor([c[0] for c in crops])
    rows = torch.tensor([c[1] for c in crops])
    cols = torch.tensor([c[2] for c in crops])
    for size in (24, 48):  # crops smaller and larger than the output
        got = area_crops(tables, bases[idx], strides[idx], rows, cols, size)
        for k, (i, (y0, y1), (x0, x1)) in enumerate(crops):
            crop = torch.from_numpy(images[i][y0:y1, x0:x1]).permute(2, 0, 1)[None].float()
            want = F.interpolate(crop, size=(size, size), mode="area")[0]
            torch.testing.assert_close(got[k], want, rtol=0, atol=1e-4)


def _greedy_min_nms(boxes: np.ndarray, scores: np.ndarray, threshold: float) -> list[int]:
    """The textbook loop (facenet-pytorch's nms_numpy with method 'Min')."""
    area = (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)
    order, keep = list(np.argsort(-scores, kind="stable")), []
    while order:
        i, order = order[0], order[1:]
        keep.append(int(i))
        rest = np.array(order, dtype=np.int64)
        if not len(rest):
            break
        w = np.maximum(0, np.minimum(boxes[i, 2], boxes[rest, 2]) - np.maximum(boxes[i, 0], boxes[rest, 0]) + 1)
        h = np.maximum(0, np.minimum(boxes[i, 3], boxes[rest, 3]) - np.maximum(boxes[i, 1], boxes[rest, 1]) + 1)
        order = [int(j) for j, o in zip(rest, w * h / np.minimum(area[i], area[rest])) if o <= threshold]
    return keep


def test_min_overlap_nms_equals_the_greedy_loop_within_each_photo() -> None:
    rng = np.random.default_rng(2)
    xy = rng.uniform(0, 100, (300, 2))
    boxes = np.concatenate([xy, xy + rng.uniform(5, 40, (300, 2))], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, 300).astype(np.float32)
    groups = rng.integers(0, 3, 300)
    got = min_overlap_nms(torch.from_numpy(boxes), torch.from_numpy(scores), torch.from_numpy(groups), 0.7)
    want = []
    for g in range(3):
        members = np.flatnonzero(groups == g)
        want += [int(members[k]) for k in _greedy_min_nms(boxes[members], scores[members], 0.7)]
    assert sorted(got.tolist()) == sorted(want)
    assert np.all(np.diff(scores[got.numpy()]) <= 0)  # highest score first
    assert min_overlap_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long), 0.7).numel() == 0


def test_whole_detector_equals_mtcnn_detect_on_random_photos_of_mixed_sizes() -> None:
    """Low thresholds give hundreds of candidates per stage on noise; odd sizes exercise P-Net's
    partial pool windows; one batch of mixed sizes against each photo alone."""
    from facenet_pytorch import MTCNN

    rng = np.random.default_rng(3)
    images = [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for h, w in ((61, 83), (100, 100), (47, 129), (100, 100))]
    thresholds = (0.3, 0.3, 0.3)
    reference = MTCNN(keep_all=True, min_face_size=20, thresholds=list(thresholds), post_process=False)
    found = BatchedMTCNN("cpu", thresholds).detect(images, [20] * len(images))
    total = 0
    for image, new in zip(images, found):
        boxes, probs, points = reference.detect(torch.from_numpy(image[None]), landmarks=True)
        if boxes[0] is None:
            assert len(new.boxes) == 0
            continue
        total += len(boxes[0])
        np.testing.assert_allclose(new.boxes, boxes[0].astype(np.float32), atol=1e-2)
        np.testing.assert_allclose(new.probs, probs[0].astype(np.float32), atol=1e-4)
        np.testing.assert_allclose(new.points, points[0].astype(np.float32), atol=1e-2)
    assert total > 0
    assert BatchedMTCNN("cpu").detect([], []) == []


def test_detector_choice_defaults_to_batched_and_refuses_unknown_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DETECTOR_ENV, raising=False)
    monkeypatch.delenv("GALLERY_DETECTOR", raising=False)  # the deprecated name (tests/test_settings.py)
    assert DETECTOR_ENV == "FACE_GALLERY_DETECTOR"
    assert detector_kind() == "mtcnn-batched"
    monkeypatch.setenv(DETECTOR_ENV, "facenet-mtcnn")
    assert detector_kind() == "facenet-mtcnn" and detector_kind("mtcnn-batched") == "mtcnn-batched"
    monkeypatch.setenv(DETECTOR_ENV, "retina")
    with pytest.raises(GalleryError, match=f"retina.*{DETECTOR_ENV}.*mtcnn-batched, facenet-mtcnn, or unset"):
        detector_kind()


def test_both_detector_kinds_map_results_to_original_pixels() -> None:
    """A photo decoded at half size: boxes come back in original pixels from either detector."""
    rng = np.random.default_rng(4)
    image = rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)
    results = [FaceDetector("cpu", 12, 0.0, (0.3, 0.3, 0.3), kind=k).detect([image], [0.5])[0]
               for k in ("mtcnn-batched", "facenet-mtcnn")]
    for det in results:
        assert det.boxes.shape[1:] == (4,) and det.landmarks.shape[1:] == (5, 2)
        if len(det):
            assert det.boxes[:, [0, 2]].max() <= 140 + 1e-3 and det.boxes[:, [1, 3]].max() <= 180 + 1e-3


@requires_lfw
def test_equivalent_to_mtcnn_detect_on_real_photos() -> None:
    from PIL import Image

    from gallery.faces.decode import decode_photo

    files = sorted(LFW_IMAGES.rglob("*.jpg"))
    rng = np.random.default_rng(5)
    images = [decode_photo(str(files[i]), 0, 0).pixels for i in rng.choice(len(files), 16, replace=False)]
    grid2 = np.concatenate([np.concatenate(images[0:2], axis=1), np.concatenate(images[2:4], axis=1)])
    grid3 = np.concatenate([np.concatenate(images[k : k + 3], axis=1) for k in (4, 7, 10)])
    upscaled = np.asarray(Image.fromarray(images[13]).resize((600, 600), Image.Resampling.BICUBIC))
    photos = images + [grid2, grid3, upscaled]  # one batch of three sizes for the batched detector
    matches = [match_faces(r, n) for r, n in zip(reference_detect(photos), batched_detect(photos, batch=8))]
    assert all(m["same"] for m in matches), [(m["ref"], m["new"]) for m in matches if not m["same"]]
    assert sum(m["ref"] for m in matches[len(images):]) >= 4 + 9 + 1  # the grids are multi-face photos
    assert min(v for m in matches for v in m["iou"]) >= 0.95
    assert max(v for m in matches for v in m["landmark_px"]) <= 1.5


def _gpu_suite(tmp_path, *args: str):
    import json
    import subprocess
    import sys

    from tests.conftest import REPO, copy_lfw_people

    copy_lfw_people(tmp_path / "photos", {"Aaron_Peirsol": 2, "Abdullah_Gul": 2})
    out = tmp_path / "suite.json"
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_suite.py"), "--images",
                           str(tmp_path / "photos"), "--output", str(out), "--decode-seconds", "0.3", *args],
                          capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return proc.stdout, {(r["section"], r["figure"]): r for r in json.loads(out.read_text())}


@requires_lfw
def test_gpu_suite_cpu_smoke_run_reaches_its_table(tmp_path) -> None:
    """`--device cpu` runs every section on the CPU (tiny sizes); GPU-only figures say why they are absent."""
    stdout, rows = _gpu_suite(tmp_path, "--device", "cpu", "--photos", "4", "--large", "1", "--batch", "4",
                              "--workers", "0", "--queries", "1", "--faiss-vectors", "2000")
    assert not [key for key in rows if key[1] == "FAILED"], stdout
    assert rows[("ingest 250x250", "end to end")]["value"].endswith("photos/s")
    assert rows[("ingest 1080p", "detect alone")]["value"].endswith("photos/s")
    assert rows[("searcher", "photo queries, one at a time")]["value"].endswith("queries/s")
    assert rows[("embedding", "fp16 vs fp32 max cosine difference")]["value"] == "not measured"
    assert rows[("faiss gpu", "build + search")]["value"] == "not measured"


@requires_lfw
@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the answer of a machine without a CUDA device")
def test_gpu_suite_says_no_cuda_device_and_exits_0(tmp_path) -> None:
    stdout, rows = _gpu_suite(tmp_path, "--device", "cuda", "--photos", "4", "--large", "1")
    assert "no CUDA device" in stdout
    assert rows[("gpu", "every GPU path")]["note"] == "no CUDA device"
    assert rows[("decode", "decode alone, LFW 250x250")]["value"].endswith("photos/s per core")
