"""MTCNN run on a whole batch at once: one P-Net pass over every photo's pyramid, one R-Net and one
O-Net pass over every candidate of every photo, no Python loop over boxes.

Same networks and weights as facenet-pytorch's `MTCNN` (P/R/O-Net as gallery.faces.mtcnn_nets defines
them, with the weights that ship inside the installed facenet-pytorch, never downloaded) and the same
arithmetic as its `detect_face`, so the boxes, scores and landmarks are those of `MTCNN.detect` on each
photo alone (tests/test_detect_batched.py, benchmarks/detector_compare.py).
What changes is how the work is batched:

- **Pyramid packing, not buckets or letterboxing.** Every photo gets its own pyramid (its own size and
  minimum face size), each level resampled exactly as facenet-pytorch does it (area interpolation to
  `int(side * scale + 1)`). The levels of all photos are shelf-packed side by side into a few large
  canvases at even offsets and P-Net, being fully convolutional, runs once per canvas. Letterboxing
  or bucket padding would change the pixels each level sees (so the detections) and spend P-Net time
  on padding; packing wastes only the gaps between levels and batches photos of any size together.
  P-Net's max-pool uses ceil mode, so at an odd-sized level's edge it pools a partial window: the
  conv1 row/column just past such a level is set to -inf before the pool, which reproduces that exactly.
- **All crops in one call.** R-Net and O-Net inputs are area-resampled crops (facenet-pytorch crops
  and `interpolate(mode="area")`s each box in a Python loop). Here one summed-area table per photo
  gives every output cell of every crop of every photo by four gathers: the exact area average
  (integer sums), where `roi_align` would resample bilinearly and move the results.
- **Vectorised NMS.** Per-level and per-photo NMS are torchvision's `batched_nms` (gallery.faces.nms:
  its compiled kernel, without importing the torchvision package); the final "Min"-overlap NMS (not
  in torchvision) is a matrix fixed point: a box is kept unless a kept, higher-scoring box of the same
  photo overlaps it; iterated to convergence (as many rounds as the longest chain of suppressions,
  not as many as boxes).

One deliberate difference: facenet-pytorch skips crops that fall entirely outside the photo without
dropping their boxes, which misaligns the boxes and scores of that batch; such boxes are dropped here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from gallery.faces.mtcnn_nets import ONet, PNet, RNet
from gallery.faces.nms import batched_nms

FACTOR = 0.709
STAGE_THRESHOLDS = (0.6, 0.7, 0.7)
PNET_CELL = 12  # P-Net's receptive field
PNET_STRIDE = 2
CANVAS_PIXELS = {"cpu": 4_000_000, "cuda": 64_000_000}  # P-Net canvas size cap: bounds its activations
CROP_CHUNK = 4096  # candidates cropped (and run through R/O-Net) per call: bounds gather indices
# P-Net heatmap size for an input side n: conv 3 (n-2), max-pool 2 ceil (ceil((n-2)/2)), conv 3, conv 3.


@dataclass
class RawFaces:
    """One photo's faces in detection pixels, largest box first (facenet-pytorch's `select_largest`)."""

    boxes: np.ndarray  # (n, 4) float32 x1 y1 x2 y2
    probs: np.ndarray  # (n,) float32
    points: np.ndarray  # (n, 5, 2) float32


@dataclass
class Level:
    """One pyramid level of one photo, placed in a P-Net canvas at (y, x)."""

    image: int
    scale: float
    height: int
    width: int
    canvas: int = 0
    y: int = 0
    x: int = 0


def pyramid_scales(height: int, width: int, min_face_size: float, factor: float = FACTOR) -> list[float]:
    """The scales of MTCNN's image pyramid, computed as facenet-pytorch does (same float steps)."""
    m = 12.0 / min_face_size
    minl = min(height, width) * m
    scales = []
    scale = m
    while minl >= 12:
        scales.append(scale)
        scale = scale * factor
        minl = minl * factor
    return scales


def level_size(height: int, width: int, scale: float) -> tuple[int, int]:
    return int(height * scale + 1), int(width * scale + 1)


