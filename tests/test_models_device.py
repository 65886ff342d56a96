"""The model table, the one model decision for a gallery, and the one device decision."""

from __future__ import annotations

import sys
from dataclasses import replace

import pytest

from gallery.device import resolve_device, resolve_index_device
from gallery.errors import DeviceUnavailable, GalleryError, ModelMismatch, UnknownModelError
from gallery.faces.models import DEFAULT_MODEL, get_model_spec, list_models, model_for_gallery, registered


def test_registry_is_a_table_that_imports_no_torch() -> None:
    import subprocess

    code = "import sys, gallery.faces.models as m; m.list_models(); print('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
    names = [s.name for s in list_models()]
    assert DEFAULT_MODEL == "dlib-resnet" and DEFAULT_MODEL in names and names == sorted(names)
    with pytest.raises(UnknownModelError, match="Known models"):
        get_model_spec("nope")


def test_registered_is_scoped() -> None:
    spec = replace(get_model_spec("facenet-untrained"), name="test-scoped")
    with registered(spec):
        assert get_model_spec("test-scoped") is spec
    with pytest.raises(UnknownModelError):
        get_model_spec("test-scoped")


def test_model_for_gallery_defaults_and_mismatch() -> None:
    assert model_for_gallery(None).name == "dlib-resnet"  # a new gallery
    assert model_for_gallery(None, "facenet-untrained").name == "facenet-untrained"
    stamp = get_model_spec("facenet-untrained").stamp()
    assert model_for_gallery(stamp).name == "facenet-untrained"  # no --model: the gallery's own
    assert model_for_gallery(stamp, "facenet-untrained").name == "facenet-untrained"
    with pytest.raises(ModelMismatch, match="gallery uses 'facenet-untrained'"):
        model_for_gallery(stamp, "dlib-resnet")
    with pytest.raises(ModelMismatch, match="other preprocessing"):
        model_for_gallery({**stamp, "preprocessing": "old"})


def test_a_gallery_keeps_the_flip_setting_it_was_built_with() -> None:
    from dataclasses import replace

    from gallery.faces.models.registry import FLIP_DEFAULT

    assert model_for_gallery(None).flip is FLIP_DEFAULT  # a new gallery: the measured default
    plain = get_model_spec("dlib-resnet").stamp()
    assert "flip" not in plain and model_for_gallery(plain).flip is False  # galleries from before flip
    flipped = replace(get_model_spec("dlib-resnet"), flip=True).stamp()
    assert flipped == {**plain, "flip": True} and model_for_gallery(flipped).flip is True


def test_device_decision() -> None:
    import torch

    cpu = resolve_device("cpu")
    assert cpu.name == "cpu" and not cpu.half and not cpu.is_cuda
    assert resolve_device("auto").name == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(DeviceUnavailable, match="Unknown device"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        for name in ("cuda", "cuda:1"):
            with pytest.raises(DeviceUnavailable, match="no CUDA GPU"):
                resolve_device(name)
    assert resolve_index_device("cpu") == "cpu"
    assert isinstance(DeviceUnavailable("x"), GalleryError)


def test_half_precision_on_every_cuda_device() -> None:
    from gallery.device import TorchDevice

    assert TorchDevice("cuda").half and TorchDevice("cuda:1").half and not TorchDevice("cpu").half
