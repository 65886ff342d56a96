"""Load test of `gallery serve` over loopback: latency percentiles, throughput and errors of
`POST /v1/search` with a photo (decode + detect + align + embed + k-NN + lookup) and with an embedding
only (k-NN + lookup), at several concurrency levels and a fixed number of requests per level.

The server is the product's own (`gallery serve` in a subprocess, one worker unless --workers), on a
copy of the gallery (a key is created in it); each client thread has its own HTTP connection.

    python benchmarks/serve_load.py --gallery /tmp/lfwg --photos ../shared/data/lfw-aj/images \\
        --concurrency 1 4 16 --photo-requests 64 --embedding-requests 400 --output results/serve_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.store import Gallery  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(gallery: Path, port: int, workers: int, log: Path) -> subprocess.Popen:
    import httpx

    proc = subprocess.Popen(
        [sys.executable, "-m", "gallery.cli", "serve", "--gallery", str(gallery), "--port", str(port),
         "--workers", str(workers), "--log-level", "warning"],
        stdout=open(log, "w"), stderr=subprocess.STDOUT)  # noqa: SIM115 - lives as long as the server
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited ({proc.returncode}): {log.read_text()}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v1/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.terminate()
    raise SystemExit("the server did not start within 180 s")


def run_level(url: str, key: str, make_request: list, concurrency: int, requests: int) -> dict:
    """`requests` calls spread over `concurrency` threads (each with its own connection)."""
    import httpx

    latencies: list[float] = []
    errors: dict[str, int] = {}
    lock = threading.Lock()

    def worker(share: int, offset: int) -> None:
        with httpx.Client(base_url=url, headers={"X-Api-Key": key}, timeout=300) as client:
            for i in range(share):
                kwargs = make_request[(offset + i) % len(make_request)]
                t0 = time.perf_counter()
                try:
                    r = client.post("/v1/search", **kwargs)
                    ok = r.status_code == 200
                    reason = str(r.status_code)
                except httpx.HTTPError as exc:
                    ok, reason = False, type(exc).__name__
                with lock:
                    latencies.append(time.perf_counter() - t0)
                    if not ok:
                        errors[reason] = errors.get(reason, 0) + 1

    shares = [requests // concurrency + (1 if i < requests % concurrency else 0) for i in range(concurrency)]
    t0 = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        offsets = np.cumsum([0, *shares[:-1]])
        list(pool.map(worker, shares, offsets))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1000
    return {"concurrency": concurrency, "requests": requests, "seconds": round(wall, 3),
            "requests_per_s": round(requests / wall, 2), "p50_ms": round(float(np.percentile(lat, 50)), 1),
            "p99_ms": round(float(np.percentile(lat, 99)), 1), "max_ms": round(float(lat.max()), 1),
            "errors": sum(errors.values()), "error_kinds": errors}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--gallery", type=Path, required=True, help="an indexed gallery (copied; the copy is served)")
    ap.add_argument("--photos", type=Path, required=True, help="folder of query photos (searched recursively)")
    ap.add_argument("--query-photos", type=int, default=32, help="distinct query photos, cycled")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16])
    ap.add_argument("--photo-requests", type=int, default=64, help="photo searches per concurrency level")
    ap.add_argument("--embedding-requests", type=int, default=400, help="embedding searches per level")
    ap.add_argument("--workers", type=int, default=1, help="server worker processes")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--output", type=Path, help="write the results as JSON")
    args = ap.parse_args()

    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="serve-load-"))
    try:
        gallery = work / "gallery"
        shutil.copytree(args.gallery, gallery)
        with Gallery.open(gallery) as g:
            key = g.create_key("serve-load", ["search"])[1]
            faces = g.face_details()
            picked = rng.choice(len(faces), size=min(256, len(faces)), replace=False)
            vectors = g.read_embeddings([faces[i].face_id for i in picked])
            info = g.info()
        photos = sorted(p for p in args.photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
        chosen = [photos[i] for i in rng.choice(len(photos), size=min(args.query_photos, len(photos)),
                                                 replace=False)]
        photo_requests = [{"files": {"file": (p.name, p.read_bytes(), "image/jpeg")}} for p in chosen]
        embedding_requests = [{"json": {"embedding": v.tolist()}} for v in vectors]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(gallery, port, args.workers, work / "serve.log")
        try:
            run_level(url, key, photo_requests, 1, 4)  # warm-up
            run_level(url, key, embedding_requests, 1, 20)
            results = {"photo": [], "embedding": []}
            for c in args.concurrency:
                results["photo"].append(run_level(url, key, photo_requests, c, args.photo_requests))
                results["embedding"].append(run_level(url, key, embedding_requests, c, args.embedding_requests))
                for kind in ("photo", "embedding"):
                    r = results[kind][-1]
                    print(f"{kind:9s} c={c:2d}: {r['requests']} requests, p50 {r['p50_ms']} ms, p99 {r['p99_ms']} ms, "
                          f"{r['requests_per_s']} req/s, errors {r['errors']}", flush=True)
        finally:
            proc.terminate()
            proc.wait(timeout=30)
        report = {"gallery_faces": info.faces, "gallery_identities": info.identities, "workers": args.workers,
                  "query_photos": len(chosen), "cpu_count": os.cpu_count(), "results": results}
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps(report, indent=2))
        print(json.dumps(report))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
