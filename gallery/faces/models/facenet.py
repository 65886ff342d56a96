"""facenet-pytorch's InceptionResnetV1: pretrained on VGGFace2 or CASIA-WebFace, untrained, or with
the Keras weights deepface users have.

The pretrained weights are downloaded from GitHub by facenet-pytorch; offline they must be provided
(see gallery.faces.models.weights). `facenet-untrained` uses fixed-seed random weights: its embeddings are
meaningless for identification and it exists only for tests and throughput benchmarks.

Keras weights (`.h5`): deepface's Facenet models are the same InceptionResNetV1 (David Sandberg's
facenet, as converted to Keras): `facenet512_weights.h5` (512-d) loads into `facenet-vggface2`'s
network, `facenet_weights.h5` (128-d) into `facenet128`. Layers are matched by their Keras names
(deepface's `InceptionResNetV1` builder, whose Block17/Block8 second branches are numbered
irregularly); the batch norms have no scale (gamma 1).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from facenet_pytorch import InceptionResnetV1
from torch import nn

from gallery.device import TorchDevice
from gallery.errors import ModelWeightsMissing
from gallery.faces.models.embedder import Embedder
from gallery.faces.models.keras_h5 import KerasFormatError, batch_norm_state, by_name, conv_weight, read_keras_h5
from gallery.faces.models.spec import ModelSpec

KERAS_SUFFIXES = (".h5", ".hdf5", ".keras")
STEM = {"conv2d_1a": "Conv2d_1a_3x3", "conv2d_2a": "Conv2d_2a_3x3", "conv2d_2b": "Conv2d_2b_3x3",
        "conv2d_3b": "Conv2d_3b_1x1", "conv2d_4a": "Conv2d_4a_3x3", "conv2d_4b": "Conv2d_4b_3x3"}
_B = {"branch0": "Branch_0_Conv2d_1x1", "branch1.0": "Branch_1_Conv2d_0a_1x1", "conv2d": "Conv2d_1x1"}
# facenet-pytorch submodule -> Keras layer suffix, per block type (deepface's names)
BLOCKS = {
    "Block35": {**_B, "branch1.1": "Branch_1_Conv2d_0b_3x3", "branch2.0": "Branch_2_Conv2d_0a_1x1",
                "branch2.1": "Branch_2_Conv2d_0b_3x3", "branch2.2": "Branch_2_Conv2d_0c_3x3"},
    "Block17": {**_B, "branch1.1": "Branch_1_Conv2d_0b_1x7", "branch1.2": "Branch_1_Conv2d_0c_7x1"},
    "Block8": {**_B, "branch1.1": "Branch_1_Conv2d_0b_1x3", "branch1.2": "Branch_1_Conv2d_0c_3x1"},
    "Mixed_6a": {"branch0": "Branch_0_Conv2d_1a_3x3", "branch1.0": "Branch_1_Conv2d_0a_1x1",
                 "branch1.1": "Branch_1_Conv2d_0b_3x3", "branch1.2": "Branch_1_Conv2d_1a_3x3"},
    "Mixed_7a": {"branch0.0": "Branch_0_Conv2d_0a_1x1", "branch0.1": "Branch_0_Conv2d_1a_3x3",
                 "branch1.0": "Branch_1_Conv2d_0a_1x1", "branch1.1": "Branch_1_Conv2d_1a_3x3",
                 "branch2.0": "Branch_2_Conv2d_0a_1x1", "branch2.1": "Branch_2_Conv2d_0b_3x3",
                 "branch2.2": "Branch_2_Conv2d_1a_3x3"},
}


def facenet_preprocess(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's fixed_image_standardization on 0..255 RGB."""
    return (x - 127.5) / 128.0


def prewhiten(x: torch.Tensor) -> torch.Tensor:
    """Per-image standardisation of David Sandberg's 2017 facenet models (deepface's "Facenet"
    normalisation): (x - mean) / max(std, 1/sqrt(pixels)) over each image's pixels and channels."""
    flat = x.reshape(len(x), -1)
    mean = flat.mean(dim=1).view(-1, 1, 1, 1)
    std = flat.std(dim=1, unbiased=False).clamp(min=1.0 / flat.shape[1] ** 0.5).view(-1, 1, 1, 1)
    return (x - mean) / std


