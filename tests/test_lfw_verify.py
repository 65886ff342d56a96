"""benchmarks/lfw_verify.py: the pair reading, the 10-fold protocol and the product path's read-back."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmarks import lfw_verify as lv
from tests.conftest import LFW, lfw_photo, requires_lfw


def test_read_pairs_recovers_folds_from_same_then_different_runs(tmp_path: Path) -> None:
    text = "\n".join([
        "A\t1\t2", "B\t1\t3", "A\t1\tB\t2",        # fold 0: 2 same, 1 different
        "C\t2\t4", "A\t3\tC\t1", "B\t2\tC\t3",     # fold 1: 1 same, 2 different
        "10\t300",                                   # a header-like line is ignored
        "D\t1\t2",                                   # fold 2
    ])
    (tmp_path / "pairs.txt").write_text(text + "\n")
    pairs, same, folds = lv.read_pairs(tmp_path / "pairs.txt")
    assert pairs[0] == ("A", 1, "A", 2) and pairs[2] == ("A", 1, "B", 2)
    assert same.tolist() == [True, True, False, True, False, False, True]
    assert folds.tolist() == [0, 0, 0, 1, 1, 1, 2]
    assert lv.pair_keys(pairs) == [("A", 1), ("A", 2), ("A", 3), ("B", 1), ("B", 2), ("B", 3),
                                   ("C", 1), ("C", 2), ("C", 3), ("C", 4), ("D", 1), ("D", 2)]


@requires_lfw
def test_read_pairs_on_the_a_to_j_pairs() -> None:
    pairs, same, folds = lv.read_pairs(LFW / "pairs.txt")
    assert len(pairs) == 2349 and same.sum() == 1544 and (~same).sum() == 805
    assert np.unique(folds).tolist() == list(range(10))
    for f in range(10):  # each fold: its same pairs, then its different pairs
        s = same[folds == f]
        assert s[0] and not s[-1] and np.all(np.diff(s.astype(int)) <= 0)
    assert all(lv.image_path(LFW, *k).is_file() for k in lv.pair_keys(pairs))


def test_best_threshold_separable_and_plateau_middle() -> None:
    scores = np.array([0.1, 0.2, 0.3, 0.8, 0.9])
    same = np.array([False, False, False, True, True])
    t, acc = lv.best_threshold(scores, same)
    assert acc == 1.0 and 0.3 < t < 0.8 and t == pytest.approx(0.55)
    # all pairs the same person: every threshold at or below the lowest score is perfect
    t, acc = lv.best_threshold(np.array([0.5, 0.6]), np.array([True, True]))
    assert acc == 1.0 and t <= 0.5


def test_evaluate_ten_folds() -> None:
    rng = np.random.default_rng(0)
    same = np.tile([True, True, False], 40)
    folds = np.repeat(np.arange(10), 12)
    scores = np.where(same, rng.uniform(0.7, 1.0, same.size), rng.uniform(-0.2, 0.5, same.size))
    r = lv.evaluate(scores, same, folds)
    assert r["accuracy_mean"] == 1.0 and r["accuracy_std"] == 0.0 and len(r["fold_accuracies"]) == 10
    assert 0.5 < r["threshold_all_pairs"] < 0.7 and r["balanced_accuracy"] == 1.0
    flipped = lv.evaluate(scores, ~same, folds)  # scores that point the wrong way are not "accurate"
    assert flipped["accuracy_mean"] < 0.8


def test_pair_scores_fallback_counts_and_keeps_every_pair() -> None:
    u, v = np.array([1.0, 0.0]), np.array([0.6, 0.8])
    emb = {("A", 1): u, ("A", 2): v, ("B", 1): u}
    pairs = [("A", 1, "A", 2), ("A", 1, "C", 1), ("C", 2, "B", 1), ("A", 1, "B", 1)]
    scores, fallbacks = lv.pair_scores(emb, pairs)
    assert fallbacks == 2 and len(scores) == 4
    assert scores.tolist() == pytest.approx([0.6, lv.FALLBACK_SCORE, lv.FALLBACK_SCORE, 1.0])
    # a fallback pair is called "different" at any threshold the protocol can pick
    t, _ = lv.best_threshold(scores, np.array([True, True, False, True]))
    assert t > lv.FALLBACK_SCORE


def test_stage_photos_links_exactly_the_referenced_photos(tmp_path: Path) -> None:
    root = tmp_path / "data"
    for name, n in [("A", 1), ("A", 2), ("B", 7)]:
        p = lv.image_path(root, name, n)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(f"{name}{n}".encode())
    lv.image_path(root, "B", 8).write_bytes(b"unreferenced")
    dest = tmp_path / "photos"
    lv.stage_photos(root, [("A", 1), ("B", 7)], dest)
    staged = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg"))
    assert staged == ["A/A_0001.jpg", "B/B_0007.jpg"]
    assert (dest / "B" / "B_0007.jpg").is_symlink() and (dest / "B" / "B_0007.jpg").read_bytes() == b"B7"
    assert lv.file_sha256(dest / "A" / "A_0001.jpg") == lv.file_sha256(lv.image_path(root, "A", 1))
    with pytest.raises(FileNotFoundError):
        lv.stage_photos(root, [("C", 1)], tmp_path / "other")


@requires_lfw
def test_product_path_reads_main_faces_back_by_content(tmp_path: Path) -> None:
    """Three photos through the real ingest: a face, an identical copy of it, and one without a face."""
    from PIL import Image

    root = tmp_path / "data"
    for key, src in [(("X", 1), lfw_photo("Aaron_Peirsol", 1)), (("Y", 1), lfw_photo("Aaron_Peirsol", 1)),
                     (("X", 2), lfw_photo("Abdullah_Gul", 1))]:
        lv.image_path(root, *key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, lv.image_path(root, *key))
    lv.image_path(root, "Z", 1).parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (250, 250), (128, 128, 128)).save(lv.image_path(root, "Z", 1))
    keys = [("X", 1), ("X", 2), ("Y", 1), ("Z", 1)]
    emb, info = lv.product_embeddings(root, keys, tmp_path / "work")
    assert sorted(emb) == [("X", 1), ("X", 2), ("Y", 1)]
    assert np.array_equal(emb[("X", 1)], emb[("Y", 1)])  # identical files are one image
    assert np.linalg.norm(emb[("X", 1)]) == pytest.approx(1.0, abs=1e-5)
    assert info["images"] == 3 and info["images_with_main_face"] == 2
    assert info["photos_without_embedding"] == ["Z_0001"] and info["fallback_reasons"] == {"no_face": 1}
    assert info["ingest_summary"]["duplicates"] == 1
    scores, fallbacks = lv.pair_scores(emb, [("X", 1, "Y", 1), ("X", 1, "X", 2), ("X", 1, "Z", 1)])
    assert fallbacks == 1 and scores[0] == pytest.approx(1.0) and scores[1] < 0.9
    assert scores[2] == lv.FALLBACK_SCORE
