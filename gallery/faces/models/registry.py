"""The embedding models this product knows: a table of specs, and the one place that decides which
model a gallery uses.

Adding a model is adding a row here and a module with its loader; nothing registers itself on import.
Tests add a model for a `with registered(spec):` block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

from gallery.errors import ModelMismatch, UnknownModelError
from gallery.faces.models.spec import ModelSpec

# Above any cosine similarity: a model with no published threshold names no one until its gallery is
# calibrated (`gallery calibrate`) or a threshold is given (--threshold).
UNPUBLISHED = 1.000001

DEFAULT_MODEL = "dlib-resnet"  # ships its weights on PyPI: works on every machine
# Flip test-time averaging for new galleries (gallery.faces.models.spec.ModelSpec.flip); an existing gallery
# keeps its own. Measured through the product's ingest and search (benchmarks/open_set.py heldout, the same
# LFW A–J photos ingested with and without it, 5 splits): rank-1 0.949 -> 0.961 and FNIR at FPIR 1% / 0.1%
# 0.239 / 0.551 -> 0.195 / 0.435 with the best-face rule, 0.183 / 0.334 -> 0.150 / 0.298 with the decision
# statistic; it doubles the embedding work of an ingest (see docs/cli.md).
FLIP_DEFAULT = True

# Mean positions of MTCNN's 5 landmarks (left eye, right eye, nose, mouth left, mouth right) inside
# dlib's 150 px face chips (shape_predictor_5 + get_face_chip_details(shape, 150, 0.25)), measured on
# 2,000 seeded LFW photos by `python benchmarks/derive_dlib_template.py` (1,961 of 2,000
# photos had a dlib face matching the MTCNN one; per-point std 2–7 px; re-warping with dlib's own
# transform reproduces get_face_chip to 0.49/255 mean absolute pixel difference).
DLIB_TEMPLATE = ((47.89, 46.04), (102.31, 45.96), (74.68, 78.25), (51.10, 106.40), (98.89, 106.45))

# Mean MTCNN landmark positions inside facenet's 160 px training crop (box + margin), measured on
# 2,000 LFW photos by `python benchmarks/derive_box_template.py --family facenet`.
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
    packaged_weights="gallery.faces.models.dlib_resnet:packaged_weights",
    weights_formats="dlib's dlib_face_recognition_resnet_model_v1.dat",
)
FACENET_VGGFACE2 = ModelSpec(
    name="facenet-vggface2",
    dim=512,
    input_size=160,
    template=FACENET_TEMPLATE,
    preprocessing="mtcnn5-similarity-v1/std127.5",
    # Not measured offline (the weights come from GitHub): cosine 0.40 corresponds to the Euclidean distance
    # 1.1 between unit vectors that is commonly used with this model. Calibrate on your gallery.
    default_threshold=0.40,
    threshold_source="literature (Euclidean 1.1 on unit vectors); run `gallery calibrate`",
    pretrained=True,
    offline=False,
    description="InceptionResnetV1 trained on VGGFace2, 512-d (LFW 99.65%); weights from GitHub",
    loader="gallery.faces.models.facenet:load_facenet",
    weights_filename="20180402-114759-vggface2.pt",
    weights_url=_FACENET_RELEASE + "20180402-114759-vggface2.pt",
    weights_formats="facenet-pytorch's 20180402-114759-vggface2.pt, or deepface's facenet512_weights.h5",
    weights_elsewhere=("~/.deepface/weights/facenet512_weights.h5",),
)
# The same network with other weights: same geometry and preprocessing, other name and file.
FACENET_CASIA = replace(
    FACENET_VGGFACE2,
    name="facenet-casia",
    description="InceptionResnetV1 trained on CASIA-WebFace, 512-d (LFW 99.05%); weights from GitHub",
    weights_filename="20180408-102900-casia-webface.pt",
    weights_url=_FACENET_RELEASE + "20180408-102900-casia-webface.pt",
    weights_formats="facenet-pytorch's 20180408-102900-casia-webface.pt",
    weights_elsewhere=(),
)
# deepface's 128-d Facenet (a Keras conversion of David Sandberg's facenet): same network, 128-d
# bottleneck, per-image standardisation ("prewhiten") as Sandberg's 2017 models were trained with.
FACENET128 = replace(
    FACENET_VGGFACE2,
    name="facenet128",
    dim=128,
    preprocessing="mtcnn5-similarity-v1/prewhiten",
    default_threshold=UNPUBLISHED,
    threshold_source="none published for this pipeline: no one is named until `gallery calibrate` (or --threshold)",
    description="InceptionResnetV1, 128-d, from deepface's facenet_weights.h5 (Keras)",
    weights_filename="facenet_weights.h5",
    weights_url=None,
    weights_formats="deepface's facenet_weights.h5",
    weights_elsewhere=("~/.deepface/weights/facenet_weights.h5",),
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
    weights_formats="",
    weights_elsewhere=(),
    warning=UNTRAINED_WARNING,
)

# Mean MTCNN landmark positions inside the VGG group's evaluation crop (MTCNN box extended 1.3x,
# shorter side resized to 256 px, centre 224x224 crop; ox-vgg/vgg_face2's README), measured on 2,000
# LFW photos by `python benchmarks/derive_box_template.py --family vggface` (all 2,000 had a face;
# per-point std 7-12 px vertically, 17-28 px horizontally: MTCNN's boxes vary in width).
VGGFACE_TEMPLATE = ((70.41, 82.96), (158.40, 80.91), (114.88, 133.83), (77.66, 180.36), (154.94, 178.76))

VGGFACE_VGG16 = ModelSpec(
    name="vggface-vgg16",
    dim=4096,
    input_size=224,
    template=VGGFACE_TEMPLATE,
    preprocessing="mtcnn5-similarity-v1/vgg-loose224/bgr-mean-vggface1/fc7-relu",
    default_threshold=UNPUBLISHED,
    threshold_source="none published for this pipeline: no one is named until `gallery calibrate` (or --threshold)",
    pretrained=True,
    offline=False,
    description="VGG-Face (VGG-16, fc7 after ReLU), 4,096-d (LFW 98.95% published); weights from deepface or "
                "keras-vggface",
    loader="gallery.faces.models.vggface:load_vggface16",
    weights_filename="vgg_face_weights.h5",
    weights_formats="deepface's vgg_face_weights.h5 or keras-vggface's rcmalli_vggface_tf_vgg16.h5",
    weights_elsewhere=("~/.deepface/weights/vgg_face_weights.h5",
                       "~/.keras/models/vggface/rcmalli_vggface_tf_vgg16.h5"),
)
VGGFACE2_RESNET50 = ModelSpec(
    name="vggface2-resnet50",
    dim=2048,
    input_size=224,
    template=VGGFACE_TEMPLATE,
    preprocessing="mtcnn5-similarity-v1/vgg-loose224/bgr-mean-vggface2/avgpool",
    default_threshold=UNPUBLISHED,
    threshold_source="none published for this pipeline: no one is named until `gallery calibrate` (or --threshold)",
    pretrained=True,
    offline=False,
    description="VGGFace2 ResNet-50, 2,048-d pooled features; keras-vggface's resnet50 weights",
    loader="gallery.faces.models.vggface2:load_vggface2_resnet50",
    weights_filename="rcmalli_vggface_tf_notop_resnet50.h5",
    weights_formats="keras-vggface's rcmalli_vggface_tf_resnet50.h5 or its notop file",
    weights_elsewhere=("~/.keras/models/vggface/rcmalli_vggface_tf_notop_resnet50.h5",
                       "~/.keras/models/vggface/rcmalli_vggface_tf_resnet50.h5"),
)
VGGFACE2_SENET50 = replace(
    VGGFACE2_RESNET50,
    name="vggface2-senet50",
    preprocessing="mtcnn5-similarity-v1/vgg-loose224/bgr-mean-vggface2/avgpool-se",
    description="VGGFace2 SE-ResNet-50, 2,048-d pooled features; keras-vggface's senet50 weights",
    loader="gallery.faces.models.vggface2:load_vggface2_senet50",
    weights_filename="rcmalli_vggface_tf_notop_senet50.h5",
    weights_formats="keras-vggface's rcmalli_vggface_tf_senet50.h5 or its notop file",
    weights_elsewhere=("~/.keras/models/vggface/rcmalli_vggface_tf_notop_senet50.h5",
                       "~/.keras/models/vggface/rcmalli_vggface_tf_senet50.h5"),
)

# ---------------------------------------------------------------------------- ONNX model files
# insightface's ArcFace template for 112x112 chips (insightface/utils/face_align.py `arcface_dst`),
# also the reference points of OpenCV's FaceRecognizerSF.alignCrop (SFace) and AdaFace's alignment.
ARCFACE_TEMPLATE = ((38.2946, 51.6963), (73.5318, 51.5014), (56.0252, 71.7366), (41.5493, 92.3655),
                    (70.7299, 92.2041))


@dataclass(frozen=True)
class OnnxPreset:
    """How a family of ONNX face-embedding models wants its input: the model file says the rest."""

    name: str
    input_size: int
    template: tuple[tuple[float, float], ...]
    channels: str  # "RGB" or "BGR": the order the network's first layer expects
    mean: float  # input = (pixel - mean) / std, pixel in 0..255
    std: float
    default_threshold: float
    threshold_source: str
    families: str  # the models this preset is for
    # insightface's ArcFaceONNX: a graph that subtracts and multiplies in its first nodes (mxnet
    # conversions) normalises its own input, so it gets raw pixels (mean 0, std 1).
    self_normalising_check: bool = False


ONNX_PRESETS: dict[str, OnnxPreset] = {p.name: p for p in (
    OnnxPreset("arcface-112", 112, ARCFACE_TEMPLATE, "RGB", 127.5, 127.5, 0.45,
               "deepface's Buffalo_L cosine distance 0.55; calibrate with `gallery calibrate`",
               "insightface recognition models (w600k_r50.onnx, glintr100.onnx, w600k_mbf.onnx: buffalo_l, "
               "antelopev2, Immich), insightface ArcFaceONNX preprocessing", self_normalising_check=True),
    OnnxPreset("sface-112", 112, ARCFACE_TEMPLATE, "RGB", 0.0, 1.0, 0.363,
               "OpenCV's face_detect sample (cosine 0.363)",
               "OpenCV Zoo's SFace (face_recognition_sface_2021dec.onnx), FaceRecognizerSF preprocessing"),
    OnnxPreset("adaface-112", 112, ARCFACE_TEMPLATE, "BGR", 127.5, 127.5, UNPUBLISHED,
               "none published: no one is named until `gallery calibrate` (or --threshold)",
               "AdaFace exported to ONNX (its inference.py: BGR, (x/255 - 0.5) / 0.5)"),
    OnnxPreset("facenet-160", 160, FACENET_TEMPLATE, "RGB", 127.5, 128.0, 0.40,
               "literature (Euclidean 1.1 on unit vectors); run `gallery calibrate`",
               "facenet-pytorch's InceptionResnetV1 exported to ONNX (fixed_image_standardization)"),
)}

ONNX = ModelSpec(
    name="onnx",
    dim=0,  # read from the model file
    input_size=112,
    template=ARCFACE_TEMPLATE,
    preprocessing="mtcnn5-similarity-v1/onnx",
    default_threshold=UNPUBLISHED,
    threshold_source="per preset",
    pretrained=True,
    offline=False,
    description="any face-embedding ONNX model (onnxruntime), with --preset " + "|".join(ONNX_PRESETS),
    loader="gallery.faces.models.onnx_model:load_onnx",
    weights_formats="an .onnx face-embedding model",
)


def onnx_spec(preset: str | None) -> ModelSpec:
    """The `onnx` model with one input convention; the dimension is read from the file when loaded."""
    if preset is None:
        raise UnknownModelError(
            "--model onnx needs --preset: one of " + ", ".join(
                f"{p.name} ({p.families})" for p in ONNX_PRESETS.values()) + "."
        )
    try:
        p = ONNX_PRESETS[preset]
    except KeyError:
        raise UnknownModelError(f"Unknown ONNX preset '{preset}'. Known presets: {', '.join(ONNX_PRESETS)}.") from None
    norm = f"{p.channels.lower()}-{p.mean:g}-{p.std:g}" + ("-or-self" if p.self_normalising_check else "")
    return replace(
        ONNX,
        input_size=p.input_size,
        template=p.template,
        preprocessing=f"mtcnn5-similarity-v1/onnx/{p.name}/{norm}",
        default_threshold=p.default_threshold,
        threshold_source=p.threshold_source,
        preset=p.name,
        description=f"ONNX model, preset {p.name}: {p.families}",
    )


BUILTIN_MODELS: tuple[ModelSpec, ...] = (DLIB_RESNET, FACENET_VGGFACE2, FACENET_CASIA, FACENET_UNTRAINED,
                                         FACENET128,
                                         VGGFACE_VGG16, VGGFACE2_RESNET50, VGGFACE2_SENET50, ONNX)

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


def model_for_gallery(stamp: dict | None, requested: str | None = None, preset: str | None = None) -> ModelSpec:
    """The one model decision: a gallery uses the model it is stamped with; a new gallery uses the
    requested model, or DEFAULT_MODEL. Asking an existing gallery for another model is refused.

    The returned spec of an existing gallery expects the gallery's weights (their SHA-256 from the
    stamp): loading it with another file is refused. `preset` is the input convention of an `onnx`
    model (see ONNX_PRESETS). A new gallery gets FLIP_DEFAULT; an existing one keeps the flip setting
    it was built with."""
    if stamp is None:
        name = requested or DEFAULT_MODEL
        if name == ONNX.name:
            return replace(onnx_spec(preset), flip=FLIP_DEFAULT)
        if preset is not None:
            raise UnknownModelError(f"--preset is for --model onnx; '{name}' has its own input convention.")
        return replace(get_model_spec(name), flip=FLIP_DEFAULT)
    if requested is not None and requested != stamp.get("name"):
        raise ModelMismatch(
            f"Model mismatch: the gallery uses '{stamp.get('name')}', got '{requested}'. "
            f"Leave out --model (a gallery keeps its own), or use a new --gallery folder for '{requested}'."
        )
    if preset is not None and preset != stamp.get("preset"):
        raise ModelMismatch(
            f"Preset mismatch: the gallery's model uses preset '{stamp.get('preset')}', got '{preset}'. "
            "Leave out --preset (a gallery keeps its own), or use a new --gallery folder."
        )
    base = onnx_spec(stamp.get("preset")) if stamp.get("name") == ONNX.name else get_model_spec(stamp["name"])
    spec = replace(base, dim=int(stamp["dim"]) if base.dim == 0 else base.dim,
                   weights_sha256=stamp.get("weights_sha256"), flip=bool(stamp.get("flip", False)))
    if spec.stamp() != stamp:
        raise ModelMismatch(
            f"The gallery's model stamp {stamp} differs from this version's '{spec.name}' {spec.stamp()}: "
            "the gallery was built with other preprocessing; re-ingest it with this version."
        )
    return spec