def keras_layer_name(module_path: str) -> str:
    """The Keras layer of a facenet-pytorch conv ('repeat_2.3.branch1.1' -> 'Block17_4_Branch_1_Conv2d_0b_1x7')."""
    if module_path in STEM:
        return STEM[module_path]
    m = re.fullmatch(r"repeat_([123])\.(\d+)\.(.+)", module_path)
    if m:
        block = {"1": "Block35", "2": "Block17", "3": "Block8"}[m.group(1)]
        return f"{block}_{int(m.group(2)) + 1}_{BLOCKS[block][m.group(3)]}"
    head, _, rest = module_path.partition(".")
    if head == "block8":
        return f"Block8_6_{BLOCKS['Block8'][rest]}"
    if head in ("mixed_6a", "mixed_7a"):
        block = head.capitalize()  # Mixed_6a, Mixed_7a
        return f"{block}_{BLOCKS[block][rest]}"
    raise KerasFormatError(f"no Keras layer known for {module_path}")


def inception_resnet_v1(dim: int) -> InceptionResnetV1:
    module = InceptionResnetV1(pretrained=None, classify=False)
    if dim != 512:
        module.last_linear = nn.Linear(1792, dim, bias=False)
        module.last_bn = nn.BatchNorm1d(dim, eps=0.001, momentum=0.1, affine=True)
    return module


def state_dict_from_keras(module: InceptionResnetV1, path: Path) -> dict[str, torch.Tensor]:
    named = by_name(read_keras_h5(path))

    def layer(name: str):
        if name in named:
            return named[name]
        # deepface's builder numbers the second branch of Block17_k and Block8_k irregularly
        # ('Block17_4_Branch_4_Conv2d_0a_1x1'): any branch but 0 with the same block and suffix.
        m = re.fullmatch(r"(Block(?:17|8)_\d+)_Branch_1_(.+)", name.removesuffix("_BatchNorm"))
        if m:
            tail = "_BatchNorm" if name.endswith("_BatchNorm") else ""
            found = [n for n in named if re.fullmatch(rf"{m.group(1)}_Branch_[1-9]\d*_{m.group(2)}{tail}", n)]
            if len(found) == 1:
                return named[found[0]]
        raise KerasFormatError(f"no layer '{name}': not deepface's Keras InceptionResNetV1 (Facenet)")

    state: dict[str, np.ndarray] = {}
    for path_, sub in module.named_modules():
        if type(sub).__name__ == "BasicConv2d":
            name = keras_layer_name(path_)
            state[f"{path_}.conv.weight"] = conv_weight(layer(name).get("kernel"))
            state.update(batch_norm_state(layer(f"{name}_BatchNorm"), f"{path_}.bn"))
        elif isinstance(sub, nn.Conv2d) and path_.endswith(".conv2d"):
            conv = layer(keras_layer_name(path_))
            state[f"{path_}.weight"] = conv_weight(conv.get("kernel"))
            state[f"{path_}.bias"] = conv.get("bias")
    kernel = layer("Bottleneck").get("kernel")
    if kernel.shape != (1792, module.last_linear.out_features):
        raise KerasFormatError(
            f"the bottleneck is {kernel.shape}, this model's is (1792, {module.last_linear.out_features})")
    state["last_linear.weight"] = np.ascontiguousarray(kernel.T)
    state.update(batch_norm_state(layer("Bottleneck_BatchNorm"), "last_bn"))
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in state.items()}


def load_keras_facenet(path: Path, dim: int) -> InceptionResnetV1:
    module = inception_resnet_v1(dim)
    try:
        state = state_dict_from_keras(module, path)
    except KerasFormatError as exc:
        raise ModelWeightsMissing(f"{path} is not deepface's {dim}-d Facenet Keras weights: {exc}") from exc
    result = module.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        raise ModelWeightsMissing(
            f"{path}: weights missing for {missing[:3]}, unexpected {result.unexpected_keys[:3]}")
    return module.eval()


def load_facenet(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for the facenet-* models (facenet-pytorch .pt files or deepface's .h5)."""
    preprocess = prewhiten if spec.preprocessing.endswith("/prewhiten") else facenet_preprocess
    if not spec.pretrained:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        module = InceptionResnetV1(pretrained=None, classify=False)
        torch.random.set_rng_state(generator_state)
        return Embedder(spec, module, preprocess, device)
    assert weights is not None, "ModelSpec.load locates the weights of a pretrained model"
    if Path(weights).suffix.lower() in KERAS_SUFFIXES:
        return Embedder(spec, load_keras_facenet(weights, spec.dim), preprocess, device)
    module = inception_resnet_v1(spec.dim)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    # The released files carry the training classifier ("logits.*"); embeddings do not use it.
    state = {k: v for k, v in state.items() if not k.startswith("logits.")}
    module.load_state_dict(state, strict=True)
    return Embedder(spec, module, preprocess, device)
