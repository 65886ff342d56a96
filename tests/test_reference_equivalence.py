"""Each network that reads weights users bring is proven equal to its reference implementation: the
reference network is built by its own code, given random weights, saved in the reference's own file
format, loaded by the product, and both embed the same aligned chips.

- deepface's VGG-Face: built and loaded by deepface itself (`VGGFace.load_model`, its own weight
  loader reading our file), preprocessed by deepface's "VGGFace" normalisation.
- keras-vggface's VGG16, RESNET50 and SENET50: keras-vggface needs Keras 2 with `keras.engine` and
  `keras_applications`, which do not install on Python 3.11 from today's PyPI, so its model builders
  are rebuilt here layer by layer, with the same layer names, from its published keras_vggface/models.py
  (and `preprocess_input` from utils.py), under Keras 3 + TensorFlow, and saved in the Keras 2 layout
  its files have (layer names with '/', weights named '<layer>/<weight>:0').
- ONNX: a torch network exported to ONNX, run by the product's onnxruntime path against torch.

Random weights are saved with Keras' own HDF5 weights writer (the layout of the published .h5
files). These tests need the test-only extra (`pip install -e '.[reference]'` and deepface without
its dependencies, as .ci/run does); without it they skip.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from gallery.device import resolve_device
from gallery.faces.models import get_model_spec
from gallery.faces.models.registry import onnx_spec
from tests.helpers.chips import aligned_chips

TOLERANCE = 1e-4  # max |difference| between unit vectors
REFERENCE_EXTRA = "the test-only reference extra (pip install -e '.[reference]'; see .ci/run)"


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # torch's compiler stack (triton, loaded by torchvision) crashes the process when its native
    # library loads after TensorFlow's: load it first.
    import torch._dynamo  # noqa: F401
    import torchvision  # noqa: F401

    pytest.importorskip("tensorflow", reason=f"TensorFlow is not installed: {REFERENCE_EXTRA}")
    pytest.importorskip("h5py", reason=f"h5py is not installed: {REFERENCE_EXTRA}")
    import keras

    if keras.backend.backend() != "tensorflow":
        pytest.skip(f"Keras runs on '{keras.backend.backend()}', the references run on TensorFlow")
    return keras


def randomize(model, seed: int) -> None:
    """Random weights that keep activations in range: He-scaled kernels, batch-norm statistics
    away from identity, non-zero biases."""
    rng = np.random.default_rng(seed)
    values = []
    for w in model.weights:
        name, shape = w.path, tuple(w.shape)
        if name.endswith("kernel"):
            v = rng.normal(0.0, np.sqrt(2.0 / np.prod(shape[:-1])), shape)
        elif name.endswith(("gamma", "moving_variance")):
            v = rng.uniform(0.5, 1.5, shape)
        else:  # bias, beta, moving_mean
            v = rng.normal(0.0, 0.1, shape)
        values.append(v.astype(np.float32))
    model.set_weights(values)


def calibrate_batch_norms(keras, model, x: np.ndarray, seed: int) -> None:
    """Batch-norm statistics as a trained network has them, so that activations stay in range through
    50+ layers (a network whose activations grow layer after layer would compare float32 rounding
    noise, not the mapping of its weights): one training-mode pass with momentum 0 sets every moving
    mean and variance to its layer's batch statistics on `x`; then each is perturbed a little, and
    residual branches end in a small scale."""
    rng = np.random.default_rng(seed)
    norms = [layer for layer in model.layers if type(layer).__name__ == "BatchNormalization"]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer in norms:
        *affine, mean, var = layer.get_weights()  # [gamma,] beta (scale=False: no gamma)
        if len(affine) == 2 and ("increase" in layer.name or "proj" in layer.name):
            affine[0] = rng.uniform(0.2, 0.5, affine[0].shape).astype(np.float32)
        layer.set_weights([*affine, mean * rng.uniform(0.9, 1.1, mean.shape).astype(np.float32),
                           var * rng.uniform(0.8, 1.2, var.shape).astype(np.float32)])


def save_keras_h5(model, path: Path) -> Path:
    """Keras' own HDF5 weights writer: the layout of deepface's and keras-vggface's files."""
    import h5py
    from keras.src.legacy.saving import legacy_h5_format

    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, model)
    return path


