"""dlib's ResNet face descriptor ported to torch: file reader, registry, loading errors, exactness."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from gallery.device import resolve_device
from gallery.errors import ModelWeightsMissing
from gallery.faces.models import dlib_dat, get_model_spec, list_models
from gallery.faces.models.dlib_resnet import (
    DAT_FILENAME,
    SHAPE_PREDICTOR_5,
    DlibResNet,
    load_dlib_resnet_module,
    make_dlib_preprocess,
    packaged_weights,
)

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw-aj"


def _packaged_dat() -> Path:
    try:
        return packaged_weights()
    except ModelWeightsMissing as exc:
        pytest.skip(f"face_recognition_models is not installed: {exc}")


@pytest.fixture(scope="module")
def cache_env(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FACE_GALLERY_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def embedder(cache_env):
    _packaged_dat()
    return get_model_spec("dlib-resnet").load(resolve_device("cpu"))


# ------------------------------------------------------------------------------ file format
def test_reader_decodes_dlib_integers_and_floats():
    r = dlib_dat._Reader(bytes([0x01, 0x96, 0x81, 0x1C, 0x00, 0x02, 0x80, 0x12]))
    assert r.int() == 150
    assert r.int() == -28
    assert r.int() == 0
    assert r.int() == 0x1280
    # float_details: mantissa 0xa3d70a, exponent -28 -> 0.04 (the loss margin in dlib's file)
    r = dlib_dat._Reader(bytes([0x03, 0x0A, 0xD7, 0xA3, 0x81, 0x1C]))
    assert r.float() == pytest.approx(0.04, rel=1e-7)
    with pytest.raises(dlib_dat.DlibFormatError):
        dlib_dat._Reader(b"\x01").int()


def test_parse_cache_round_trip(tmp_path, monkeypatch):
    dat = _packaged_dat()
    monkeypatch.setenv("FACE_GALLERY_CACHE", str(tmp_path))
    first = dlib_dat.load_dlib_net(dat)
    cached = dlib_dat.converted_cache_path(dlib_dat.file_sha256(dat))
    assert cached.is_file() and cached.parent == tmp_path / "converted"
    assert not list(cached.parent.glob("*.tmp"))

    def no_parse(path):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(dlib_dat, "read_dlib_net", no_parse)
    second = dlib_dat.load_dlib_net(dat)
    assert first.input_attrs == second.input_attrs
    assert first.input_attrs["nr"] == 150
    assert first.input_attrs["avg_red"] == pytest.approx(122.782, abs=1e-4)
    assert [layer.kind for layer in first.layers] == [layer.kind for layer in second.layers]
    assert [kind for kind, _ in DlibResNet.expected_dlib_layers()] == [layer.kind for layer in first.layers]
    for a, b in zip(first.layers, second.layers):
        assert a.attrs == b.attrs
        for name in a.tensors:
            assert torch.equal(a.tensors[name], b.tensors[name])
    # A corrupt cache file is ignored and rebuilt.
    cached.write_bytes(b"not a torch file")
    monkeypatch.undo()
    monkeypatch.setenv("FACE_GALLERY_CACHE", str(tmp_path))
    third = dlib_dat.load_dlib_net(dat)
    assert len(third.layers) == len(first.layers)


def test_embed_shape_and_normalisation(embedder):
    chips = torch.randint(0, 256, (5, 3, 150, 150), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    out = embedder.embed(chips)
    assert out.shape == (5, 128) and out.dtype == torch.float32
    assert torch.allclose(out.norm(dim=1), torch.ones(5), atol=1e-5)
    assert embedder.embed(chips[:0]).shape == (0, 128)


# ------------------------------------------------------------------------- registry / errors
def test_registry_lists_dlib_resnet():
    spec = {s.name: s for s in list_models()}["dlib-resnet"]
    assert spec.dim == 128 and spec.input_size == 150
    assert spec.offline and spec.pretrained
    assert len(spec.template) == 5
    assert -1.0 < spec.default_threshold < 1.0 and spec.threshold_source


def test_bad_weights_path(tmp_path):
    spec = get_model_spec("dlib-resnet")
    with pytest.raises(ModelWeightsMissing, match="no such file"):
        spec.load(resolve_device("cpu"), weights=tmp_path / "missing.dat")
    garbage = tmp_path / DAT_FILENAME
    garbage.write_bytes(b"\x01\x01\x01\x05hello")
    with pytest.raises(ModelWeightsMissing):
        spec.load(resolve_device("cpu"), weights=garbage)


# --------------------------------------------------------------------------------- exactness
def _lfw_chips(n: int) -> np.ndarray:
    dlib = pytest.importorskip("dlib", reason="dlib (pip install dlib-bin) is needed to compare with dlib")
    if not (LFW / "images").is_dir():
        pytest.skip(f"LFW data not found at {LFW} (the shared data folder is absent)")
    from PIL import Image

    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(packaged_weights(SHAPE_PREDICTOR_5)))
    files = sorted((LFW / "images").rglob("*.jpg"))
    rng = np.random.default_rng(0)
    chips = []
    for i in rng.choice(len(files), 3 * n, replace=False):
        img = np.asarray(Image.open(files[i]).convert("RGB"))
        rects = detector(img, 0)
        if len(rects) == 0:
            continue
        chips.append(dlib.get_face_chip(img, predictor(img, rects[0]), 150, 0.25))
        if len(chips) == n:
            break
    assert len(chips) == n
    return np.stack(chips)


def test_matches_dlib_compute_face_descriptor(embedder):
    chips = _lfw_chips(24)
    import dlib

    rec = dlib.face_recognition_model_v1(str(packaged_weights()))
    ref = np.stack([np.array(d) for d in rec.compute_face_descriptor(list(chips))]).astype(np.float32)
    x = torch.from_numpy(chips).permute(0, 3, 1, 2).contiguous()
    module, means = load_dlib_resnet_module()
    with torch.inference_mode():
        raw = module(make_dlib_preprocess(means)(x.float())).numpy()
    assert np.abs(raw - ref).max() < 1e-4  # dlib's own (unnormalised) descriptor
    ours = embedder.embed(x).numpy()  # the Embedder path: channels_last, L2-normalised
    ref_n = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(ours - ref_n).max() < 1e-4
