"""facenet-pytorch's InceptionResnetV1 (512-d): pretrained on VGGFace2 or CASIA-WebFace, or untrained.

The pretrained weights are downloaded from GitHub by facenet-pytorch; offline they must be provided
(see gallery.faces.models.weights). `facenet-untrained` uses fixed-seed random weights: its embeddings are
meaningless for identification and it exists only for tests and throughput benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import torch
from facenet_pytorch import InceptionResnetV1

from gallery.device import TorchDevice
from gallery.faces.models.embedder import Embedder
from gallery.faces.models.spec import ModelSpec


def facenet_preprocess(x: torch.Tensor) -> torch.Tensor:
    """facenet-pytorch's fixed_image_standardization on 0..255 RGB."""
    return (x - 127.5) / 128.0


def load_facenet(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for the facenet-* models."""
    module = InceptionResnetV1(pretrained=None, classify=False)
    if spec.pretrained:
        assert weights is not None, "ModelSpec.load locates the weights of a pretrained model"
        state = torch.load(weights, map_location="cpu", weights_only=True)
        # The released files carry the training classifier ("logits.*"); embeddings do not use it.
        state = {k: v for k, v in state.items() if not k.startswith("logits.")}
        module.load_state_dict(state, strict=True)
    else:
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(0)
        module = InceptionResnetV1(pretrained=None, classify=False)
        torch.random.set_rng_state(generator_state)
    return Embedder(spec, module, facenet_preprocess, device)