def save_keras2_h5(model, path: Path) -> Path:
    """The layout Keras 2's `save_weights` wrote keras-vggface's files in, with keras-vggface's layer
    names: Keras 3 refuses '/' in a layer name, so the rebuilt models spell it '__', and the names are
    written back here. Keras 2 (save_weights_to_hdf5_group): one group per layer (a '/' in the name
    nests groups), attribute `weight_names` = '<layer>/<weight>:0', the datasets under the layer's
    group at those (nested) paths, attribute `layer_names` at the root."""
    import h5py

    with h5py.File(path, "w") as f:
        names = [layer.name.replace("__", "/") for layer in model.layers]
        f.attrs["layer_names"] = [n.encode() for n in names]
        f.attrs["backend"] = b"tensorflow"
        f.attrs["keras_version"] = b"2.2.4"
        for layer, name in zip(model.layers, names):
            group = f.create_group(name)
            weight_names = [f"{name}/{w.path.rsplit('/', 1)[-1]}:0" for w in layer.weights]
            group.attrs["weight_names"] = [n.encode() for n in weight_names]
            for weight_name, w in zip(weight_names, layer.weights):
                group.create_dataset(weight_name, data=np.asarray(w.numpy()))
    return path


def product_embeddings(model_name: str, weights: Path, chips: torch.Tensor) -> np.ndarray:
    spec = get_model_spec(model_name)
    return spec.load(resolve_device("cpu"), weights).embed(chips).numpy()


def unit(x: np.ndarray) -> np.ndarray:
    x = x.reshape(len(x), -1).astype(np.float64)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def assert_equal_embeddings(label: str, ours: np.ndarray, reference: np.ndarray, source: str) -> None:
    ref = unit(reference)
    diff = float(np.abs(unit(ours) - ref).max())
    # How far apart the chips' embeddings are: the comparison must resolve far finer than that, or a
    # network that ignored its input would pass.
    spread = float(np.abs(ref[:, None, :] - ref[None, :, :]).max())
    print(f"\nEQUIVALENCE {label}: max |difference| {diff:.2e} on unit vectors; spread between the faces "
          f"{spread:.2e} ({source})")
    assert ours.shape == ref.shape
    assert diff <= TOLERANCE, f"{label}: max difference {diff} > {TOLERANCE}"
    assert diff <= 0.01 * spread, f"{label}: the faces' embeddings differ by {spread}, the comparison by {diff}"


def rgb_nhwc(chips: torch.Tensor) -> np.ndarray:
    return chips.permute(0, 2, 3, 1).numpy().astype(np.float32)


# ------------------------------------------------------------------- keras-vggface, rebuilt
def vggface_preprocess_input(x: np.ndarray, version: int) -> np.ndarray:
    """keras_vggface.utils.preprocess_input, channels_last: RGB -> BGR, minus the means."""
    x = x[..., ::-1].copy()
    means = (93.5940, 104.7624, 129.1863) if version == 1 else (91.4953, 103.8827, 131.0912)
    for c in range(3):
        x[..., c] -= means[c]
    return x


def kv_vgg16(keras):
    L = keras.layers
    img = keras.Input((224, 224, 3))
    x = img
    for block, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(1, convs + 1):
            x = L.Conv2D(filters, (3, 3), activation="relu", padding="same", name=f"conv{block}_{i}")(x)
        x = L.MaxPooling2D((2, 2), strides=(2, 2), name=f"pool{block}")(x)
    x = L.Flatten(name="flatten")(x)
    x = L.Dense(4096, name="fc6")(x)
    x = L.Activation("relu", name="fc6__relu")(x)
    x = L.Dense(4096, name="fc7")(x)
    x = L.Activation("relu", name="fc7__relu")(x)
    x = L.Dense(2622, name="fc8")(x)
    x = L.Activation("softmax", name="fc8__softmax")(x)
    return keras.Model(img, x, name="vggface_vgg16")


