"""Every GPU path of the product in one call, one table: ingest end to end at LFW size and at 1080p with
each stage alone (decode, detect, align+embed, write), GPU utilisation during the ingest, fp16 vs fp32
embeddings, the largest batches that fit, the searcher on the GPU, and FAISS on the GPU.

    python benchmarks/gpu_suite.py --images PHOTOS --device cuda --output suite.json
    python benchmarks/gpu_suite.py --device cpu --photos 16 --large 4      # the CPU smoke run

Everything goes through the product's own code: `benchmarks/ingest_throughput.bench_model` (FacePipeline's
detect and embed_detected alone, the store's writer alone, then `gallery.ingest.ingest` end to end), the
product's Embedder (fp16 on CUDA), `search.Searcher`, `indexer.build_index`. Photos:
- LFW size: the JPEGs under --images (250×250 for LFW); to reach --photos, mirrored copies are added
  (each a distinct file content, so the ingest does not fold them together as duplicates).
- 1080p: --large frames of 1920×1080, each one --images photo UPSCALED (bicubic) to 1080×1080 and
  centred on grey (one large face per frame), saved as JPEG (quality 90).
Decode alone is also measured in this process on one core (photos/s per core), the figure that says
how many decode workers keep the GPU fed.

Without a CUDA device (and --device other than cpu) the suite says "no CUDA device", measures decode
per core, and exits 0. Sections that cannot run (faiss not installed, faiss without GPU support, weights
missing) say why in the table instead of failing the run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
for entry in (REPO, REPO / "benchmarks"):
    if str(entry) not in sys.path:
        sys.path.insert(0, str(entry))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "lfw-aj" / "images"
Row = tuple[str, str, str, str]  # section, figure, value, note


# ------------------------------------------------------------------------------------ photos
def lfw_size_photos(images: Path, n: int, dest: Path) -> list[Path]:
    """n photo files: the JPEGs under `images`, then mirrored copies of them (distinct content)."""
    from PIL import Image, ImageOps

    files = sorted(images.rglob("*.jpg"))
    if not files:
        raise SystemExit(f"No .jpg photos under {images}: pass --images PHOTOS (e.g. ../shared/data/lfw-aj/images).")
    out = files[:n]
    k = 0
    while len(out) < n:
        src = files[k % len(files)]
        target = dest / src.parent.name / f"{src.stem}_mirror{k // len(files)}.jpg"
        target.parent.mkdir(parents=True, exist_ok=True)
        with Image.open(src) as im:
            ImageOps.mirror(im.convert("RGB")).save(target, quality=92)
        out.append(target)
        k += 1
    return out


def frames_1080p(sources: list[Path], n: int, dest: Path) -> list[Path]:
    """n 1920×1080 JPEGs, each one source photo upscaled to 1080×1080 and centred on grey."""
    from PIL import Image

    dest.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        with Image.open(sources[i % len(sources)]) as im:
            face = im.convert("RGB").resize((1080, 1080), Image.Resampling.BICUBIC)
        frame = Image.new("RGB", (1920, 1080), (128, 128, 128))
        frame.paste(face, (420, 0))
        path = dest / f"frame_{i:05d}.jpg"
        frame.save(path, quality=90)
        out.append(path)
    return out


# ------------------------------------------------------------------------------------ sections
def decode_per_core(paths: list[Path], label: str, seconds: float = 3.0) -> list[Row]:
    """The product's decode_photo in this process (one core): photos/s per core."""
    from gallery.faces.decode import decode_photo

    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - t0 < seconds or n < 4:
        decode_photo(str(paths[n % len(paths)]), 0, 0)
        n += 1
    per_core = n / (time.process_time() - c0)
    return [("decode", f"decode alone, {label}", f"{per_core:.0f} photos/s per core",
             f"{n} decodes, CPU time; x {os.cpu_count()} cores = {per_core * (os.cpu_count() or 1):.0f}/s")]


