"""Time to erase one person from a large gallery through the product's own `gallery.app.erasure.erase`.

A synthetic gallery (benchmarks/synthetic.py: N faces, ~8 per identity, 100k faces per shard) with the
default index (chosen by size; IVF-PQ with a re-rank file at 1M), then one identity erased: SQLite rows
deleted (secure_delete + WAL checkpoint), every shard that held one of their faces rewritten, the ids
removed from the FAISS index and their re-rank rows zeroed. The gallery is reused between runs when it
still holds N faces; each run erases another identity.

    python benchmarks/erase_scale.py --n 1000000 --dim 128 --work /tmp/erase-1m --output results/erase.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from benchmarks.synthetic import SyntheticSpec, ensure_synthetic_gallery  # noqa: E402
from gallery.app.erasure import erase  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from gallery.store.erase import ErasureSelection  # noqa: E402
from indexer import build_index, index_info  # noqa: E402
from indexer.manifest import read_manifest  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=128)
    parser.add_argument("--work", type=Path, required=True, help="folder for the generated gallery (reused)")
    parser.add_argument("--runs", type=int, default=3, help="identities erased, one after the other")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    spec = SyntheticSpec(n=args.n, dim=args.dim, rank=min(SyntheticSpec.rank, args.dim // 2))
    result: dict = {"n": args.n, "dim": args.dim, "gallery": ensure_synthetic_gallery(args.work, spec, progress=True)}
    try:
        read_manifest(args.work / "index", args.work)
    except Exception:  # noqa: BLE001 - no index yet (or an unreadable one): build it
        t = time.time()
        manifest = build_index(args.work, device="cpu")
        result["index_build_s"] = round(time.time() - t, 1)
    manifest = index_info(args.work)
    result["index"] = {"factory": manifest["factory"], "ntotal": manifest["ntotal"],
                       "rerank": (manifest.get("rerank") or {}).get("enabled")}
    runs = []
    with Gallery.open(args.work) as g:
        names = [name for name, n in g.identities() if n >= 5][: args.runs]
    for name in names:
        report = erase(args.work, ErasureSelection(identity=name), "identities erase")
        runs.append(report.as_dict())
        print(json.dumps(runs[-1]), flush=True)
    result["runs"] = runs
    result["seconds_median"] = sorted(r["seconds"] for r in runs)[len(runs) // 2] if runs else None
    print(json.dumps(result, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
