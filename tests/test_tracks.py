"""Linking faces across sampled video frames into tracks (pure logic: boxes, embeddings, quality)."""

from __future__ import annotations

import numpy as np

from gallery.faces.tracks import KEEP, MAX_GAP, Observation, TrackLinker


def _unit(seed: int, dim: int = 8) -> np.ndarray:
    v = np.random.default_rng(seed).normal(size=dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


A, B = _unit(1), _unit(2)  # two people: cosine far below any same-person threshold


def _obs(t: float, x: float, who: np.ndarray, size: float = 50.0, issue: str | None = None) -> Observation:
    return Observation(t, np.array([x, 10, x + 50, 60], np.float32), 0.99, np.zeros((5, 2), np.float32), who,
                       {"q_size": size, "q_pose": 0.1, "quality_issue": issue})


def test_moving_faces_stay_in_their_tracks_and_a_cut_ends_them() -> None:
    linker = TrackLinker(0.9)
    for k in range(6):  # A walks right, B walks left, 0.5 s apart
        linker.add_frame(k * 0.5, False, [_obs(k * 0.5, 10 + 8 * k, A), _obs(k * 0.5, 200 - 8 * k, B)])
    linker.add_frame(3.0, True, [_obs(3.0, 10 + 8 * 6, A)])  # the same person right after a cut: a new track
    tracks = linker.finish()
    assert [(t.start, t.end, t.count) for t in tracks] == [(0.0, 2.5, 6), (0.0, 2.5, 6), (3.0, 3.0, 1)]
    assert float(tracks[0].template() @ A) > 0.99 and float(tracks[1].template() @ B) > 0.99


def test_two_people_whose_boxes_overlap_are_not_mixed_up() -> None:
    linker = TrackLinker(0.9)
    linker.add_frame(0.0, False, [_obs(0.0, 100, A)])
    linker.add_frame(0.5, False, [_obs(0.5, 105, B)])  # B where A was: the boxes overlap, the faces do not match
    assert len(linker.finish()) == 2


def test_a_fast_jump_links_by_embedding_and_a_long_absence_ends_a_track() -> None:
    linker = TrackLinker(0.9)
    linker.add_frame(0.0, False, [_obs(0.0, 0, A)])
    linker.add_frame(0.5, False, [_obs(0.5, 300, A)])  # no overlap, same face: the same track
    linker.add_frame(0.5 + MAX_GAP + 0.5, False, [_obs(0.5 + MAX_GAP + 0.5, 300, A)])  # gone too long: a new one
    assert [t.count for t in linker.finish()] == [2, 1]


def test_without_a_model_threshold_only_box_overlap_links() -> None:
    linker = TrackLinker(1.5)
    linker.add_frame(0.0, False, [_obs(0.0, 0, A)])
    linker.add_frame(0.5, False, [_obs(0.5, 300, A)])
    linker.add_frame(1.0, False, [_obs(1.0, 305, B)])
    assert [t.count for t in linker.finish()] == [1, 2]


def test_a_track_keeps_its_best_faces_by_quality() -> None:
    linker = TrackLinker(0.9)
    sizes = [30, 80, 60, 90, 40]
    for k, size in enumerate(sizes):
        linker.add_frame(k * 0.5, False, [_obs(k * 0.5, 10, A, size, issue="blurred" if size == 90 else None)])
    (track,) = linker.finish()
    # faces passing the quality gate first (largest first), the flagged one only after them
    assert [o.quality["q_size"] for o in track.best] == [80, 60, 40][:KEEP]