class UtilSampler:
    """GPU utilisation sampled from nvidia-smi every 0.2 s while a block runs."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled and shutil.which("nvidia-smi") is not None
        self.samples: list[float] = []
        self._stop = threading.Event()

    def __enter__(self) -> UtilSampler:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                      "-i", "0"], capture_output=True, text=True, timeout=5).stdout
                self.samples.append(float(out.strip().splitlines()[0]))
            except (OSError, ValueError, IndexError, subprocess.SubprocessError):
                pass
            self._stop.wait(0.2)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self.enabled:
            self._thread.join()

    def summary(self) -> str:
        if not self.enabled:
            return "not measured (no CUDA device or no nvidia-smi)"
        if not self.samples:
            return "nvidia-smi gave no readings"
        return f"mean {np.mean(self.samples):.0f}%, max {max(self.samples):.0f}% ({len(self.samples)} samples)"


def ingest_section(label: str, photos: list[Path], args: argparse.Namespace, device: str) -> tuple[list[Row], dict]:
    """Stages alone and the whole ingest through benchmarks/ingest_throughput.bench_model."""
    from ingest_throughput import bench_model

    with UtilSampler(device.startswith("cuda")) as util:
        r = bench_model(photos, args.model, device, args.batch, args.workers, False, None, True, args.weights)
    e = r["end_to_end"]
    rows: list[Row] = [(f"ingest {label}", "end to end", f"{e['photos_per_s']:.1f} photos/s",
                        f"{len(photos)} photos, {e['faces']} faces, {e['faces_per_s']:.1f} faces/s, "
                        f"detector {r['detector']}, model {r['model']}")]
    for name, st in r["stages_alone"].items():
        extra = f", {st['faces_per_s']:.0f} faces/s" if "faces_per_s" in st else ""
        note = f"{args.workers} worker processes" if name == "decode" else ""
        rows.append((f"ingest {label}", f"{name} alone", f"{st['photos_per_s']:.1f} photos/s{extra}", note))
    detect, embed = r["stages_alone"]["detect"]["seconds"], r["stages_alone"]["align_embed"]["seconds"]
    rows.append((f"ingest {label}", "detect / align+embed time", f"{detect / max(embed, 1e-9):.2f}x",
                 "target on a GPU: detection within 2x of the embedder"))
    rows.append((f"ingest {label}", "GPU utilisation (whole run)", util.summary(), "stages alone and end to end"))
    return rows, r


def aligned_chips(photos: list[Path], args: argparse.Namespace, device: str, limit: int):
    """Aligned uint8 chips of up to `limit` faces, through the product's pipeline."""
    import torch

    from gallery.faces.align import align_faces
    from gallery.faces.models import get_model_spec
    from gallery.faces.pipeline import FacePipeline

    pipeline = FacePipeline(get_model_spec(args.model), device, args.weights, detect_batch_size=args.batch)
    chips = []
    for start in range(0, len(photos), args.batch):
        decoded = [pipeline.decode(p) for p in photos[start : start + args.batch]]
        for photo, det in zip(decoded, pipeline.detect(decoded)):
            if det is not None and len(det):
                pixels = torch.from_numpy(photo.pixels).permute(2, 0, 1)
                chips.append(align_faces(pixels, det.landmarks * photo.scale, pipeline.spec.template_array(),
                                         pipeline.spec.input_size))
        if sum(len(c) for c in chips) >= limit:
            break
    return pipeline, torch.cat(chips)[:limit]


def fp16_section(photos: list[Path], args: argparse.Namespace, device: str) -> list[Row]:
    """The product's embedder (fp16 on CUDA) against the same network in fp32 on the CPU."""
    from gallery.device import resolve_device

    if not device.startswith("cuda"):
        return [("embedding", "fp16 vs fp32 max cosine difference", "not measured",
                 "the product embeds in fp32 on the CPU (fp16 only on CUDA)")]
    pipeline, chips = aligned_chips(photos, args, device, 512)
    e16 = pipeline.embedder.embed(chips).numpy()
    e32 = pipeline.spec.load(resolve_device("cpu"), args.weights).embed(chips).numpy()
    cos = np.sum(e16 * e32, axis=1) / np.linalg.norm(e16, axis=1) / np.linalg.norm(e32, axis=1)
    return [("embedding", "fp16 (CUDA) vs fp32 (CPU) max cosine difference", f"{float(np.max(1 - cos)):.2e}",
             f"{len(chips)} faces; median {float(np.median(1 - cos)):.1e}")]


def largest_batch(run: Callable[[int], None], start: int, cap: int) -> tuple[int, str]:
    """Double the batch until CUDA runs out of memory or the cap; the last size that ran."""
    import torch

    size, ok = start, 0
    while size <= cap:
        try:
            run(size)
            ok = size
            size *= 2
        except (torch.cuda.OutOfMemoryError, RuntimeError) as exc:  # cuDNN reports it as a RuntimeError
            if not isinstance(exc, torch.cuda.OutOfMemoryError) and "out of memory" not in str(exc).lower():
                raise
            torch.cuda.empty_cache()
            return ok, f"out of memory at {size}"
    return ok, f"cap {cap} reached (no out-of-memory)"


