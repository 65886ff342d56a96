"""The `gallery` CLI: clear messages and exit code 2 for problems a user can fix, JSON contracts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from gallery.cli import app
from tests.conftest import requires_lfw

runner = CliRunner()


def test_missing_gallery_says_how_to_create_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["info", "--gallery", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "No gallery" in result.output and "gallery ingest" in result.output
    assert "Traceback" not in result.output


def test_missing_weights_offline_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACE_GALLERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACE_GALLERY_OFFLINE", "1")
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    (tmp_path / "photos").mkdir()
    result = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"),
                                 "--model", "facenet-vggface2"])
    assert result.exit_code == 2
    assert "--weights" in result.output and "dlib-resnet" in result.output
    assert "20180402-114759-vggface2.pt" in result.output
    bad = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g2"),
                              "--model", "facenet-vggface2", "--weights", str(tmp_path / "missing.pt")])
    assert bad.exit_code == 2 and "no such file" in bad.output


def test_unknown_model_and_label_source(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    result = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"),
                                 "--model", "nonsense"])
    assert result.exit_code == 2 and "Known models" in result.output
    result = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"),
                                 "--labels", "csv:" + str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "Label file not found" in result.output


def test_no_gpu_for_device_cuda(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    (tmp_path / "photos").mkdir()
    result = runner.invoke(app, ["ingest", str(tmp_path / "photos"), "--gallery", str(tmp_path / "g"),
                                 "--model", "facenet-untrained", "--device", "cuda"])
    assert result.exit_code == 2 and "no CUDA GPU" in result.output


def test_models_lists_the_untrained_warning() -> None:
    result = runner.invoke(app, ["models", "--json"])
    models = {m["name"]: m for m in json.loads(result.stdout)}
    assert models["dlib-resnet"]["offline"] and models["dlib-resnet"]["dim"] == 128
    assert "RANDOM" in models["facenet-untrained"]["warning"]
    assert models["facenet-vggface2"]["dim"] == 512 and not models["facenet-vggface2"]["offline"]


@requires_lfw
def test_ingest_info_identities_json(tmp_path: Path, lfw_archive: Path) -> None:
    result = runner.invoke(app, ["ingest", str(lfw_archive), "--gallery", str(tmp_path / "g"), "--model",
                                 "facenet-untrained", "--workers", "0", "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    for key in ("photos", "faces", "failed", "photos_per_s", "faces_per_s", "failures"):
        assert key in summary
    assert summary["photos"] == 12 and summary["faces"] >= 12 and summary["failed"] == 0
    assert "RANDOM" in summary["warning"]
    info = json.loads(runner.invoke(app, ["info", "--gallery", str(tmp_path / "g"), "--json"]).stdout)
    for key in ("model", "dim", "photos", "faces", "identities", "failed", "shards"):
        assert key in info
    assert info["model"] == "facenet-untrained" and info["dim"] == 512 and info["identities"] == 3
    ids = json.loads(runner.invoke(app, ["identities", "--gallery", str(tmp_path / "g"), "--json"]).stdout)
    assert {i["identity"]: i["faces"] for i in ids} == {"Aaron_Peirsol": 4, "Abdullah_Gul": 4, "Alejandro_Toledo": 4}
    human = runner.invoke(app, ["info", "--gallery", str(tmp_path / "g")])
    assert human.exit_code == 0 and "facenet-untrained" in human.output
