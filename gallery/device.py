"""Which torch device to run on: `auto` picks CUDA when present; asking for CUDA without one is an error."""

from __future__ import annotations

import torch


class DeviceUnavailable(RuntimeError):
    pass


def resolve_device(device: str) -> str:
    device = (device or "auto").lower()
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceUnavailable(
                "--device cuda was asked for, but torch sees no CUDA GPU on this machine. "
                "Use --device cpu (or auto), or install a CUDA build of torch on a GPU machine."
            )
        return device
    if device == "cpu":
        return "cpu"
    raise DeviceUnavailable(f"Unknown device '{device}': use auto, cpu or cuda.")
