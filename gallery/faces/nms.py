"""Non-maximum suppression for the detector: torchvision's compiled NMS kernel, without torchvision.

`import torchvision` (or `torchvision.ops`) imports every `torchvision.models` module and, through
`roi_align`, torch's whole compiler stack (`torch._dynamo`): about 2.4 s on a 2-core x86 VM, for the one
kernel the detector calls. This module loads only torchvision's compiled operator library
(`torch.ops.load_library`, what torchvision's own `extension.py` does) and calls `torch.ops.torchvision.nms`;
`batched_nms` is torchvision's two strategies, with its thresholds, so the boxes kept are the same.
Where that library cannot be found (another torchvision layout) the torchvision package is imported
instead: slower to start, same answer.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import threading
from collections.abc import Callable
from pathlib import Path

import torch

OP_LIBRARIES = ("_C_stable", "_C")  # torchvision's operator library, newest name first
_lock = threading.Lock()
_nms: Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor] | None = None


def _operator_library() -> Path | None:
    """torchvision's compiled operator library, found without importing the torchvision package."""
    spec = importlib.util.find_spec("torchvision")  # a top-level package: found, not executed
    if spec is None or not spec.submodule_search_locations:
        return None
    finder_details = (importlib.machinery.ExtensionFileLoader, importlib.machinery.EXTENSION_SUFFIXES)
    for folder in spec.submodule_search_locations:
        finder = importlib.machinery.FileFinder(folder, finder_details)
        for name in OP_LIBRARIES:
            found = finder.find_spec(name)
            if found is not None and found.origin:
                return Path(found.origin)
    return None


def _load_kernel() -> Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]:
    library = _operator_library()
    if library is not None:
        try:
            torch.ops.load_library(str(library))
            return torch.ops.torchvision.nms
        except (OSError, RuntimeError, AttributeError):
            pass  # a library built for another torch: torchvision's own import says why, or copes
    from torchvision.ops import nms

    return nms


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Indices of the boxes kept (IoU > iou_threshold with a kept, higher-scoring box suppresses),
    highest score first: torchvision's `nms`."""
    global _nms
    if _nms is None:
        with _lock:
            if _nms is None:
                _nms = _load_kernel()
    return _nms(boxes, scores, iou_threshold)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each group (boxes of different groups never suppress each other), highest score
    first: torchvision's `batched_nms`, same two strategies and the same switch between them."""
    if boxes.numel() > (4000 if boxes.device.type == "cpu" else 100_000):
        keep = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(groups):
            members = torch.where(groups == group)[0]
            keep[members[nms(boxes[members], scores[members], iou_threshold)]] = True
        kept = torch.where(keep)[0]
        return kept[scores[kept].sort(descending=True)[1]]
    if boxes.numel() == 0:
        return torch.empty((0,), dtype=torch.int64, device=boxes.device)
    # shift each group's boxes by its own offset so that boxes of different groups never overlap
    offsets = groups.to(boxes) * (boxes.max() + torch.tensor(1).to(boxes))
    return nms(boxes + offsets[:, None], scores, iou_threshold)
