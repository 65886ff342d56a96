"""facenet-pytorch's InceptionResnetV1 (512-d): pretrained on VGGFace2 or CASIA-WebFace, or untrained.

The pretrained weights are downloaded from GitHub by facenet-pytorch; offline they must be provided
(see gallery.models.weights). `facenet-untrained` uses fixed-seed random weights: its embeddings are
meaningless for identification and it exists only for tests and throughput benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from gallery.models.embedder import Embedder
from gallery.models.registry import ModelSpec, register
from gallery.models.weights import resolve_weights

# Mean MTCNN landmark positions inside facenet's 160 px training crop (box + margin), measured on
# 2,000 LFW photos by `python -m gallery.models.derive_facenet_template`.
FACENET_TEMPLATE = (
    (50.86, 64.74),
    (112.51, 63.63),
    (82.02, 91.42),
    (55.94, 115.86),
    (110.09, 115.00),
)
_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
UNTRAINED_WARNING = (
    "facenet-untrained has RANDOM weights (fixed seed): its embeddings cannot identify anyone. "
    "Use it only for tests and throughput benchmarks."
)


def facenet_preprocess(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's fixed_image_standardization on 0..255 RGB."""
    return (x - 127.5) / 128.0


def _load_facenet(spec: ModelSpec, weights: Path | None, device: str, half: bool) -> Embedder:
    module = InceptionResnetV1(pretrained=None, classify=False)
    if spec.pretrained:
        assert spec.weights_filename is not None
        path = resolve_weights(spec.name, spec.weights_filename, spec.weights_url, weights, "dlib-resnet")
        state = torch.load(path, map_location="cpu", weights_only=True)
        # The released files carry the training classifier ("logits.*"); embeddings do not use it.
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        module.load_state_dict(state, strict=True)
    else:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        module = InceptionResnetV1(pretrained=None, classify=False)
        torch.random.set_rng_state(generator_state)
    return Embedder(spec, module, facenet_preprocess, device=device, half=half)


FACENET_VGGFACE2 = register(
    ModelSpec(
        name="facenet-vggface2",
        dim=512,
        input_size=160,
        template=FACENET_TEMPLATE,
        preprocessing="mtcnn5-similarity-v1/std127.5",
        # Not measurable here (weights need GitHub): cosine 0.40 corresponds to the Euclidean distance
        # 1.1 between unit vectors that is commonly used with this model. Calibrate on your gallery.
        default_threshold=0.40,
        threshold_source="literature (Euclidean 1.1 on unit vectors); run `gallery calibrate`",
        pretrained=True,
        offline=False,
        description="InceptionResnetV1 trained on VGGFace2, 512-d (LFW 99.65%); weights from GitHub",
        loader=_load_facenet,
        weights_filename="20180402-114759-vggface2.pt",
        weights_url=_RELEASE + "20180402-114759-vggface2.pt",
    )
)

FACENET_CASIA = register(
    ModelSpec(
        name="facenet-casia",
        dim=512,
        input_size=160,
        template=FACENET_TEMPLATE,
        preprocessing="mtcnn5-similarity-v1/std127.5",
        default_threshold=0.40,
        threshold_source="literature (Euclidean 1.1 on unit vectors); run `gallery calibrate`",
        pretrained=True,
        offline=False,
        description="InceptionResnetV1 trained on CASIA-WebFace, 512-d (LFW 99.05%); weights from GitHub",
        loader=_load_facenet,
        weights_filename="20180408-102900-casia-webface.pt",
        weights_url=_RELEASE + "20180408-102900-casia-webface.pt",
    )
)

FACENET_UNTRAINED = register(
    ModelSpec(
        name="facenet-untrained",
        dim=512,
        input_size=160,
        template=FACENET_TEMPLATE,
        preprocessing="mtcnn5-similarity-v1/std127.5/untrained-seed0",
        default_threshold=0.99,
        threshold_source="none: random weights",
        pretrained=False,
        offline=True,
        description="InceptionResnetV1 with RANDOM fixed-seed weights, 512-d: tests and benchmarks only",
        loader=_load_facenet,
        warning=UNTRAINED_WARNING,
    )
)
