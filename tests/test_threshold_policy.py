"""No stranger named by default: the threshold policy (calibrated > conservative default for a labeled
gallery > model default for an unlabeled one), automatic calibration, and staleness."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from search.threshold import (
    NO_ONE,
    CalibrationStatus,
    calibration_status,
    conservative_threshold,
    needs_calibration,
    resolve_one_to_one,
    resolve_threshold,
)
from tests.helpers.galleries import stamp, unit_vectors

runner = CliRunner()
DIM = 16


def test_conservative_default_grows_with_the_gallery() -> None:
    dlib = get_model_spec("dlib-resnet")
    values = [conservative_threshold(dlib, k)[0] for k in (1, 2, 3, 10, 30, 265, 1000, 100_000)]
    # on the decision statistic (search.decision), never lower for a larger gallery; past 1,000 the last holds
    assert values == sorted(values) and values[0] == pytest.approx(0.5688) and values[-1] == pytest.approx(0.5852)
    assert 0.5688 < values[1] < 0.5852  # interpolated in log K between 1 and 3
    assert "conservative default for 265 identities" in conservative_threshold(dlib, 265)[1]
    untrained = get_model_spec("facenet-untrained")
    value, source = conservative_threshold(untrained, 50)
    assert value == NO_ONE and "no one is named" in source


def test_needs_calibration_rule() -> None:
    def status(**kw) -> CalibrationStatus:
        base = dict(calibrated_at=None, identities_at_calibration=None, labeled_faces_at_calibration=None,
                    labeled_faces=100, mated_identities=20, stale=False, can_calibrate=True)
        return CalibrationStatus(**{**base, **kw})

    assert needs_calibration(status())
    assert not needs_calibration(status(can_calibrate=False, mated_identities=3))
    assert not needs_calibration(status(calibrated_at=1.0))
    assert needs_calibration(status(calibrated_at=1.0, stale=True))


def test_policy_order_and_automatic_calibration(tmp_path: Path) -> None:
    spec = replace(get_model_spec("dlib-resnet"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test")
    centres = unit_vectors(24, DIM, seed=5)
    rng = np.random.default_rng(1)

    def faces(ids: range, per: int) -> tuple[np.ndarray, list[str]]:
        x = np.repeat(centres[list(ids)], per, axis=0) + 0.15 * rng.standard_normal((len(ids) * per, DIM))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"p{i}" for i in ids for _ in
                                                                                    range(per)]

    g = str(tmp_path / "g")
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as gal:
            append_embedded_faces(gal, stamp(DIM), unit_vectors(5, DIM, seed=0))  # unlabeled only
            assert resolve_one_to_one(gal)[1].startswith("model default")  # face-to-face searches: 1:1
            x, names = faces(range(12), 3)
            append_embedded_faces(gal, stamp(DIM), x, identities=names)
            value, source = resolve_threshold(gal)  # labeled, uncalibrated, a model without measurements
            assert value == NO_ONE and "no one is named" in source
            assert resolve_threshold(gal, 0.3) == (0.3, "--threshold")
        built = runner.invoke(app, ["index", "build", "--gallery", g, "--json"])
        assert built.exit_code == 0, built.output
        calibration = json.loads(built.stdout)["calibration"]
        assert calibration is not None and calibration["identities"] == 12
        info = json.loads(runner.invoke(app, ["info", "--gallery", g, "--json"]).stdout)
        assert info["threshold_source"].startswith("calibrated") and not info["calibration"]["stale"]
        # nothing changed: no second calibration
        again = runner.invoke(app, ["index", "update", "--gallery", g, "--json"])
        assert json.loads(again.stdout)["calibration"] is None
        # the labeled gallery grows by half: the calibration is stale, and the next update redoes it
        with Gallery.open(tmp_path / "g") as gal:
            x, names = faces(range(12, 24), 2)
            append_embedded_faces(gal, stamp(DIM), x, identities=names)
            assert calibration_status(gal).stale
        info = runner.invoke(app, ["info", "--gallery", g])
        assert "stale" in info.output
        updated = json.loads(runner.invoke(app, ["index", "update", "--gallery", g, "--json"]).stdout)
        assert updated["calibration"]["identities"] == 24


def test_small_calibration_never_goes_below_the_conservative_default(tmp_path: Path, monkeypatch) -> None:
    """Found by a new-user review: 22 non-mated searches cannot measure 1%; the calibration of a small
    gallery lowered the threshold and named 4-10% of strangers."""
    from search import threshold as policy

    spec = replace(get_model_spec("dlib-resnet"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test")
    monkeypatch.setitem(policy.CONSERVATIVE, spec.name, [(1, 0.97), (1000, 0.99)])
    x = unit_vectors(30, DIM, seed=2, clusters=10)
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as gal:
            append_embedded_faces(gal, stamp(DIM), x, identities=[f"p{i % 10}" for i in range(30)])
        result = runner.invoke(app, ["index", "build", "--gallery", str(tmp_path / "g"), "--json"])
        calibration = json.loads(result.stdout)["calibration"]
        assert calibration["nonmated_searches"] == 30 and calibration["threshold"] >= 0.97
        info = json.loads(runner.invoke(app, ["info", "--gallery", str(tmp_path / "g"), "--json"]).stdout)
        assert "raised to the conservative default" in info["threshold_source"]
