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

Queries for recall benchmarks are *new* faces of identities that exist in the gallery (``queries``), drawn
from a separate random stream so that they are never in the gallery. With these parameters the genuine
and impostor score distributions are separated at 0.5 (the threshold the benchmarks use), as for a real
model with a calibrated threshold.

Generation is chunked (``chunk`` faces at a time) so memory stays at one chunk whatever ``n``; every
chunk becomes one Parquet shard plus its SQLite rows, exercising the same path as ingestion.

    python benchmarks/synthetic.py /tmp/gal --n 1000000
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere

from gallery.store import Gallery  # noqa: E402
from gallery.store.db import Shard  # noqa: E402
from gallery.store.shards import ShardRows, shard_filename, write_shard  # noqa: E402


@dataclass(frozen=True)
class SyntheticSpec:
    n: int = 1_000_000
    dim: int = 512
    rank: int = 64
    noise_min: float = 0.25
    noise_max: float = 1.0
    faces_per_identity: float = 8.0
    seed: int = 0

    @property
    def n_identities(self) -> int:
        return max(1, int(round(self.n / self.faces_per_identity)))

    def stamp(self) -> dict:
        return {
            "name": "synthetic",
            "dim": self.dim,
            "input_size": 0,
            "preprocessing": f"synthetic-r{self.rank}-s{self.noise_min}-{self.noise_max}",
        }


class SyntheticFaces:
    """Deterministic generator: identity centroids are kept as `rank`-d coefficients (n_ids x rank)."""

    def __init__(self, spec: SyntheticSpec) -> None:
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        basis = rng.standard_normal((spec.dim, spec.rank), dtype=np.float32)
        self.basis = np.linalg.qr(basis)[0].T.astype(np.float32)  # (rank, dim), orthonormal rows
        coef = rng.standard_normal((spec.n_identities, spec.rank), dtype=np.float32)
        self.coef = coef / np.linalg.norm(coef, axis=1, keepdims=True)

    def centroids(self, identities: np.ndarray) -> np.ndarray:
        return self.coef[identities] @ self.basis

    def faces(self, identities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        spec = self.spec
        n = identities.shape[0]
        s2 = rng.uniform(spec.noise_min, spec.noise_max, size=(n, 1)).astype(np.float32)
        noise = rng.standard_normal((n, spec.dim), dtype=np.float32)
        noise *= np.sqrt(s2 / spec.dim)
        x = self.centroids(identities) + noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        return x

    def gallery_chunks(self, chunk: int):
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


def write_synthetic_gallery(
    root: Path | str, spec: SyntheticSpec, chunk: int = 100_000, progress: bool = False
) -> Gallery:
    """Create (or extend) a gallery at `root` with `spec.n` synthetic faces; returns it open.

    Face ids continue after the gallery's highest id, so a second call with another seed appends.
    """
    gallery = Gallery.open_or_create(root)
    gallery.stamp_model(spec.stamp())
    gen = SyntheticFaces(spec)
    with gallery.session() as s:
        from gallery.store import db

        next_id = db.max_face_id(s) + 1
        next_shard = (s.query(Shard.shard_id).order_by(Shard.shard_id.desc()).limit(1).scalar() or 0) + 1
    raw = gallery.engine.raw_connection()
    try:
        cur = raw.cursor()
        cur.execute("SELECT coalesce(max(identity_id), 0) FROM identities")
        if cur.fetchone()[0] == 0:
            now = time.time()
            cur.executemany(
                "INSERT INTO identities (identity_id, name, created_at) VALUES (?, ?, ?)",
                ((i + 1, f"synthetic-{i:07d}", now) for i in range(spec.n_identities)),
            )
            raw.commit()
        t0 = time.time()
        for identities, emb in gen.gallery_chunks(chunk):
            n = emb.shape[0]
            face_ids = np.arange(next_id, next_id + n, dtype=np.int64)
            rows = ShardRows(
                face_id=face_ids,
                image_id=face_ids,
                embedding=emb,
                box=np.tile(np.array([0, 0, 112, 112], np.float32), (n, 1)),
                landmarks=np.zeros((n, 5, 2), np.float32),
                det_score=np.ones(n, np.float32),
            )
            name = shard_filename(next_shard)
            size = write_shard(gallery.shards_dir / name, rows, spec.stamp())
            now = time.time()
            cur.executemany(
                "INSERT INTO images (image_id, sha256, path, width, height, status, n_faces) "
                "VALUES (?, ?, ?, 112, 112, 'done', 1)",
                (
                    (int(f), hashlib.sha256(f"{spec.seed}-{f}".encode()).hexdigest(), f"synthetic/{f}.jpg")
                    for f in face_ids
                ),
            )
            cur.execute(
                "INSERT INTO shards (shard_id, filename, n_faces, min_face_id, max_face_id, bytes, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (next_shard, name, n, int(face_ids[0]), int(face_ids[-1]), size, now),
            )
            cur.executemany(
                "INSERT INTO faces (face_id, image_id, shard_id, identity_id, is_main, det_score, "
                "x1, y1, x2, y2, deleted) VALUES (?, ?, ?, ?, 1, 1.0, 0, 0, 112, 112, 0)",
                ((int(f), int(f), next_shard, int(i) + 1) for f, i in zip(face_ids, identities)),
            )
            raw.commit()
            next_id += n
            next_shard += 1
            if progress:
                done = next_id - 1
                print(f"  synthetic: {done:,} faces written ({time.time() - t0:.0f} s)", flush=True)
    finally:
        raw.close()
    return gallery


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gallery", type=Path)
    parser.add_argument("--n", type=int, default=SyntheticSpec.n)
    parser.add_argument("--dim", type=int, default=SyntheticSpec.dim)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk", type=int, default=100_000)
    args = parser.parse_args()
    spec = SyntheticSpec(n=args.n, dim=args.dim, seed=args.seed)
    t0 = time.time()
    write_synthetic_gallery(args.gallery, spec, chunk=args.chunk, progress=True).close()
    print(f"wrote {spec.n:,} faces ({asdict(spec)}) in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
