"""Models run from the files users bring (Keras .h5 from deepface and keras-vggface, ONNX): a gallery
built from random-weight files in each format works end to end (ingest, index, search, calibrate,
cluster, serve), its stamp records the weights' SHA-256, later commands find the file again from the
cache, and another file is refused. Random weights identify nobody: these tests check the pipeline,
never accuracy. (That the networks equal their references: tests/test_reference_equivalence.py.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models import get_model_spec, model_for_gallery
from gallery.faces.models.registry import ONNX_PRESETS, onnx_spec
from tests.conftest import copy_lfw_people, lfw_photo, requires_lfw
from tests.helpers import weight_files

runner = CliRunner()
PEOPLE = {"Al_Gore": 3, "Ben_Affleck": 3, "Celine_Dion": 3}


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def run(*args: str, code: int = 0) -> str:
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def json_lines(output: str) -> list[dict]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def weights_file(kind: str, folder: Path, seed: int = 0) -> tuple[str, Path, list[str]]:
    """(model, file, extra CLI arguments) for one format."""
    if kind == "onnx-arcface":
        pytest.importorskip("onnxruntime", reason="--model onnx needs the [onnx] extra (onnxruntime)")
        pytest.importorskip("onnx", reason="exporting a test model needs the [onnx] extra (onnx)")
        return "onnx", weight_files.write_onnx_embedder(folder / f"w600k_test{seed}.onnx", seed=seed), [
            "--preset", "arcface-112"]
    pytest.importorskip("h5py", reason="Keras .h5 weights need the [keras-weights] extra (h5py)")
    if kind == "deepface-vgg-face":
        layers = weight_files.vgg16_layers("deepface")
        return "vggface-vgg16", weight_files.write_keras2_h5(folder / "vgg_face_weights.h5", layers, seed), []
    se = kind == "keras-vggface-senet50"
    layers = weight_files.vggface2_layers(se, top=not se)  # the notop file of one, the top file of the other
    name = f"rcmalli_vggface_tf_{'notop_' if se else ''}{'senet50' if se else 'resnet50'}.h5"
    model = "vggface2-senet50" if se else "vggface2-resnet50"
    return model, weight_files.write_keras2_h5(folder / name, layers, seed), []


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("FACE_GALLERY_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FACE_GALLERY_OFFLINE", "1")
    return tmp_path / "cache"


@requires_lfw
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["deepface-vgg-face", "keras-vggface-resnet50", "keras-vggface-senet50",
                                  "onnx-arcface"])
def test_a_gallery_from_a_brought_weights_file_works_end_to_end(kind: str, tmp_path: Path, cache: Path) -> None:
    model, weights, extra = weights_file(kind, tmp_path)
    archive, gallery = tmp_path / "archive", tmp_path / "gallery"
    copy_lfw_people(archive, PEOPLE)
    summary = json.loads(run("ingest", archive, "--gallery", gallery, "--model", model, "--weights", weights,
                             *extra, "--workers", "0", "--json"))
    assert summary["faces"] >= 9 and summary["model"] == model
    info = json.loads(run("info", "--gallery", gallery, "--json"))
    stamp = info["model_stamp"]
    assert stamp["name"] == model and stamp["weights_sha256"] == sha256(weights)
    assert stamp["dim"] == (64 if model == "onnx" else get_model_spec(model).dim)
    if model == "onnx":
        assert stamp["preset"] == "arcface-112" and stamp["input_size"] == 112
    assert (cache / "weights" / "by-sha256" / sha256(weights)).is_file()  # found again from here

    run("index", "build", "--gallery", gallery)
    # Search without --weights: the file is found again from the cache by its hash.
    query = lfw_photo("Al_Gore", 4)
    answers = json_lines(run("search", query, "--gallery", gallery, "--json"))
    assert answers and answers[0]["candidates"], answers
    assert all(np.isfinite(c["score"]) for c in answers[0]["candidates"])
    report = json.loads(run("calibrate", "--gallery", gallery, "--json"))
    assert -1.0 <= report["threshold"] <= 1.000001
    clusters = run("cluster", "--gallery", gallery, "--threshold", "0.9", "--json")
    assert json.loads(clusters) is not None

    # Another file for the same model is another model: refused, naming both hashes, before any work
    # (so the other file need not even be loadable).
    other = tmp_path / f"other{weights.suffix}"
    other.write_bytes(b"other weights")
    refused = run("search", query, "--gallery", gallery, "--weights", other, code=2)
    assert "Weights mismatch" in refused and sha256(other)[:16] in refused and sha256(weights)[:16] in refused
    refused = run("ingest", archive, "--gallery", gallery, "--weights", other, code=2)
    assert "Weights mismatch" in refused
    # The original file, given again, is accepted.
    again = json_lines(run("search", query, "--gallery", gallery, "--weights", weights, "--json"))
    # the same neighbours and scores (the calibration above changed the rule, so not the statistic)
    def found(lines: list[dict]) -> list[list[tuple]]:
        return [[(c["identity"], c["face_id"], c["score"], c["template_score"]) for c in a["candidates"]]
                for a in lines]

    assert found(again) == found(answers)


@requires_lfw
@pytest.mark.slow
def test_a_brought_model_gallery_serves(tmp_path: Path, cache: Path) -> None:
    """`gallery serve` (a new process) finds the weights by the gallery's hash and answers a search."""
    from tests.test_serve import Server, post_photo

    model, weights, extra = weights_file("onnx-arcface", tmp_path)
    archive, gallery = tmp_path / "archive", tmp_path / "gallery"
    copy_lfw_people(archive, PEOPLE)
    run("ingest", archive, "--gallery", gallery, "--model", model, "--weights", weights, *extra, "--workers", "0")
    run("index", "build", "--gallery", gallery)
    server = Server(gallery, log=tmp_path / "serve.log")
    try:
        response = post_photo(server.client(), lfw_photo("Ben_Affleck", 4))
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert results and results[0]["candidates"] and results[0]["face"]["is_main"] is not None
    finally:
        server.close()
    assert "Traceback" not in (tmp_path / "serve.log").read_text()


