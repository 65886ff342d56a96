"""One device decision: where torch runs, whether it runs in half precision, and where faiss runs.

`auto` picks CUDA when torch (or faiss, for indexes) sees a GPU; asking for CUDA without one is a
`DeviceUnavailable` error that says what to do. Any CUDA device (`cuda`, `cuda:1`) runs the embedding
networks in half precision; the CPU always runs float32 (faster and exact there). torch and faiss are
imported only when a decision is asked for, so importing this module costs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from gallery.errors import DeviceUnavailable, GpuUnavailableError

DEVICE_CHOICES = "auto, cpu, cuda or cuda:N"


def apply_process_defaults() -> None:
    """How the process's CPU threads wait, for the product's commands: applied by the entry points (the
    `gallery` command, the server's application factory, the distributed ingest's workers), never on import.

    OpenMP threads that spin while waiting slow faiss and torch down several-fold when both share a
    small CPU (measured on a 2-core x86 VM, no GPU); passive waiting costs nothing measurable otherwise.
    OpenMP reads the variable when torch or faiss is first imported, so this runs before either is; a
    value the user set is kept."""
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


@dataclass(frozen=True)
class TorchDevice:
    """Where the face networks run."""

    name: str  # "cpu", "cuda", "cuda:1"

    @property
    def is_cuda(self) -> bool:
        return self.name.startswith("cuda")

    @property
    def half(self) -> bool:
        """Half precision for the embedding network: on any CUDA device, never on the CPU."""
        return self.is_cuda

    def __str__(self) -> str:
        return self.name


def _check_name(device: str | None) -> str:
    name = (device or "auto").strip().lower()
    if name in ("auto", "cpu", "cuda", "gpu") or (name.startswith("cuda:") and name[5:].isdigit()):
        return "cuda" if name == "gpu" else name
    raise DeviceUnavailable(f"Unknown device '{device}': use {DEVICE_CHOICES}.")


def resolve_device(device: str | None) -> TorchDevice:
    """The torch device for `--device`: auto | cpu | cuda | cuda:N."""
    name = _check_name(device)
    if name == "cpu":
        return TorchDevice("cpu")
    import torch

    if name == "auto":
        return TorchDevice("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        raise DeviceUnavailable(
            f"--device {name} was asked for, but torch sees no CUDA GPU on this machine. "
            "Use --device cpu (or auto), or install a CUDA build of torch on a GPU machine."
        )
    if ":" in name and int(name.split(":")[1]) >= torch.cuda.device_count():
        raise DeviceUnavailable(
            f"--device {name}: torch sees {torch.cuda.device_count()} CUDA device(s), numbered from 0."
        )
    return TorchDevice(name)


def faiss_gpus() -> int:
    """GPUs faiss can use (0 with faiss-cpu, or when the CUDA runtime is broken)."""
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        return 0
    try:
        return int(faiss.get_num_gpus())
    except Exception:  # noqa: BLE001 - a broken CUDA runtime must not break CPU use
        return 0


def resolve_index_device(device: str | None) -> str:
    """Where faiss builds an index: 'cuda' when faiss sees a GPU (auto) or was asked to, else 'cpu'."""
    name = _check_name(device)
    if name == "cpu":
        return "cpu"
    if name == "auto":
        return "cuda" if faiss_gpus() > 0 else "cpu"
    import faiss

    if not hasattr(faiss, "StandardGpuResources"):
        raise GpuUnavailableError(
            f"--device {name}: this faiss build has no GPU support (faiss-cpu is installed). Install "
            "faiss-gpu-cu12 (pip install 'face-gallery[gpu]') on a machine with an NVIDIA GPU, "
            "or use --device cpu."
        )
    if faiss_gpus() == 0:
        raise GpuUnavailableError(f"--device {name}: faiss sees no CUDA device on this machine. Use --device cpu.")
    return "cuda"
