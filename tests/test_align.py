"""Alignment: the similarity fit recovers a known transform and the warp lands points on the template."""

from __future__ import annotations

import numpy as np
import torch

from gallery.faces.align import align_faces, similarity_transform
from gallery.faces.detect import bucket_shape, main_face_index


def test_similarity_transform_recovers_known_transform() -> None:
    rng = np.random.default_rng(0)
    src = rng.random((5, 2)) * 100
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = (scale * (rot @ src.T)).T + shift
    m = similarity_transform(src, dst)
    np.testing.assert_allclose(m[:, :2], scale * rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_warp_puts_landmark_pixels_on_template() -> None:
    # Bright dots at "landmarks" in a rotated, scaled layout must land at the template positions.
    template = np.array([[30.0, 40.0], [70.0, 40.0], [50.0, 60.0], [35.0, 80.0], [65.0, 80.0]])
    angle = 0.4
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = (2.0 * (rot @ template.T)).T + np.array([120.0, 60.0])
    image = torch.zeros((3, 400, 400), dtype=torch.uint8)
    for x, y in landmarks:
        image[:, int(round(y)) - 2 : int(round(y)) + 3, int(round(x)) - 2 : int(round(x)) + 3] = 255
    chips = align_faces(image, landmarks[None], template, 100)
    assert chips.shape == (1, 3, 100, 100)
    for x, y in template:
        assert chips[0, 0, int(y), int(x)] > 200


def test_bucket_shape_and_main_face() -> None:
    assert bucket_shape(250, 250) == (256, 256)
    assert bucket_shape(64, 65) == (64, 96)
    boxes = np.array([[0, 0, 30, 30], [40, 40, 60, 60], [45, 30, 95, 80]], dtype=np.float32)
    assert main_face_index(boxes, 100, 100) == 2  # largest
    two_equal = np.array([[0, 0, 20, 20], [40, 40, 60, 60]], dtype=np.float32)
    assert main_face_index(two_equal, 100, 100) == 1  # same size: the central one