def test_missing_cached_weights_say_what_to_do(tmp_path: Path, cache: Path) -> None:
    spec = model_for_gallery({**get_model_spec("vggface2-resnet50").stamp(), "weights_sha256": "ab" * 32})
    from gallery.device import resolve_device
    from gallery.errors import ModelWeightsMissing

    with pytest.raises(ModelWeightsMissing, match="Pass the file with --weights"):
        spec.load(resolve_device("cpu"))


def test_a_new_model_without_weights_names_the_formats(tmp_path: Path, cache: Path) -> None:
    (tmp_path / "photos").mkdir()
    out = run("ingest", tmp_path / "photos", "--gallery", tmp_path / "g", "--model", "vggface-vgg16", code=2)
    assert "vgg_face_weights.h5" in out and "--weights" in out
    out = run("ingest", tmp_path / "photos", "--gallery", tmp_path / "g", "--model", "onnx", code=2)
    assert "needs --preset" in out and "arcface-112" in out
    out = run("ingest", tmp_path / "photos", "--gallery", tmp_path / "g", "--model", "dlib-resnet", "--preset",
              "arcface-112", code=2)
    assert "--preset is for --model onnx" in out


def test_wrong_file_for_a_model_is_a_clear_error(tmp_path: Path, cache: Path) -> None:
    pytest.importorskip("h5py")
    from gallery.device import resolve_device
    from gallery.errors import ModelWeightsMissing

    resnet = weight_files.write_keras2_h5(tmp_path / "resnet.h5", weight_files.vggface2_layers(False), 0)
    with pytest.raises(ModelWeightsMissing, match="not VGGFace2 SE-ResNet-50"):
        get_model_spec("vggface2-senet50").load(resolve_device("cpu"), resnet)
    with pytest.raises(ModelWeightsMissing, match="not VGG-Face"):
        get_model_spec("vggface-vgg16").load(resolve_device("cpu"), resnet)
    garbage = tmp_path / "garbage.h5"
    garbage.write_bytes(b"not hdf5 at all")
    with pytest.raises(ModelWeightsMissing, match="not an HDF5 file"):
        get_model_spec("vggface2-resnet50").load(resolve_device("cpu"), garbage)


def test_stamp_of_old_galleries_and_presets() -> None:
    spec = get_model_spec("dlib-resnet")
    legacy = spec.stamp()  # a gallery stamped before weights were hashed
    assert "weights_sha256" not in legacy and model_for_gallery(legacy).weights_sha256 is None
    hashed = {**legacy, "weights_sha256": "cd" * 32}
    assert model_for_gallery(hashed).weights_sha256 == "cd" * 32
    assert model_for_gallery(hashed).stamp() == hashed
    onnx = {**onnx_spec("sface-112").stamp(), "dim": 128, "weights_sha256": "ef" * 32}
    reopened = model_for_gallery(onnx)
    assert reopened.preset == "sface-112" and reopened.dim == 128 and reopened.stamp() == onnx
    from gallery.errors import ModelMismatch

    with pytest.raises(ModelMismatch, match="Preset mismatch"):
        model_for_gallery(onnx, preset="arcface-112")
    assert set(ONNX_PRESETS) == {"arcface-112", "sface-112", "adaface-112", "facenet-160"}


def test_models_command_lists_the_brought_models() -> None:
    listed = {m["name"]: m for m in json.loads(run("models", "--json"))}
    assert listed["vggface-vgg16"]["dim"] == 4096 and "vgg_face_weights.h5" in listed["vggface-vgg16"]["weights"]
    assert listed["vggface2-senet50"]["default_threshold"] is None  # none published: calibrate
    assert listed["onnx"]["dim"] is None and "arcface-112" in listed["onnx"]["presets"]