def pnet_out_side(n: int) -> int:
    return -(-(n - 2) // 2) - 4


def pack_levels(levels: list[Level], max_pixels: int) -> list[tuple[int, int]]:
    """Shelf-pack levels into canvases (tallest first, left to right, even offsets so P-Net's stride-2
    grid lines up with each level's own). Sets each level's canvas, y, x; returns each canvas's
    (height, width). Canvases are about `max_pixels` large, or one level's size if that is larger."""
    if not levels:
        return []
    total = sum(lv.height * lv.width for lv in levels)
    widest = max(lv.width for lv in levels)
    width = max(widest, int(math.sqrt(min(total, max_pixels))))
    width += width % 2
    max_height = max(max(lv.height for lv in levels), max_pixels // width)
    canvases: list[tuple[int, int]] = []
    canvas, y, x, shelf = 0, 0, 0, 0
    for lv in sorted(levels, key=lambda lv: (-lv.height, -lv.width)):
        if x + lv.width > width:  # next shelf
            y, x, shelf = y + shelf, 0, 0
        if y + lv.height > max_height:  # next canvas
            canvases.append((y, width))
            canvas, y, x, shelf = canvas + 1, 0, 0, 0
        lv.canvas, lv.y, lv.x = canvas, y, x
        x += lv.width + lv.width % 2
        shelf = max(shelf, lv.height + lv.height % 2)
    canvases.append((y + shelf, width))
    return canvases


def area_crops(tables: torch.Tensor, bases: torch.Tensor, strides: torch.Tensor, rows: torch.Tensor,
               cols: torch.Tensor, size: int) -> torch.Tensor:
    """Area-resample crops to size×size from summed-area tables, all crops in one pass.

    tables: (total, 3) the photos' summed-area tables, each (h+1)×(w+1) flattened, one after another;
    bases/strides: (K,) where each crop's photo starts in `tables` and its row length (w+1);
    rows/cols: (K, 2) integer [start, end) of each crop. Returns (K, 3, size, size) float32 (channels-
    last memory, which the CPU's convolutions and pools run fastest on), equal to
    `F.interpolate(crop, (size, size), mode="area")` (adaptive average pooling: cell i of a side of
    length L covers [floor(i·L/size), ceil((i+1)·L/size))).
    """
    cells = torch.arange(size, device=rows.device)

    def bounds(span: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        start, length = span[:, :1], span[:, 1:] - span[:, :1]
        return start + cells * length // size, start + ((cells + 1) * length + size - 1) // size

    y0, y1 = bounds(rows)  # (K, size)
    x0, x1 = bounds(cols)
    base = bases[:, None, None]
    stride = strides[:, None, None]

    def corner(y: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        index = base + y[:, :, None] * stride + x[:, None, :]  # (K, size, size)
        return tables[index.reshape(-1)].reshape(*index.shape, 3)

    sums = corner(y1, x1) - corner(y0, x1) - corner(y1, x0) + corner(y0, x0)
    kh = (y1 - y0).to(torch.float32)[:, :, None, None]
    kw = (x1 - x0).to(torch.float32)[:, None, :, None]
    return (sums.to(torch.float32) / kh / kw).permute(0, 3, 1, 2)


def rerec(boxes: torch.Tensor) -> torch.Tensor:
    """Boxes to squares around the same centre (facenet-pytorch's `rerec`), on a copy."""
    boxes = boxes.clone()
    h = boxes[:, 3] - boxes[:, 1]
    w = boxes[:, 2] - boxes[:, 0]
    side = torch.maximum(w, h)
    boxes[:, 0] = boxes[:, 0] + w * 0.5 - side * 0.5
    boxes[:, 1] = boxes[:, 1] + h * 0.5 - side * 0.5
    boxes[:, 2:4] = boxes[:, :2] + side[:, None]
    return boxes


def bbreg(boxes: torch.Tensor, reg: torch.Tensor) -> torch.Tensor:
    """Apply box regression offsets (in units of box side + 1), on a copy."""
    w = boxes[:, 2] - boxes[:, 0] + 1
    h = boxes[:, 3] - boxes[:, 1] + 1
    out = boxes.clone()
    out[:, :4] = boxes[:, :4] + reg[:, :4] * torch.stack([w, h, w, h], dim=1)
    return out


def min_overlap_nms(boxes: torch.Tensor, scores: torch.Tensor, groups: torch.Tensor, threshold: float) -> torch.Tensor:
    """Greedy NMS with overlap = intersection / smaller area (MTCNN's "Min"), within each group.

    Returns kept indices, highest score first. The greedy result is the fixed point of "kept unless a
    kept, higher-scoring box of the same group overlaps it by more than the threshold"; iterating
    that rule from "all kept" settles at most one rank further per round.
    """
    if boxes.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device)
    # Highest score first; among equal scores (float32 saturates near 1) the later box first, as
    # facenet-pytorch's argsort-then-pop-last does.
    n = boxes.shape[0]
    order = n - 1 - torch.sort(scores.flip(0), descending=True, stable=True).indices
    b, g = boxes[order], groups[order]
    area = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    iw = (torch.minimum(b[:, None, 2], b[None, :, 2]) - torch.maximum(b[:, None, 0], b[None, :, 0]) + 1).clamp(min=0)
    ih = (torch.minimum(b[:, None, 3], b[None, :, 3]) - torch.maximum(b[:, None, 1], b[None, :, 1]) + 1).clamp(min=0)
    overlap = iw * ih / torch.minimum(area[:, None], area[None, :])
    earlier = torch.ones(n, n, dtype=torch.bool, device=b.device).tril(-1)  # [i, j]: j ranks above i
    suppresses = earlier & (g[:, None] == g[None, :]) & (overlap > threshold)
    keep = torch.ones(n, dtype=torch.bool, device=b.device)
    for _ in range(n):
        new = ~(suppresses & keep[None, :]).any(dim=1)
        if torch.equal(new, keep):
            break
        keep = new
    return order[keep]


class BatchedMTCNN:
    """MTCNN (facenet-pytorch's weights) over a batch of photos of any sizes in a few network calls."""

    def __init__(self, device: torch.device | str = "cpu", thresholds: Sequence[float] = STAGE_THRESHOLDS,
                 factor: float = FACTOR, canvas_pixels: int | None = None) -> None:
        self.device = torch.device(device)
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = float(factor)
        self.canvas_pixels = canvas_pixels or CANVAS_PIXELS["cuda" if self.device.type == "cuda" else "cpu"]
        self.pnet = PNet().to(self.device).eval()
        self.rnet = RNet().to(self.device).eval()
        self.onet = ONet().to(self.device).eval()

    @torch.inference_mode()
    def detect(self, images: Sequence[np.ndarray | torch.Tensor], min_face_sizes: Sequence[float]) -> list[RawFaces]:
        """images: (h, w, 3) uint8 RGB; min_face_sizes: per photo, in its pixels (at least 12 is used)."""
        n = len(images)
        if n == 0:
            return []
        imgs = [torch.as_tensor(im if isinstance(im, torch.Tensor) or im.flags.writeable else np.array(im))
                .to(self.device) for im in images]
        sizes = torch.tensor([im.shape[:2] for im in imgs], device=self.device, dtype=torch.long)  # (n, 2) h, w
        boxes, image_idx = self._stage_pnet(imgs, min_face_sizes)
        points = torch.zeros(0, 5, 2, device=self.device)
        if boxes.shape[0]:
            tables = self._summed_area_tables(imgs)
            boxes, reg, image_idx, _ = self._refine(boxes, image_idx, sizes, tables, self.rnet, 24)
            boxes = rerec(bbreg(boxes, reg))
            if boxes.shape[0]:
                boxes, reg, image_idx, landmarks = self._refine(boxes, image_idx, sizes, tables, self.onet, 48)
                w = (boxes[:, 2] - boxes[:, 0] + 1)[:, None]
                h = (boxes[:, 3] - boxes[:, 1] + 1)[:, None]
                points = torch.stack([w * landmarks[:, :5] + boxes[:, :1] - 1,
                                      h * landmarks[:, 5:] + boxes[:, 1:2] - 1], dim=2)
                boxes = bbreg(boxes, reg)
                pick = min_overlap_nms(boxes[:, :4], boxes[:, 4], image_idx, 0.7)
                boxes, image_idx, points = boxes[pick], image_idx[pick], points[pick]
        if boxes.shape[0] == 0:
            points = torch.zeros(0, 5, 2)
        return self._split(boxes, points, image_idx, n)

    # ---------------------------------------------------------------------------------- stage 1
    def _stage_pnet(self, imgs: list[torch.Tensor], min_face_sizes: Sequence[float]) -> tuple[torch.Tensor, ...]:
        """P-Net candidates of every photo after NMS per level (0.5) and per photo (0.7), regressed
        and squared: (K, 5) boxes x1 y1 x2 y2 score in photo pixels, and (K,) their photo index."""
        levels = [Level(i, s, *level_size(im.shape[0], im.shape[1], s))
                  for i, im in enumerate(imgs)
                  for s in pyramid_scales(im.shape[0], im.shape[1], max(12.0, float(min_face_sizes[i])), self.factor)]
        empty = torch.zeros(0, 5, device=self.device), torch.zeros(0, dtype=torch.long, device=self.device)
        if not levels:
            return empty
        # Photos of one size as one float NCHW tensor, converted once (the layout facenet-pytorch resizes).
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(imgs):
            by_size.setdefault(tuple(im.shape[:2]), []).append(i)
        floats = {size: (torch.stack([imgs[i] for i in members]).permute(0, 3, 1, 2).to(torch.float32),
                         {i: j for j, i in enumerate(members)}) for size, members in by_size.items()}
        found, level_ids = [], []
        for c, (ch, cw) in enumerate(pack_levels(levels, self.canvas_pixels)):
            members = [(k, lv) for k, lv in enumerate(levels) if lv.canvas == c]
            boxes, ids = self._pnet_canvas(imgs, floats, members, ch, cw)
            found.append(boxes)
            level_ids.append(ids)
        boxes, level_id = torch.cat(found), torch.cat(level_ids)
        if boxes.shape[0] == 0:
            return empty
        image_of_level = torch.tensor([lv.image for lv in levels], device=self.device, dtype=torch.long)
        pick = batched_nms(boxes[:, :4], boxes[:, 4], level_id, 0.5)
        boxes, image_idx = boxes[pick], image_of_level[level_id[pick]]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_idx, 0.7)
        boxes, image_idx = boxes[pick], image_idx[pick]
        w = boxes[:, 2] - boxes[:, 0]
        h = boxes[:, 3] - boxes[:, 1]
        regressed = boxes[:, :4] + boxes[:, 5:9] * torch.stack([w, h, w, h], dim=1)
        return rerec(torch.cat([regressed, boxes[:, 4:5]], dim=1)), image_idx

    def _pnet_canvas(self, imgs: list[torch.Tensor], floats: dict, members: list[tuple[int, Level]], height: int,
                     width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """P-Net once over one canvas of packed levels: candidates (K, 9: x1 y1 x2 y2 score and P-Net's
        4 offsets) in photo pixels, and each one's level (index into the batch's levels)."""
        dev = self.device
        canvas = torch.zeros(1, height, width, 3, device=dev).permute(0, 3, 1, 2)  # channels-last: fastest
        slot_map = torch.full((pnet_out_side(height), pnet_out_side(width)), -1, dtype=torch.long, device=dev)
        groups: dict[tuple[int, int, float], list[int]] = {}
        for j, (_, lv) in enumerate(members):
            groups.setdefault((*imgs[lv.image].shape[:2], lv.scale), []).append(j)
        for (h, w, _), slots in groups.items():  # photos of one size: one resize per level, as facenet-pytorch
            first = members[slots[0]][1]
            nchw, position = floats[(h, w)]
            rows = [position[members[j][1].image] for j in slots]
            if rows != list(range(nchw.shape[0])):
                nchw = nchw[torch.tensor(rows, device=dev)]
            resized = F.interpolate(nchw, size=(first.height, first.width), mode="area")
            resized = (resized - 127.5) * 0.0078125
            for j, level_pixels in zip(slots, resized):
                lv = members[j][1]
                canvas[0, :, lv.y : lv.y + lv.height, lv.x : lv.x + lv.width] = level_pixels
                oy, ox = lv.y // 2, lv.x // 2
                slot_map[oy : oy + pnet_out_side(lv.height), ox : ox + pnet_out_side(lv.width)] = j
        p = self.pnet
        x = p.prelu1(p.conv1(canvas))
        for _, lv in members:
            # A level of odd conv1 height/width ends in a partial ceil-mode pool window: the conv1 row or
            # column just past the level must not count in it (alone, MTCNN's pool pads with -inf).
            if lv.height % 2:
                x[0, :, lv.y + lv.height - 2, lv.x : lv.x + lv.width - 1] = float("-inf")
            if lv.width % 2:
                x[0, :, lv.y : lv.y + lv.height - 1, lv.x + lv.width - 2] = float("-inf")
        x = p.prelu3(p.conv3(p.prelu2(p.conv2(p.pool1(x)))))
        prob = p.softmax4_1(p.conv4_1(x))[0, 1]
        reg = p.conv4_2(x)[0]
        r, c = ((prob >= self.thresholds[0]) & (slot_map >= 0)).nonzero(as_tuple=True)
        slot = slot_map[r, c]
        oy = torch.tensor([lv.y // 2 for _, lv in members], device=dev, dtype=torch.long)
        ox = torch.tensor([lv.x // 2 for _, lv in members], device=dev, dtype=torch.long)
        scale = torch.tensor([lv.scale for _, lv in members], device=dev, dtype=torch.float32)
        level = torch.tensor([k for k, _ in members], device=dev, dtype=torch.long)
        bb = torch.stack([c - ox[slot], r - oy[slot]], dim=1).to(torch.float32)  # (x, y) heatmap cell
        s = scale[slot][:, None]
        q1 = ((PNET_STRIDE * bb + 1) / s).floor()
        q2 = ((PNET_STRIDE * bb + PNET_CELL - 1 + 1) / s).floor()
        return torch.cat([q1, q2, prob[r, c][:, None], reg[:, r, c].T], dim=1), level[slot]

    # ---------------------------------------------------------------------------------- stages 2, 3
    def _summed_area_tables(self, imgs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each photo's summed-area table ((h+1)×(w+1) per channel, exact integer sums), flattened one
        after another: (total, 3), and each photo's start and row length in it."""
        big = max(im.shape[0] * im.shape[1] for im in imgs) * 255 >= 2**31
        dtype = torch.int64 if big else torch.int32
        flat, bases, strides, offset = [], [], [], 0
        for im in imgs:
            h, w = im.shape[:2]
            table = im.permute(2, 0, 1).to(dtype).cumsum(1, dtype=dtype).cumsum(2, dtype=dtype)
            flat.append(F.pad(table, (1, 0, 1, 0)).reshape(3, -1).T)
            bases.append(offset)
            strides.append(w + 1)
            offset += (h + 1) * (w + 1)
        dev = self.device
        return torch.cat(flat).contiguous(), torch.tensor(bases, device=dev), torch.tensor(strides, device=dev)

    def _refine(self, boxes: torch.Tensor, image_idx: torch.Tensor, sizes: torch.Tensor, tables: tuple,
                net: torch.nn.Module, size: int) -> tuple:
        """Crop every candidate (clipped to its photo, as facenet-pytorch's `pad`), run `net` over all of
        them, keep those over the stage threshold; after R-Net (size 24) also NMS 0.7 per photo.
        Returns (boxes (K, 5) with the new score, regression (K, 4), photo index, O-Net landmarks or None)."""
        table, bases, strides = tables
        t = boxes[:, :4].trunc().to(torch.long)
        h, w = sizes[image_idx, 0], sizes[image_idx, 1]
        x, y = t[:, 0].clamp(min=1), t[:, 1].clamp(min=1)
        ex, ey = torch.minimum(t[:, 2], w), torch.minimum(t[:, 3], h)
        ok = (ey > y - 1) & (ex > x - 1)
        boxes, image_idx = boxes[ok], image_idx[ok]
        rows = torch.stack([y[ok] - 1, ey[ok]], dim=1)
        cols = torch.stack([x[ok] - 1, ex[ok]], dim=1)
        outs = []
        for start in range(0, boxes.shape[0], CROP_CHUNK):  # chunks of thousands of crops, for memory
            part = slice(start, start + CROP_CHUNK)
            crops = area_crops(table, bases[image_idx[part]], strides[image_idx[part]], rows[part], cols[part], size)
            outs.append(net((crops - 127.5) * 0.0078125))
        if not outs:
            return boxes[:0], boxes[:0, :4], image_idx, boxes.new_zeros(0, 10)
        out = [torch.cat(o) for o in zip(*outs)]
        reg, prob = out[0], out[-1][:, 1]
        keep = prob > self.thresholds[1 if size == 24 else 2]
        boxes = torch.cat([boxes[keep, :4], prob[keep, None]], dim=1)
        reg, image_idx = reg[keep], image_idx[keep]
        landmarks = out[1][keep] if len(out) == 3 else None
        if size == 24:
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_idx, 0.7)
            boxes, reg, image_idx = boxes[pick], reg[pick], image_idx[pick]
        return boxes, reg, image_idx, landmarks

    @staticmethod
    def _split(boxes: torch.Tensor, points: torch.Tensor, image_idx: torch.Tensor, n: int) -> list[RawFaces]:
        """Per photo, largest box first (the order MTCNN.detect returns with select_largest)."""
        b = boxes.detach().cpu().numpy().astype(np.float32)
        p = points.detach().cpu().numpy().astype(np.float32)
        img = image_idx.detach().cpu().numpy()
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) if len(b) else np.zeros(0, np.float32)
        order = np.lexsort((-area, img))
        b, p, img = b[order], p[order], img[order]
        cuts = np.searchsorted(img, np.arange(1, n))
        return [RawFaces(bb[:, :4].copy(), bb[:, 4].copy(), pp.copy())
                for bb, pp in zip(np.split(b.reshape(-1, 5), cuts), np.split(p.reshape(-1, 5, 2), cuts))]
