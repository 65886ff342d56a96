"""A reader for dlib's serialized DNN files (`.dat`), with a converted-tensor cache.

dlib writes a network with its generic `serialize()` (dlib/serialize.h, dlib/dnn/core.h, layers.h):

- integers: one control byte (low 4 bits: byte count, 0x80: negative) then the magnitude, little
  endian; strings: an integer length then the bytes; bools: the characters '1' / '0';
- scalar floats (`float_details`): two integers, mantissa (int64) and exponent (int16), value
  = mantissa * 2**exponent;
- tensors (dlib/cuda/tensor.h, version 2): version, num_samples, k, nr, nc, then the values as raw
  little-endian float32, row-major NCHW; `alias_tensor`: version 1 and the four dimensions;
- the network is nested: `add_loss_layer` writes its version, the loss details, then its subnet;
  every `add_layer` writes its version, then *its subnet first*, then its own details and a
  trailer (setup flags and empty scratch tensors); `add_tag_layer` / `add_skip_layer` write only
  a version and their subnet. So the file holds all layer headers from the output down to the
  input, then the input layer, then each layer's details from the input back up to the output.

`read_dlib_net` returns the computational layers in forward order (input side first). Parsing the
22 MB face descriptor takes about a second; `load_dlib_net` caches the result as a torch file in
`cache_dir()/converted`, keyed by the `.dat` file's sha256, so later loads are a `torch.load`.
"""

from __future__ import annotations

import logging
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gallery.faces.models.weights import cache_dir, file_sha256
from gallery.fsutil import atomic_write

log = logging.getLogger(__name__)

# Bump when the parsed representation changes: old cache files are then simply not found.
FORMAT_VERSION = 1


class DlibFormatError(ValueError):
    """The file is not a dlib network this reader understands."""


@dataclass
class DlibLayer:
    """One computational layer: its dlib name (e.g. "con_4"), scalar settings and tensors."""

    kind: str
    attrs: dict = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)


@dataclass
class DlibNet:
    loss: str
    loss_attrs: dict
    input: str
    input_attrs: dict
    layers: list[DlibLayer]  # forward order: the first layer reads the input
    # Versions of the layer wrappers from the output down to the input (2/3: add_layer,
    # 1: tag or skip layer); the tags/skips themselves carry no type information in the file.
    wrappers: list[int]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of file at byte {self.pos}")
        chunk = self.data[self.pos : self.pos + n]
        self.pos += n
        return chunk

    def int(self) -> int:
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8 or control & 0x70:
            raise DlibFormatError(f"bad integer control byte 0x{control:02x} at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little") if size else 0
        return -value if control & 0x80 else value

    def float(self) -> float:
        if self.pos < len(self.data) and self.data[self.pos] & 0x70:
            raise DlibFormatError(f"old ASCII float encoding at byte {self.pos} is not supported")
        mantissa = self.int()
        exponent = self.int()
        return float(np.ldexp(float(mantissa), exponent))

    def string(self) -> str:
        return self._take(self.int()).decode("latin-1")

    def peek_string(self) -> str | None:
        """The string at the current position, if one plausibly starts here; does not advance."""
        saved = self.pos
        try:
            length = self.int()
            if not 0 < length < 64:
                return None
            text = self._take(length)
            return text.decode("ascii") if all(32 < b < 127 for b in text) else None
        except (DlibFormatError, UnicodeDecodeError):
            return None
        finally:
            self.pos = saved

    def bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def tensor(self) -> torch.Tensor:
        version = self.int()
        if version != 2:
            raise DlibFormatError(f"tensor version {version} at byte {self.pos} (only 2 is supported)")
        shape = tuple(self.int() for _ in range(4))
        count = int(np.prod(shape))
        raw = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        return torch.from_numpy(raw.reshape(shape).copy())

    def alias(self) -> tuple[int, int, int, int]:
        version = self.int()
        if version != 1:
            raise DlibFormatError(f"alias_tensor version {version} at byte {self.pos}")
        return tuple(self.int() for _ in range(4))  # type: ignore[return-value]


def _read_details(r: _Reader) -> DlibLayer:
    kind = r.string()
    layer = DlibLayer(kind)
    if kind == "con_4":
        params = r.tensor()
        a = layer.attrs
        a["num_filters"], a["nr"], a["nc"] = r.int(), r.int(), r.int()
        a["stride_y"], a["stride_x"] = r.int(), r.int()
        a["padding_y"], a["padding_x"] = r.int(), r.int()
        filters, biases = r.alias(), r.alias()
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            a[name] = r.float()
        n_filters = int(np.prod(filters))
        flat = params.reshape(-1)
        layer.tensors["weight"] = flat[:n_filters].reshape(filters).clone()
        layer.tensors["bias"] = flat[n_filters : n_filters + int(np.prod(biases))].clone()
    elif kind == "affine_":
        params = r.tensor()
        gamma, beta = r.alias(), r.alias()
        layer.attrs["mode"] = r.int()  # dlib layer_mode: 0 CONV_MODE (per channel), 1 FC_MODE (per element)
        n = int(np.prod(gamma))
        flat = params.reshape(-1)
        layer.tensors["gamma"] = flat[:n].reshape(gamma).clone()
        layer.tensors["beta"] = flat[n : n + int(np.prod(beta))].reshape(beta).clone()
    elif kind in ("max_pool_2", "avg_pool_2"):
        a = layer.attrs
        a["nr"], a["nc"], a["stride_y"], a["stride_x"], a["padding_y"], a["padding_x"] = (r.int() for _ in range(6))
    elif kind == "fc_2":
        a = layer.attrs
        a["num_outputs"], a["num_inputs"] = r.int(), r.int()
        params = r.tensor()
        weights, biases = r.alias(), r.alias()
        a["bias_mode"] = r.int()  # 0: FC_HAS_BIAS, 1: FC_NO_BIAS
        for name in ("lr_mult", "wd_mult", "bias_lr_mult", "bias_wd_mult"):
            a[name] = r.float()
        n = int(np.prod(weights))
        flat = params.reshape(-1)
        layer.tensors["weight"] = flat[:n].reshape(weights[0], weights[1]).clone()  # (inputs, outputs)
        if a["bias_mode"] == 0:
            layer.tensors["bias"] = flat[n : n + int(np.prod(biases))].clone()
    elif kind in ("relu_", "add_prev_"):
        pass
    else:
        raise DlibFormatError(f"layer type '{kind}' is not supported by this reader")
    return layer


