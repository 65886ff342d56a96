"""A photo search starts without what it does not need.

The detector calls one torchvision kernel (NMS): gallery.faces.nms loads it without importing the
torchvision package (whose import pulls in every torchvision model and torch's compiler stack), and
gallery.faces.mtcnn_nets defines MTCNN's networks without importing facenet-pytorch (which imports
torchvision). These check that both give what the libraries give, and that a real `gallery search`
process imports neither torchvision nor torch._dynamo.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from gallery.faces import nms
from gallery.faces.mtcnn_nets import ONet, PNet, RNet, weights_path
from tests.conftest import lfw_photo, requires_lfw

ROOT = Path(__file__).resolve().parents[1]


def _boxes(rng: np.random.Generator, n: int) -> torch.Tensor:
    xy = rng.uniform(0, 200, (n, 2))
    wh = rng.uniform(5, 60, (n, 2))
    return torch.tensor(np.concatenate([xy, xy + wh], axis=1), dtype=torch.float32)


@pytest.mark.parametrize("n", [0, 1, 40, 300, 1500])  # 1500 boxes: torchvision's per-group strategy
def test_batched_nms_keeps_what_torchvision_keeps(n: int) -> None:
    from torchvision.ops import batched_nms as reference

    rng = np.random.default_rng(n)
    boxes = _boxes(rng, n)
    scores = torch.tensor(rng.uniform(0, 1, n), dtype=torch.float32)
    groups = torch.tensor(rng.integers(0, 5, n), dtype=torch.long)
    for threshold in (0.3, 0.5, 0.7):
        assert torch.equal(nms.batched_nms(boxes, scores, groups, threshold),
                           reference(boxes, scores, groups, threshold))


def test_the_nms_kernel_is_torchvisions_compiled_operator() -> None:
    """The compiled operator library is found without importing torchvision (else the fallback
    would import the whole package and the start-up saving would silently be lost)."""
    library = nms._operator_library()
    assert library is not None and library.name.startswith(("_C_stable", "_C."))
    nms.nms(_boxes(np.random.default_rng(0), 3), torch.rand(3), 0.5)
    assert nms._nms is torch.ops.torchvision.nms


def test_mtcnn_nets_equal_facenet_pytorchs() -> None:
    from facenet_pytorch.models import mtcnn as reference

    torch.manual_seed(0)
    for ours, theirs, side in ((PNet(), reference.PNet(), 37), (RNet(), reference.RNet(), 24),
                               (ONet(), reference.ONet(), 48)):
        x = torch.randn(3, 3, side, side)
        with torch.inference_mode():
            for a, b in zip(ours.eval()(x), theirs.eval()(x)):
                assert torch.equal(a, b)
    assert weights_path("pnet").name == "pnet.pt"


PROBE = """
import json, sys
from gallery.cli import app
from gallery.faces import nms
try:
    app(sys.argv[1:])
except SystemExit as done:
    code = done.code
heavy = sorted(m for m in sys.modules
               if m.split(".")[0] in ("torchvision", "facenet_pytorch", "pyarrow") or m.startswith("torch._dynamo"))
print("PROBE " + json.dumps({"code": code, "heavy": heavy, "torch": "torch" in sys.modules,
                             "nms_ran": nms._nms is not None}), file=sys.stderr)
"""


def _search_process(gallery: Path, query: Path) -> tuple[dict, list[dict]]:
    """`gallery search QUERY --json` in a fresh process: what it imported, and its answers."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run([sys.executable, "-c", PROBE, "search", str(query), "--gallery", str(gallery), "--json"],
                          capture_output=True, text=True, env=env, timeout=600)
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("PROBE ")), None)
    assert line is not None, done.stderr
    return json.loads(line[len("PROBE "):]), [json.loads(ln) for ln in done.stdout.splitlines() if ln.strip()]


def _dlib_gallery(root: Path) -> Path:
    from gallery.faces.models import get_model_spec
    from gallery.store import Gallery, append_embedded_faces
    from indexer import build_index
    from tests.helpers.galleries import unit_vectors

    with Gallery.open_or_create(root) as g:
        append_embedded_faces(g, get_model_spec("dlib-resnet").stamp(), unit_vectors(30, 128, seed=0))
        build_index(g)
    return root


def test_a_photo_search_imports_no_torchvision_and_no_compiler_stack(tmp_path: Path) -> None:
    """Behaviour, not time: the process that answers `gallery search PHOTO` loads the detector and the
    model (torch) but never imports the torchvision package, facenet_pytorch or torch._dynamo, nor
    pyarrow when its index holds every face (no shard to read)."""
    from PIL import Image

    query = tmp_path / "noise.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8)).save(query)
    probe, answers = _search_process(_dlib_gallery(tmp_path / "g"), query)
    assert probe["torch"] and probe["heavy"] == []
    assert probe["code"] == 1 and answers[0]["error"] == "no_face"  # made-up noise: searched, no face


@requires_lfw
def test_a_search_that_finds_a_face_runs_nms_without_importing_torchvision(tmp_path: Path) -> None:
    probe, answers = _search_process(_dlib_gallery(tmp_path / "g"), lfw_photo("Colin_Powell", 1))
    assert probe["code"] == 0 and answers[0]["face"] is not None
    assert probe["nms_ran"] and probe["heavy"] == []


def test_nms_needs_no_torchvision_import() -> None:
    code = ("import sys, torch\nfrom gallery.faces import nms\n"
            "keep = nms.batched_nms(torch.tensor([[0., 0, 10, 10], [1, 1, 10, 10]]), torch.tensor([.9, .8]), "
            "torch.tensor([0, 0]), 0.5)\n"
            "assert keep.tolist() == [0], keep\n"
            "assert not [m for m in sys.modules if m.startswith(('torchvision', 'torch._dynamo'))]\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert done.returncode == 0, done.stderr


def test_the_console_command_ends_without_teardown_and_loses_no_output(tmp_path: Path) -> None:
    """`gallery search` skips the interpreter's teardown once done: its exit code and every line it
    wrote (stdout, and a file of --output) are there all the same."""
    from PIL import Image

    gallery = _dlib_gallery(tmp_path / "g")
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (200, 200, 3), dtype=np.uint8)).save(
            photos / f"{i}.png")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    base = [sys.executable, "-m", "gallery.cli", "search", str(photos), "--gallery", str(gallery)]
    done = subprocess.run([*base, "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1  # no face in any: reported, exit 1
    assert [json.loads(line)["error"] for line in done.stdout.splitlines()] == ["no_face"] * 3
    out = tmp_path / "answers.csv"
    done = subprocess.run([*base, "--output", str(out)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 1 and "wrote 3 records for 3 photos" in done.stderr
    assert out.read_text().count("\n") == 4 and out.read_text().endswith("\n")
