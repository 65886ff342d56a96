"""The embedding models this product knows: a table of specs, and the one place that decides which
model a gallery uses.

Adding a model is adding a row here and a module with its loader; nothing registers itself on import.
Tests add a model for a `with registered(spec):` block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace

from gallery.errors import ModelMismatch, UnknownModelError
from gallery.faces.models.spec import ModelSpec

DEFAULT_MODEL = "dlib-resnet"  # ships its weights on PyPI: works on every machine
# Flip test-time averaging for new galleries (gallery.faces.models.spec.ModelSpec.flip); an existing gallery
# keeps its own. Measured through the product's ingest and search (benchmarks/open_set.py heldout, the same
# LFW A–J photos ingested with and without it, 5 splits): rank-1 0.949 -> 0.961 and FNIR at FPIR 1% / 0.1%
# 0.239 / 0.551 -> 0.195 / 0.435 with the best-face rule, 0.183 / 0.334 -> 0.150 / 0.298 with the decision
# statistic; it doubles the embedding work of an ingest (see the README).
FLIP_DEFAULT = True

# Mean positions of MTCNN's 5 landmarks (left eye, right eye, nose, mouth left, mouth right) inside
# dlib's 150 px face chips (shape_predictor_5 + get_face_chip_details(shape, 150, 0.25)), measured on
# 2,000 seeded LFW photos by `python -m gallery.faces.models.derive_dlib_template` (1,961 of 2,000
# photos had a dlib face matching the MTCNN one; per-point std 2–7 px; re-warping with dlib's own
# transform reproduces get_face_chip to 0.49/255 mean absolute pixel difference).
DLIB_TEMPLATE = ((47.89, 46.04), (102.31, 45.96), (74.68, 78.25), (51.10, 106.40), (98.89, 106.45))

# Mean MTCNN landmark positions inside facenet's 160 px training crop (box + margin), measured on
# 2,000 LFW photos by `python -m gallery.faces.models.derive_facenet_template`.
FACENET_TEMPLATE = ((50.86, 64.74), (112.51, 63.63), (82.02, 91.42), (55.94, 115.86), (110.09, 115.00))

_FACENET_RELEASE = "https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
UNTRAINED_WARNING = (
    "facenet-untrained has RANDOM weights (fixed seed): its embeddings cannot identify anyone. "
    "Use it only for tests and throughput benchmarks."
)

DLIB_RESNET = ModelSpec(
    name="dlib-resnet",
    dim=128,
    input_size=150,
    template=DLIB_TEMPLATE,
    preprocessing="mtcnn5-similarity-v1/dlib-chip150-p0.25",
    # Best cosine threshold over the 2,349 LFW A–J pairs for the MTCNN + template pipeline (0.9103;
    # balanced-accuracy optimum 0.9105; dlib's own pipeline 0.905), by benchmarks/lfw_verify.py.
    # dlib's customary Euclidean 0.6 is on unnormalised descriptors (norms ~1.25-1.7), so it does
    # not translate to 1 - 0.6**2 / 2 = 0.82 here.
    default_threshold=0.91,
    threshold_source="LFW A–J pairs, best-accuracy cosine threshold (benchmarks/lfw_verify.py)",
    pretrained=True,
    offline=True,
    description="dlib's ResNet face descriptor ported to torch, 128-d (LFW 99.38%); weights ship on PyPI",
    loader="gallery.faces.models.dlib_resnet:load_dlib_resnet",
    weights_filename="dlib_face_recognition_resnet_model_v1.dat",
)
FACENET_VGGFACE2 = ModelSpec(
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
    loader="gallery.faces.models.facenet:load_facenet",
    weights_filename="20180402-114759-vggface2.pt",
    weights_url=_FACENET_RELEASE + "20180402-114759-vggface2.pt",
)
# The same network with other weights: same geometry and preprocessing, other name and file.
FACENET_CASIA = replace(
    FACENET_VGGFACE2,
    name="facenet-casia",
    description="InceptionResnetV1 trained on CASIA-WebFace, 512-d (LFW 99.05%); weights from GitHub",
    weights_filename="20180408-102900-casia-webface.pt",
    weights_url=_FACENET_RELEASE + "20180408-102900-casia-webface.pt",
)
FACENET_UNTRAINED = replace(
    FACENET_VGGFACE2,
    name="facenet-untrained",
    preprocessing="mtcnn5-similarity-v1/std127.5/untrained-seed0",
    default_threshold=0.99,
    threshold_source="none: random weights",
    pretrained=False,
    offline=True,
    description="InceptionResnetV1 with RANDOM fixed-seed weights, 512-d: tests and benchmarks only",
    weights_filename=None,
    weights_url=None,
    warning=UNTRAINED_WARNING,
)
BUILTIN_MODELS: tuple[ModelSpec, ...] = (DLIB_RESNET, FACENET_VGGFACE2, FACENET_CASIA, FACENET_UNTRAINED)

_models: dict[str, ModelSpec] = {spec.name: spec for spec in BUILTIN_MODELS}


def get_model_spec(name: str) -> ModelSpec:
    try:
        return _models[name]
    except KeyError:
        known = ", ".join(sorted(_models))
        raise UnknownModelError(f"Unknown model '{name}'. Known models: {known}.") from None


def list_models() -> list[ModelSpec]:
    return [_models[name] for name in sorted(_models)]


@contextmanager
def registered(spec: ModelSpec) -> Iterator[ModelSpec]:
    """Make `spec` known for the duration of the block (tests, experiments); restores the table after."""
    previous = _models.get(spec.name)
    _models[spec.name] = spec
    try:
        yield spec
    finally:
        if previous is None:
            _models.pop(spec.name, None)
        else:
            _models[spec.name] = previous


def model_for_gallery(stamp: dict | None, requested: str | None = None) -> ModelSpec:
    """The one model decision: a gallery uses the model it is stamped with (and the flip setting it was
    built with); a new gallery uses the requested model, or DEFAULT_MODEL, with FLIP_DEFAULT. Asking an
    existing gallery for another model is refused."""
    if stamp is None:
        return replace(get_model_spec(requested or DEFAULT_MODEL), flip=FLIP_DEFAULT)
    if requested is not None and requested != stamp.get("name"):
        raise ModelMismatch(
            f"Model mismatch: the gallery uses '{stamp.get('name')}', got '{requested}'. "
            f"Leave out --model (a gallery keeps its own), or use a new --gallery folder for '{requested}'."
        )
    spec = replace(get_model_spec(stamp["name"]), flip=bool(stamp.get("flip", False)))
    if spec.stamp() != stamp:
        raise ModelMismatch(
            f"The gallery's model stamp {stamp} differs from this version's '{spec.name}' {spec.stamp()}: "
            "the gallery was built with other preprocessing; re-ingest it with this version."
        )
    return spec