def batch_section(photos: list[Path], frames: list[Path], args: argparse.Namespace, device: str) -> list[Row]:
    import torch

    if not device.startswith("cuda"):
        return [("memory", "largest batch that fits", "not measured", "CPU run: host memory, not a GPU's")]
    pipeline, chips = aligned_chips(photos, args, device, 256)
    embed_ok, embed_note = largest_batch(
        lambda n: pipeline.embedder.embed(chips.repeat((n + len(chips) - 1) // len(chips), 1, 1, 1)[:n]), 256,
        args.max_embed_batch)
    decoded = [pipeline.decode(p) for p in frames[: min(len(frames), 8)]]
    pixels = [d.pixels for d in decoded if d.ok]

    def detect(n: int) -> None:
        pipeline.detector.max_batch = n
        pipeline.detector.detect([pixels[i % len(pixels)] for i in range(n)])

    detect_ok, detect_note = largest_batch(detect, 8, args.max_detect_batch) if pixels else (0, "no 1080p frames")
    torch.cuda.empty_cache()
    return [("memory", "largest embedding batch", f"{embed_ok} faces", embed_note),
            ("memory", "largest detection batch, 1080p", f"{detect_ok} photos", detect_note),
            ("memory", "GPU memory peak", f"{torch.cuda.max_memory_allocated() / 2**30:.1f} GiB",
             torch.cuda.get_device_name())]


def searcher_section(gallery_dir: Path, queries: list[Path], args: argparse.Namespace, device: str) -> list[Row]:
    """Build the gallery's index, then answer photo queries through search.Searcher on the device."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return [("searcher", "photo queries", "not measured", "faiss is not installed here (pip install faiss-cpu)")]
    from indexer import build_index
    from search import Searcher

    t0 = time.perf_counter()
    build_index(gallery_dir, device="auto")
    build_s = time.perf_counter() - t0
    with Searcher(gallery_dir, device=device, weights=args.weights) as searcher:
        searcher.search(queries[0])  # loads the networks
        t0 = time.perf_counter()
        for q in queries:
            searcher.search(q)
        seconds = time.perf_counter() - t0
    return [("searcher", "photo queries, one at a time", f"{len(queries) / seconds:.1f} queries/s",
             f"{len(queries)} queries, {1000 * seconds / len(queries):.1f} ms each; index build {build_s:.1f} s")]


def faiss_gpu_section(n: int, dim: int = 128) -> list[Row]:
    """IVF-Flat on the GPU vs the same on the CPU: build and search time, recall@10 against exact."""
    try:
        import faiss
    except ImportError:
        return [("faiss gpu", "build + search", "not measured", "faiss is not installed here")]
    if not hasattr(faiss, "StandardGpuResources") or faiss.get_num_gpus() == 0:
        return [("faiss gpu", "build + search", "not measured",
                 "this faiss has no GPU support (faiss-cpu) or sees no GPU; install faiss-gpu-cu12")]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, dim), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    q = x[rng.choice(n, 1000, replace=False)] + 0.05 * rng.standard_normal((1000, dim), dtype=np.float32)
    exact = faiss.IndexFlatIP(dim)
    exact.add(x)
    _, truth = exact.search(q, 10)
    nlist = int(4 * np.sqrt(n))
    rows: list[Row] = []
    results = {}
    for where in ("cpu", "gpu"):
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, nlist, faiss.METRIC_INNER_PRODUCT)
        if where == "gpu":
            res = faiss.StandardGpuResources()
            index = faiss.index_cpu_to_gpu(res, 0, index)
        t0 = time.perf_counter()
        index.train(x[: min(n, 256 * nlist)])
        index.add(x)
        build = time.perf_counter() - t0
        faiss.ParameterSpace().set_index_parameter(index, "nprobe", 32)
        t0 = time.perf_counter()
        _, found = index.search(q, 10)
        search = time.perf_counter() - t0
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)])
        results[where] = found
        rows.append(("faiss gpu", f"IVF{nlist},Flat on {where.upper()}", f"build {build:.2f} s, search {search:.3f} s",
                     f"{n} x {dim}, 1000 queries, nprobe 32, recall@10 vs exact {recall:.3f}"))
    agree = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(results["gpu"], results["cpu"])])
    rows.append(("faiss gpu", "GPU vs CPU top-10 agreement", f"{agree:.3f}", "same index type and parameters"))
    return rows


def guarded(name: str, rows: list[Row], fn: Callable[[], list[Row]]) -> None:
    """Run one section; a failure becomes a row saying so (the suite always reaches its table)."""
    try:
        rows.extend(fn())
    except Exception as exc:  # noqa: BLE001 - one section's failure must not hide the others
        traceback.print_exc()
        rows.append((name, "FAILED", type(exc).__name__, str(exc)[:160]))


def print_table(rows: list[Row]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print(f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of JPEG photos (LFW A–J)")
    parser.add_argument("--device", default="auto", help="auto, cuda, cuda:N or cpu")
    parser.add_argument("--photos", type=int, default=4000, help="LFW-size photos for the ingest")
    parser.add_argument("--large", type=int, default=600, help="1080p photos for the ingest")
    parser.add_argument("--model", default="dlib-resnet")
    parser.add_argument("--weights", type=Path, default=None, help="the model's weights file, if not packaged")
    parser.add_argument("--batch", type=int, default=128, help="photos per detection batch")
    parser.add_argument("--workers", type=int, default=None, help="decode processes (default: the ingest's)")
    parser.add_argument("--queries", type=int, default=50, help="photo queries for the searcher")
    parser.add_argument("--faiss-vectors", type=int, default=1_000_000)
    parser.add_argument("--decode-seconds", type=float, default=3.0, help="time spent on each decode figure")
    parser.add_argument("--max-embed-batch", type=int, default=65536)
    parser.add_argument("--max-detect-batch", type=int, default=1024)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    import torch

    from gallery.ingest.reader import default_workers

    args.workers = default_workers() if args.workers is None else args.workers
    cuda = torch.cuda.is_available()
    device = "cpu" if args.device == "cpu" else (args.device if args.device != "auto" else "cuda")
    if not args.images.is_dir():
        sys.exit(f"No photo folder at {args.images}: pass --images PHOTOS (e.g. ../shared/data/lfw-aj/images).")
    rows: list[Row] = [("machine", "device", torch.cuda.get_device_name() if cuda and device != "cpu" else "CPU",
                        f"torch {torch.__version__}, {os.cpu_count()} cores, {platform.platform()}")]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        photos = lfw_size_photos(args.images, args.photos, work / "lfw")
        frames = frames_1080p(photos, args.large, work / "frames") if args.large else []
        guarded("decode", rows, lambda: decode_per_core(photos, "LFW 250x250", args.decode_seconds))
        if frames:
            guarded("decode", rows, lambda: decode_per_core(frames, "1080p (upscaled LFW)", args.decode_seconds))
        if device != "cpu" and not cuda:
            print("no CUDA device: torch sees no GPU, so the GPU figures are not measured "
                  "(decode per core only; run with --device cpu for the CPU paths).")
            rows.append(("gpu", "every GPU path", "not measured", "no CUDA device"))
            print_table(rows)
            write(args.output, rows)
            return
        results: dict = {}

        def lfw() -> list[Row]:
            section_rows, results["lfw"] = ingest_section("250x250", photos, args, device)
            return section_rows

        guarded("ingest 250x250", rows, lfw)
        if frames:
            guarded("ingest 1080p", rows, lambda: ingest_section("1080p", frames, args, device)[0])
        guarded("embedding", rows, lambda: fp16_section(photos, args, device))
        guarded("memory", rows, lambda: batch_section(photos, frames, args, device))
        guarded("searcher", rows, lambda: searcher_section_for(photos, args, device, work))
        guarded("faiss gpu", rows, lambda: faiss_gpu_section(args.faiss_vectors))
    print_table(rows)
    write(args.output, rows)


def searcher_section_for(photos: list[Path], args: argparse.Namespace, device: str, work: Path) -> list[Row]:
    """A gallery of the LFW-size photos through the real ingest, then the searcher over it."""
    from ingest_throughput import link_archive

    from gallery.ingest import IngestOptions, ingest

    archive, gallery_dir = work / "search-archive", work / "search-gallery"
    link_archive(photos, archive)
    ingest(archive, gallery_dir, IngestOptions(model=args.model, device=device, weights=args.weights,
                                               detect_batch_size=args.batch, workers=args.workers))
    return searcher_section(gallery_dir, photos[: args.queries], args, device)


def write(path: Path | None, rows: list[Row]) -> None:
    if path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps([dict(zip(("section", "figure", "value", "note"), r)) for r in rows], indent=2))
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