def parse_dlib_net(data: bytes) -> DlibNet:
    r = _Reader(data)
    if r.int() != 1:
        raise DlibFormatError("not a dlib add_loss_layer (version 1)")
    loss = r.string()
    loss_attrs: dict = {}
    if loss == "loss_metric_2":
        loss_attrs["margin"] = r.float()
        loss_attrs["distance_threshold"] = r.float()
    elif loss != "loss_metric_":
        raise DlibFormatError(f"loss '{loss}' is not supported by this reader")
    wrappers: list[int] = []
    while True:
        version = r.int()
        wrappers.append(version)
        name = r.peek_string()
        if name is not None and name.startswith("input"):
            break
        if len(wrappers) > 10_000:
            raise DlibFormatError("no input layer found")
    if wrappers[-1] not in (2, 3):
        raise DlibFormatError(f"bottom add_layer version {wrappers[-1]} is not supported")
    input_name = r.string()
    input_attrs: dict = {}
    if input_name in ("input_rgb_image_sized", "input_rgb_image"):
        input_attrs["avg_red"], input_attrs["avg_green"], input_attrs["avg_blue"] = (
            r.float(),
            r.float(),
            r.float(),
        )
        if input_name == "input_rgb_image_sized":
            input_attrs["nr"], input_attrs["nc"] = r.int(), r.int()
    else:
        raise DlibFormatError(f"input layer '{input_name}' is not supported by this reader")

    layer_versions = [v for v in reversed(wrappers) if v >= 2]  # forward order
    layers: list[DlibLayer] = []
    for i, version in enumerate(layer_versions):
        layers.append(_read_details(r))
        r.bool()  # this_layer_setup_called
        r.bool()  # gradient_input_is_stale
        r.bool()  # get_output_and_gradient_input_disabled
        r.tensor()  # x_grad
        r.tensor()  # cached_output
        r.tensor()  # params_grad, or grad_final for the bottom layer
        if i == 0 and version == 3:
            r.int()  # _sample_expansion_factor
    if r.pos != len(data):
        raise DlibFormatError(f"{len(data) - r.pos} trailing bytes after the network")
    return DlibNet(loss, loss_attrs, input_name, input_attrs, layers, wrappers)


def read_dlib_net(path: Path) -> DlibNet:
    return parse_dlib_net(Path(path).read_bytes())


def _to_plain(net: DlibNet) -> dict:
    """A dict of str/int/float/list/tensor only, loadable with torch.load(weights_only=True)."""
    return {
        "format_version": FORMAT_VERSION,
        "loss": net.loss,
        "loss_attrs": dict(net.loss_attrs),
        "input": net.input,
        "input_attrs": dict(net.input_attrs),
        "wrappers": list(net.wrappers),
        "layers": [{"kind": x.kind, "attrs": dict(x.attrs), "tensors": dict(x.tensors)} for x in net.layers],
    }


def _from_plain(d: dict) -> DlibNet:
    layers = [DlibLayer(x["kind"], x["attrs"], x["tensors"]) for x in d["layers"]]
    return DlibNet(d["loss"], d["loss_attrs"], d["input"], d["input_attrs"], layers, d["wrappers"])


def converted_cache_path(sha256: str) -> Path:
    return cache_dir() / "converted" / f"dlib-net-{sha256[:32]}-v{FORMAT_VERSION}.pt"


def _read_cache(target: Path) -> DlibNet | None:
    """The cached parse, or None when it is absent, truncated, foreign or of another format."""
    if not target.is_file():
        return None
    try:
        plain = torch.load(target, map_location="cpu", weights_only=True)
        if isinstance(plain, dict) and plain.get("format_version") == FORMAT_VERSION:
            return _from_plain(plain)
    except (OSError, EOFError, RuntimeError, KeyError, TypeError, pickle.UnpicklingError):
        return None
    return None


def load_dlib_net(path: Path, use_cache: bool = True) -> DlibNet:
    """Parse a dlib network file, through the converted-tensor cache when allowed.

    A cache file that cannot be read is ignored and rewritten; a cache directory that cannot be
    written only costs the parse next time.
    """
    path = Path(path)
    if not use_cache:
        return read_dlib_net(path)
    target = converted_cache_path(file_sha256(path))
    cached = _read_cache(target)
    if cached is not None:
        return cached
    net = read_dlib_net(path)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(target, lambda tmp: torch.save(_to_plain(net), tmp), mode=0o644)
    except OSError as exc:
        log.info("could not write the converted-weights cache %s: %s", target, exc)
    return net


__all__ = [
    "DlibFormatError",
    "DlibLayer",
    "DlibNet",
    "converted_cache_path",
    "file_sha256",
    "load_dlib_net",
    "parse_dlib_net",
    "read_dlib_net",
]
