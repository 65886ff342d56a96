"""Listing people and backing up a large gallery: seconds at 1M faces, never minutes.

Builds (once, kept in --work) a synthetic gallery of N faces in shards of 100k, labeled with N/10
names drawn at random, and times through the product's own code: `identity_rows` (what
`gallery identities` and `GET /v1/identities` read), one page of the HTTP listing (the rows plus the
faces of 50 people), `face_details` of one person, the query plan SQLite chose, then `gallery backup`
of the whole gallery (seconds, MB/s) and `gallery restore` of that backup.

    python benchmarks/listing_backup.py --faces 1000000 --dim 128 --work /tmp/listing-1m
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
from sqlalchemy import text

from gallery.device import apply_process_defaults

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.store import Gallery, append_embedded_faces  # noqa: E402
from indexer.backup import backup, restore  # noqa: E402


def synthetic(root: Path, n: int, dim: int) -> None:
    rng = np.random.default_rng(0)
    with Gallery.open_or_create(root) as g:
        for start in range(0, n, 100_000):
            m = min(100_000, n - start)
            x = rng.standard_normal((m, dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            names = [f"person{int(i)}" for i in rng.integers(0, max(1, n // 10), m)]
            append_embedded_faces(g, {"name": f"bench-{dim}d", "dim": dim, "input_size": 0, "preprocessing": "bench"},
                                  x, identities=names)


def timed(fn):  # noqa: ANN001, ANN201
    t = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - t, 3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--faces", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=128)
    ap.add_argument("--work", type=Path, default=Path("/tmp/listing-bench"))
    args = ap.parse_args()
    root = args.work / "g"
    if not root.exists():
        _, built = timed(lambda: synthetic(root, args.faces, args.dim))
        print(f"built {args.faces:,} faces in {built} s", flush=True)
    result: dict = {"faces": args.faces, "dim": args.dim}
    with Gallery.open(root) as g:
        rows, result["identity_rows_s"] = timed(g.identity_rows)
        result["identities"] = len(rows)

        def page() -> int:
            listed = g.identity_rows()[:50]
            return sum(len(g.face_details(identity_id=i)) for i, _, n in listed if n)

        _, result["http_page_of_50_s"] = timed(page)
        _, result["face_details_one_person_s"] = timed(lambda: g.face_details(identity_id=rows[0][0]))
        sql = ("SELECT identities.identity_id, count(faces.face_id) FROM identities LEFT OUTER JOIN faces ON "
               "faces.identity_id = identities.identity_id AND faces.deleted IS 0 GROUP BY identities.identity_id")
        with g.engine.connect() as conn:
            result["plan"] = " | ".join(r[3] for r in conn.execute(text("EXPLAIN QUERY PLAN " + sql)))
    dest = args.work / "backup"
    shutil.rmtree(dest, ignore_errors=True)
    report = backup(root, dest)
    result["backup"] = {"seconds": report["seconds"], "mb": round(report["bytes"]["total"] / 1e6, 1),
                        "mb_per_s": report["mb_per_s"]}
    target = args.work / "restored"
    shutil.rmtree(target, ignore_errors=True)
    restored = restore(dest, target)
    result["restore"] = {"seconds": restored["seconds"], "mb_per_s": restored["mb_per_s"]}
    shutil.rmtree(dest)
    shutil.rmtree(target)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
