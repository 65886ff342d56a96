"""Face-like synthetic embeddings written straight into a gallery folder (SQLite rows + Parquet shards).

The model (all vectors L2-normalised, default dim 512):

- identity centroids lie on the unit sphere inside a random ``rank``-dimensional subspace
  (default 64): two different identities have cosine ~ N(0, 1/sqrt(rank)) = 0 +- 0.125, like real face
  embeddings whose impostor scores are spread wider than random 512-d directions would be (0 +- 0.044);
- a face is ``normalise(centroid + noise)`` with isotropic full-dimension noise of squared norm
  ``s2`` drawn per face uniformly in [``noise_min``, ``noise_max``] (default 0.25 .. 1.0). Two faces of one
  identity then have cosine ~ 1 / sqrt((1 + s2a)(1 + s2b)), i.e. 0.5 .. 0.8 (mean ~0.63), and two faces
  of different identities ~ 0 +- 0.08 (the centroid spread shrunk by the noise);
- identities are drawn uniformly per face, ``faces_per_identity`` on average (default 8; Poisson counts).

Fitted to a real model (``fitted_spec``): real face embeddings are not centred. dlib-resnet's unit vectors
share one mean direction (the mean of LFW A-J's vectors has norm 0.91), so two strangers already score
~0.84 and two photos of one person ~0.95. ``mean_norm`` adds that shared direction and
``centroid_scale`` the identity spread around it; their values, with ``rank`` and the noise range, are
fitted to a real gallery's genuine and impostor similarity histograms by
``benchmarks/recall_latency.py --fit-from-gallery`` and stored in ``benchmarks/synthetic_fit.json``
(one entry per dimension, with the threshold that separates the fitted distributions). ``fitted_spec``
returns that generator for a dimension that has a fit (128: the default model, dlib-resnet) and the
plain one otherwise.

Queries for recall benchmarks are *new* faces of identities that exist in the gallery (``queries``), drawn
from a separate random stream so that they are never in the gallery. With these parameters the genuine
and impostor score distributions are separated at 0.5 (the threshold the benchmarks use), as for a real
model with a calibrated threshold.

Generation is chunked (``chunk`` faces at a time) so memory stays at one chunk whatever ``n``; every
chunk becomes one Parquet shard plus its SQLite rows, written by the store's own appender
(``gallery.store.append_embedded_faces``), never by SQL here.

    python benchmarks/synthetic.py /tmp/gal --n 1000000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.store import Gallery, append_embedded_faces, is_gallery  # noqa: E402

THRESHOLD = 0.5  # the genuine/impostor boundary of the plain generator (see the module docstring)
FIT_FILE = Path(__file__).resolve().with_name("synthetic_fit.json")


@dataclass(frozen=True)
class SyntheticSpec:
    n: int = 1_000_000
    dim: int = 512
    rank: int = 64
    noise_min: float = 0.25
    noise_max: float = 1.0
    faces_per_identity: float = 8.0
    seed: int = 0
    mean_norm: float = 0.0  # norm of the direction every face shares (0: centred, the plain generator)
    centroid_scale: float = 1.0  # norm of an identity's centroid around that shared direction
    threshold: float = THRESHOLD  # genuine/impostor boundary: the gallery's threshold, the mate threshold

    @property
    def n_identities(self) -> int:
        return max(1, int(round(self.n / self.faces_per_identity)))

    @property
    def fitted(self) -> bool:
        return self.mean_norm != 0.0 or self.centroid_scale != 1.0

    def stamp(self) -> dict:
        pre = f"synthetic-r{self.rank}-s{self.noise_min}-{self.noise_max}"
        if self.fitted:
            pre += f"-m{self.mean_norm}-c{self.centroid_scale}"
        return {"name": "synthetic", "dim": self.dim, "input_size": 0, "preprocessing": pre}


def load_fits(path: Path = FIT_FILE) -> dict[str, Any]:
    """The stored fits, by dimension as a string ({} when the file is absent)."""
    if not path.is_file():
        return {}
    return json.loads(path.read_text()).get("fits", {})


def fitted_spec(n: int, dim: int, seed: int = 0, fitted: bool = True) -> SyntheticSpec:
    """The generator for `n` faces of dimension `dim`: fitted to a real model's similarity histograms
    where benchmarks/synthetic_fit.json has a fit for `dim` (and `fitted`), else the plain one."""
    fit = load_fits().get(str(dim)) if fitted else None
    if fit:
        p = fit["params"]
        return SyntheticSpec(n=n, dim=dim, rank=int(p["rank"]), noise_min=float(p["noise_min"]),
                             noise_max=float(p["noise_max"]), mean_norm=float(p["mean_norm"]),
                             centroid_scale=float(p["centroid_scale"]), threshold=float(fit["threshold"]),
                             seed=seed)
    return SyntheticSpec(n=n, dim=dim, rank=min(SyntheticSpec.rank, max(2, dim // 2)), seed=seed)


class SyntheticFaces:
    """Deterministic generator: identity centroids are kept as `rank`-d coefficients (n_ids x rank)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        basis = rng.standard_normal((spec.dim, spec.rank), dtype=np.float32)
        self.basis = np.linalg.qr(basis)[0].T.astype(np.float32)  # (rank, dim), orthonormal rows
        coef = rng.standard_normal((spec.n_identities, spec.rank), dtype=np.float32)
        self.coef = coef / np.linalg.norm(coef, axis=1, keepdims=True)
        self.shared = np.zeros(spec.dim, np.float32)
        if spec.mean_norm:
            # a direction orthogonal to the identity subspace, from its own stream (the plain
            # generator's draws stay as they were)
            u = np.random.default_rng([spec.seed, 3]).standard_normal(spec.dim).astype(np.float32)
            u -= self.basis.T @ (self.basis @ u)
            self.shared = (spec.mean_norm * u / np.linalg.norm(u)).astype(np.float32)

    def centroids(self, identities: np.ndarray) -> np.ndarray:
        c = self.coef[identities] @ self.basis
        if self.spec.centroid_scale != 1.0:
            c *= self.spec.centroid_scale
        if self.spec.mean_norm:
            c += self.shared
        return c

    def faces(self, identities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        n = identities.shape[0]
        s2 = rng.uniform(spec.noise_min, spec.noise_max, size=(n, 1)).astype(np.float32)
        noise = rng.standard_normal((n, spec.dim), dtype=np.float32)
        noise *= np.sqrt(s2 / spec.dim)
        x = self.centroids(identities) + noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def gallery_chunks(self, chunk: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield (identity ids, embeddings) for the gallery faces, in face order, chunk by chunk."""
        spec = self.spec
        rng = np.random.default_rng([spec.seed, 1])
        for start in range(0, spec.n, chunk):
            n = min(chunk, spec.n - start)
            ids = rng.integers(0, spec.n_identities, size=n)
            yield ids, self.faces(ids, rng)

    def queries(self, n: int, seed: int = 12345) -> tuple[np.ndarray, np.ndarray]:
        """New faces (not in the gallery) of identities drawn uniformly: (identities, (n, dim) float32)."""
        rng = np.random.default_rng([self.spec.seed, 2, seed])
        ids = rng.integers(0, self.spec.n_identities, size=n)
        return ids, self.faces(ids, rng)


def identity_name(identity: int) -> str:
    return f"synthetic-{identity:07d}"


def _large_page_cache(gallery: Gallery, mib: int = 1024) -> None:
    """A bigger SQLite page cache for this process's connections: the unique indexes on image paths
    and hashes take random keys, and with SQLite's 2 MiB default every insert re-reads B-tree pages
    (writing 10M faces in 100k-face commits went from ~5 s to ~50 s per 100k faces as the database grew;
    bigger commits, see benchmarks/recall_latency.py, touch each page fewer times)."""
    from sqlalchemy import event

    def pragma(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
        dbapi_connection.execute(f"PRAGMA cache_size=-{mib * 1024}")

    event.listen(gallery.engine, "checkout", pragma)


def write_synthetic_gallery(
    root: Path | str, spec: SyntheticSpec, chunk: int = 100_000, progress: bool = False
) -> Gallery:
    """Create (or extend) a gallery at `root` with `spec.n` synthetic faces; returns it open.

    Face ids continue after the gallery's highest id, so a second call with another seed appends.
    The gallery's 1:1 threshold (two faces are one person) is the generator's genuine/impostor boundary,
    stored like a calibrated one, so that every reader resolves it the same way
    (search.threshold.resolve_one_to_one: `gallery bench`'s mate threshold).
    """
    gallery = Gallery.open_or_create(root)
    try:
        if spec.n >= 1_000_000:
            _large_page_cache(gallery)
        gen = SyntheticFaces(spec)
        t0 = time.time()
        done = 0
        with gallery.writer_lock():
            source = "synthetic generator boundary (benchmarks/synthetic.py)"
            gallery.set_threshold(spec.threshold, source,
                                  extra={"one_to_one": {"value": spec.threshold, "source": source}})
            for identities, emb in gen.gallery_chunks(chunk):
                # one call, one committed shard: the store's own write path, as ingestion uses it
                append_embedded_faces(gallery, spec.stamp(), emb, identities=[identity_name(i) for i in identities],
                                      photo_prefix="synthetic")
                done += emb.shape[0]
                if progress:
                    print(f"  synthetic: {done:,} faces written ({time.time() - t0:.0f} s)", flush=True)
    except BaseException:
        gallery.close()
        raise
    return gallery


def ensure_synthetic_gallery(
    root: Path, spec: SyntheticSpec, chunk: int = 100_000, progress: bool = False
) -> dict[str, Any]:
    """Reuse the gallery at `root` when it holds exactly `spec`'s faces, else generate it; a folder
    holding another gallery is refused (benchmarks never overwrite data)."""
    if is_gallery(root):
        with Gallery.open(root) as g:
            faces, stamp = g.info().faces, g.model_stamp
        if faces == spec.n and stamp == spec.stamp():
            return {"generated": False, "path": str(root), "faces": faces}
        raise SystemExit(f"{root} holds another gallery ({faces:,} faces, {stamp}): delete it or pick another folder")
    t = time.time()
    write_synthetic_gallery(root, spec, chunk=chunk, progress=progress).close()
    return {"generated": True, "path": str(root), "faces": spec.n, "seconds": round(time.time() - t, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gallery", type=Path)
    parser.add_argument("--n", type=int, default=SyntheticSpec.n)
    parser.add_argument("--dim", type=int, default=SyntheticSpec.dim)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=100_000)
    parser.add_argument("--plain", action="store_true", help="the plain generator even where a fit exists")
    args = parser.parse_args()
    spec = fitted_spec(args.n, args.dim, args.seed, fitted=not args.plain)
    t0 = time.time()
    write_synthetic_gallery(args.gallery, spec, chunk=args.chunk, progress=True).close()
    print(f"wrote {spec.n:,} faces ({asdict(spec)}) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