def _kv_block(keras, x, filters, stage, block, strides, projection, se, eps):
    L = keras.layers
    f1, f2, f3 = filters
    names = {k: f"conv{stage}_{block}_{k}" for k in ("1x1_reduce", "1x1_increase", "1x1_proj", "3x3")}
    bn = {"epsilon": eps} if eps is not None else {}
    y = L.Conv2D(f1, (1, 1), strides=strides, use_bias=False, name=names["1x1_reduce"])(x)
    y = L.BatchNormalization(axis=3, name=names["1x1_reduce"] + "__bn", **bn)(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(f2, 3, padding="same", use_bias=False, name=names["3x3"])(y)
    y = L.BatchNormalization(axis=3, name=names["3x3"] + "__bn", **bn)(y)
    y = L.Activation("relu")(y)
    y = L.Conv2D(f3, (1, 1), use_bias=False, name=names["1x1_increase"])(y)
    y = L.BatchNormalization(axis=3, name=names["1x1_increase"] + "__bn", **bn)(y)
    if se:  # senet_se_block(..., bias=True), compress_rate 16
        s = L.GlobalAveragePooling2D()(y)
        s = L.Reshape((1, 1, f3))(s)
        s = L.Conv2D(f3 // 16, (1, 1), use_bias=True, name=f"conv{stage}_{block}_1x1_down")(s)
        s = L.Activation("relu")(s)
        s = L.Conv2D(f3, (1, 1), use_bias=True, name=f"conv{stage}_{block}_1x1_up")(s)
        s = L.Activation("sigmoid")(s)
        y = L.multiply([y, s])
    if projection:
        shortcut = L.Conv2D(f3, (1, 1), strides=strides, use_bias=False, name=names["1x1_proj"])(x)
        shortcut = L.BatchNormalization(axis=3, name=names["1x1_proj"] + "__bn", **bn)(shortcut)
    else:
        shortcut = x
    y = L.add([y, shortcut])
    return L.Activation("relu")(y)


def kv_resnet(keras, se: bool, include_top: bool):
    """keras-vggface's RESNET50 (se=False) or SENET50 (se=True)."""
    L = keras.layers
    eps = 0.0001 if se else None  # SENET50 sets bn_eps = 0.0001; RESNET50 keeps Keras' default
    bn = {"epsilon": eps} if eps is not None else {}
    img = keras.Input((224, 224, 3))
    x = L.Conv2D(64, (7, 7), use_bias=False, strides=(2, 2), padding="same", name="conv1__7x7_s2")(img)
    x = L.BatchNormalization(axis=3, name="conv1__7x7_s2__bn", **bn)(x)
    x = L.Activation("relu")(x)
    x = L.MaxPooling2D((3, 3), strides=(2, 2))(x)
    for stage, blocks, filters in ((2, 3, (64, 64, 256)), (3, 4, (128, 128, 512)), (4, 6, (256, 256, 1024)),
                                   (5, 3, (512, 512, 2048))):
        for block in range(1, blocks + 1):
            strides = ((1, 1) if stage == 2 else (2, 2)) if block == 1 else (1, 1)
            x = _kv_block(keras, x, filters, stage, block, strides, block == 1, se, eps)
    x = L.AveragePooling2D((7, 7), name="avg_pool")(x)
    if include_top:
        x = L.Flatten()(x)
        x = L.Dense(8631, activation="softmax", name="classifier")(x)
    return keras.Model(img, x, name="vggface_senet50" if se else "vggface_resnet50")


@pytest.mark.slow
@pytest.mark.parametrize("top", [True, False], ids=["top", "notop"])
@pytest.mark.parametrize("se", [False, True], ids=["resnet50", "senet50"])
def test_keras_vggface_resnets_equal_the_reference(keras, tmp_path, se, top):
    model_name = "vggface2-senet50" if se else "vggface2-resnet50"
    spec = get_model_spec(model_name)
    model = kv_resnet(keras, se, include_top=top)
    randomize(model, seed=1 + se)
    chips, source = aligned_chips(spec.template_array(), spec.input_size)
    x = vggface_preprocess_input(rgb_nhwc(chips), version=2)
    calibrate_batch_norms(keras, model, x, seed=1 + se)
    weights = save_keras2_h5(model, tmp_path / f"rcmalli_vggface_tf{'' if top else '_notop'}_{model_name[9:]}.h5")
    features = keras.Model(model.input, model.get_layer("avg_pool").output)
    reference = features.predict(x, verbose=0)
    ours = product_embeddings(model_name, weights, chips)
    assert_equal_embeddings(f"{model_name} (keras-vggface {'top' if top else 'notop'} file)", ours, reference, source)


@pytest.mark.slow
def test_keras_vggface_vgg16_equals_the_reference(keras, tmp_path):
    spec = get_model_spec("vggface-vgg16")
    model = kv_vgg16(keras)
    randomize(model, seed=3)
    weights = save_keras2_h5(model, tmp_path / "rcmalli_vggface_tf_vgg16.h5")
    chips, source = aligned_chips(spec.template_array(), spec.input_size)
    fc7 = keras.Model(model.input, model.get_layer("fc7__relu").output)
    reference = fc7.predict(vggface_preprocess_input(rgb_nhwc(chips), version=1), verbose=0)
    ours = product_embeddings("vggface-vgg16", weights, chips)
    assert_equal_embeddings("vggface-vgg16 (keras-vggface file)", ours, reference, source)


def test_keras_vggface_notop_vgg16_is_refused(keras, tmp_path):
    from gallery.errors import ModelWeightsMissing

    model = kv_vgg16(keras)
    notop = keras.Model(model.input, model.get_layer("pool5").output)
    weights = save_keras2_h5(notop, tmp_path / "rcmalli_vggface_tf_notop_vgg16.h5")
    with pytest.raises(ModelWeightsMissing, match="no fc6/fc7"):
        get_model_spec("vggface-vgg16").load(resolve_device("cpu"), weights)


# ------------------------------------------------------------------------------- deepface
@pytest.fixture(scope="module")
def deepface_vgg(keras):
    pytest.importorskip("deepface", reason=f"deepface is not installed: {REFERENCE_EXTRA}")
    from deepface.models.facial_recognition.tf import VGGFace

    return VGGFace


@pytest.mark.slow
def test_deepface_vgg_face_equals_the_reference(deepface_vgg, tmp_path, monkeypatch):
    from deepface.commons import weight_utils
    from deepface.modules.preprocessing import normalize_input

    spec = get_model_spec("vggface-vgg16")
    base = deepface_vgg.base_model()
    randomize(base, seed=4)
    weights = save_keras_h5(base, tmp_path / "vgg_face_weights.h5")
    # deepface's own loader (load_model: base_model + load_model_weights + the fc7 descriptor), reading
    # our file instead of downloading its own.
    monkeypatch.setattr(weight_utils, "download_weights_if_necessary", lambda **kwargs: str(weights))
    descriptor = deepface_vgg.load_model()
    chips, source = aligned_chips(spec.template_array(), spec.input_size)
    bgr01 = rgb_nhwc(chips)[..., ::-1] / 255.0  # deepface's images: BGR, scaled to 0..1
    x = np.stack([normalize_input(img.copy(), normalization="VGGFace") for img in bgr01])
    reference = descriptor.predict(x, verbose=0)
    ours = product_embeddings("vggface-vgg16", weights, chips)
    assert_equal_embeddings("vggface-vgg16 (deepface vgg_face_weights.h5 layout)", ours, reference, source)


@pytest.mark.slow
@pytest.mark.parametrize("dim", [128, 512])
def test_deepface_facenet_equals_the_reference(keras, tmp_path, monkeypatch, dim):
    """deepface's Facenet (128-d, `facenet128`) and Facenet512 (into `facenet-vggface2`'s network), built
    and loaded by deepface's own `load_facenet{128,512}d_model`. Both sides get the product's input
    (prewhitened for the 128-d model, facenet-pytorch's fixed standardisation for the 512-d one)."""
    pytest.importorskip("deepface", reason=f"deepface is not installed: {REFERENCE_EXTRA}")
    from deepface.commons import weight_utils
    from deepface.models.facial_recognition.tf import Facenet

    model_name = "facenet128" if dim == 128 else "facenet-vggface2"
    spec = get_model_spec(model_name)
    chips, source = aligned_chips(spec.template_array(), spec.input_size)
    rgb = rgb_nhwc(chips)
    if dim == 128:
        flat = rgb.reshape(len(rgb), -1)
        std = np.maximum(flat.std(axis=1), 1 / np.sqrt(flat.shape[1]))
        x = (rgb - flat.mean(axis=1)[:, None, None, None]) / std[:, None, None, None]
    else:
        x = (rgb - 127.5) / 128.0
    base = Facenet.InceptionResNetV1(dimension=dim)
    randomize(base, seed=5)
    calibrate_batch_norms(keras, base, x, seed=5)
    weights = save_keras_h5(base, tmp_path / ("facenet_weights.h5" if dim == 128 else "facenet512_weights.h5"))
    monkeypatch.setattr(weight_utils, "download_weights_if_necessary", lambda **kwargs: str(weights))
    reference_model = Facenet.load_facenet128d_model() if dim == 128 else Facenet.load_facenet512d_model()
    reference = reference_model.predict(x.astype(np.float32), verbose=0)
    ours = product_embeddings(model_name, weights, chips)
    assert_equal_embeddings(f"{model_name} (deepface Facenet{'' if dim == 128 else '512'} .h5)", ours, reference,
                            source)


# ----------------------------------------------------------------------------------- ONNX
class TinyArcFace(torch.nn.Module):
    """A small residual embedding network on 112x112 input (the ArcFace family's size)."""

    def __init__(self, normalise_inside: bool = False) -> None:
        super().__init__()
        self.normalise_inside = normalise_inside
        self.stem = torch.nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(16)
        self.block = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.down = torch.nn.Conv2d(16, 32, 3, stride=2, padding=1)
        self.fc = torch.nn.Linear(32 * 28 * 28, 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.normalise_inside:  # as the mxnet conversions do: (x - 127.5) * 0.0078125 in the graph
            x = (x - 127.5) * 0.0078125
        x = torch.relu(self.bn(self.stem(x)))
        x = torch.relu(x + self.block(x))
        x = torch.relu(self.down(x))
        return self.fc(torch.flatten(x, 1))


def _export(module: torch.nn.Module, size: int, path: Path, dynamic: bool = True) -> Path:
    module.eval()
    torch.onnx.export(module, (torch.zeros(2, 3, size, size),), str(path), dynamo=False, input_names=["data"],
                      output_names=["embedding"], dynamic_axes={"data": {0: "n"}} if dynamic else None)
    return path


@pytest.fixture(scope="module")
def onnx_runtime():
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: pip install -e '.[onnx]'")
    pytest.importorskip("onnx", reason="onnx is not installed: pip install -e '.[onnx]'")


def _randomised(module: torch.nn.Module, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    for m in module.modules():
        if isinstance(m, torch.nn.BatchNorm2d | torch.nn.BatchNorm1d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    return module.eval()


def _onnx_vs_torch(module: torch.nn.Module, path: Path, preset: str, torch_input) -> None:
    spec = onnx_spec(preset)
    chips, source = aligned_chips(spec.template_array(), spec.input_size)
    embedder = spec.load(resolve_device("cpu"), path)
    ours = embedder.embed(chips).numpy()
    with torch.inference_mode():
        reference = module(torch_input(chips.float())).numpy()
    assert embedder.spec.dim == reference.shape[1] and embedder.spec.weights_sha256
    assert_equal_embeddings(f"onnx --preset {preset}", ours, reference, source)


def test_onnx_arcface_preset_equals_torch(onnx_runtime, tmp_path):
    torch.manual_seed(0)
    module = _randomised(TinyArcFace(), 0)
    path = _export(module, 112, tmp_path / "w600k_tiny.onnx")
    _onnx_vs_torch(module, path, "arcface-112", lambda x: (x - 127.5) / 127.5)


def test_onnx_arcface_self_normalising_graph_gets_raw_pixels(onnx_runtime, tmp_path):
    """insightface's rule: Sub and Mul among the first nodes (mxnet conversions) -> no normalisation
    outside the model. Node names are set as mxnet's converter writes them."""
    import onnx

    torch.manual_seed(1)
    module = _randomised(TinyArcFace(normalise_inside=True), 1)
    path = _export(module, 112, tmp_path / "glint_mxnet_tiny.onnx")
    model = onnx.load(str(path))
    for node in model.graph.node[:8]:
        if node.op_type == "Sub":
            node.name = "_minusscalar0"
        if node.op_type == "Mul":
            node.name = "_mulscalar0"
    onnx.save(model, str(path))
    _onnx_vs_torch(module, path, "arcface-112", lambda x: x)


@pytest.mark.slow
def test_onnx_facenet_preset_equals_facenet_pytorch(onnx_runtime, tmp_path):
    from facenet_pytorch import InceptionResnetV1

    torch.manual_seed(2)
    module = _randomised(InceptionResnetV1(pretrained=None, classify=False), 2)
    path = _export(module, 160, tmp_path / "facenet.onnx")
    _onnx_vs_torch(module, path, "facenet-160", lambda x: (x - 127.5) / 128.0)


def test_onnx_bgr_preset_and_fixed_batch(onnx_runtime, tmp_path):
    """adaface-112: BGR input; a model exported with a fixed batch of 1 is run face by face."""
    torch.manual_seed(3)
    module = _randomised(TinyArcFace(), 3)
    module.eval()
    path = tmp_path / "adaface_tiny.onnx"
    torch.onnx.export(module, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, input_names=["x"])
    _onnx_vs_torch(module, path, "adaface-112", lambda x: (x.flip(1) - 127.5) / 127.5)


def test_onnx_wrong_size_or_preset_is_refused(onnx_runtime, tmp_path):
    from gallery.errors import ModelMismatch, UnknownModelError

    module = _randomised(TinyArcFace(), 4)
    path = _export(module, 112, tmp_path / "arc.onnx")
    with pytest.raises(ModelMismatch, match="takes 112x112 images"):
        onnx_spec("facenet-160").load(resolve_device("cpu"), path)
    with pytest.raises(UnknownModelError, match="needs --preset"):
        onnx_spec(None)
    with pytest.raises(UnknownModelError, match="Unknown ONNX preset"):
        onnx_spec("arcface-113")
