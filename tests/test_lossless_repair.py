"""Repair loses nothing it can recover: the new user's case end to end.

A gallery of real photos is curated (a rename, a merge, a relabel, an ignored face, a face rejected
from its cluster); a shard is damaged. `gallery repair` must bring every face and every curation back
from the index's copies of the vectors without reading a photo; with the index gone too, from the
photos, embedded again by the gallery's own model, and still keep every curation. Each rebuild of the
index keeps the gallery's own factory.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
from sqlalchemy import select
from typer.testing import CliRunner

from gallery.cli import app
from gallery.ingest import IngestOptions, ingest
from gallery.store import Gallery
from gallery.store.schema import ClusterRejection, Face, FaceCluster, Identity
from indexer import load_index
from tests.conftest import copy_lfw_people, requires_lfw

runner = CliRunner()
OPTIONS = IngestOptions(model="facenet-untrained", workers=0, detect_batch_size=8)


def invoke(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    assert "Traceback" not in result.output, result.output
    return result.exit_code, result.stdout


def curation(root: Path) -> dict:
    """Everything the user made of the faces: labels, ignore marks, clusters, rejections, names."""
    with Gallery.open(root) as g, g.session() as s:
        faces = {int(f): (name, bool(d), bool(i)) for f, name, d, i in s.execute(
            select(Face.face_id, Identity.name, Face.deleted, Face.ignored)
            .join(Identity, Identity.identity_id == Face.identity_id, isouter=True))}
        clusters = dict(s.execute(select(FaceCluster.face_id, FaceCluster.cluster_id)).all())
        rejections = {(int(f), int(c)) for f, c in s.execute(select(ClusterRejection.face_id,
                                                                   ClusterRejection.cluster_id))}
        return {"faces": faces, "clusters": clusters, "rejections": rejections,
                "names": sorted(g.identities())}


def damage(shard: Path) -> None:
    data = bytearray(shard.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 64] = np.random.default_rng(7).bytes(64)
    shard.write_bytes(bytes(data))


def self_search(root: Path) -> float:
    """Share of live faces whose own vector finds them first (every face served again)."""
    with Gallery.open(root) as g:
        ids = np.asarray(g.live_faces().face_ids)
        x = g.read_embeddings(ids)
    with load_index(root) as index:
        scores, hits = index.search(x, 1)
    assert np.all(np.abs(scores) <= 1.0 + 1e-5)
    return float(np.mean(hits[:, 0] == ids))


@requires_lfw
def test_repair_keeps_every_face_and_every_curation(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    copy_lfw_people(archive, {"Aaron_Peirsol": 4, "Abdullah_Gul": 6, "Alejandro_Toledo": 6, "Ari_Fleischer": 4})
    root = tmp_path / "g"
    ingest(archive, root, OPTIONS)
    assert invoke("index", "build", "--gallery", str(root), "--factory", "HNSW32")[0] == 0
    assert invoke("cluster", "--gallery", str(root), "--include-labeled", "--threshold", "0.0", "--json")[0] == 0

    # the user's work
    assert invoke("identities", "rename", "Aaron_Peirsol", "Aaron", "--gallery", str(root))[0] == 0
    assert invoke("identities", "merge", "Abdullah_Gul", "Ari_Fleischer", "--into", "Abdullah",
                  "--gallery", str(root))[0] == 0
    with Gallery.open(root) as g:
        toledo = [f.face_id for f in g.identity_faces("Alejandro_Toledo")]
        cluster = g.cluster_rows(min_size=2)[0]
        members = g.cluster_face_ids(cluster.cluster_id)
    assert invoke("faces", "relabel", str(toledo[0]), "--name", "Aaron", "--gallery", str(root))[0] == 0
    assert invoke("faces", "ignore", str(toledo[1]), "--gallery", str(root))[0] == 0
    assert invoke("clusters", "reject", str(cluster.cluster_id), str(members[-1]), "--gallery", str(root))[0] == 0
    before = curation(root)
    assert (members[-1], cluster.cluster_id) in before["rejections"] and "Aaron" in dict(before["names"])

    # 1. a damaged shard: every vector is in the index (HNSW over flat storage), no photo is read
    shard = next((root / "shards").glob("*.parquet"))
    damage(shard)
    assert invoke("check", "--gallery", str(root))[0] == 1
    shutil.move(archive, tmp_path / "away")  # the photos are not needed for this
    code, out = invoke("repair", "--gallery", str(root), "--json")
    result = json.loads(out)
    assert code == 0, out
    assert result["faces_dropped"] == 0 and set(result["restored_from"]) == {"flat-index"}
    assert curation(root) == before
    assert invoke("check", "--gallery", str(root), "--deep")[0] == 0
    assert self_search(root) == 1.0

    # 2. the shard damaged again and the index gone too: the photos are embedded again
    shutil.move(tmp_path / "away", archive)
    damage(shard)
    shutil.rmtree(root / "index")
    code, out = invoke("repair", "--gallery", str(root), "--json")
    result = json.loads(out)
    assert code == 0, out
    assert result["faces_dropped"] == 0 and set(result["restored_from"]) == {"photo"}, result
    assert result["index"] == "rebuilt"
    assert curation(root) == before
    assert invoke("check", "--gallery", str(root), "--deep")[0] == 0
    manifest = json.loads((root / "index" / "manifest.json").read_text())
    assert manifest["factory"] == "HNSW32"  # the gallery's own factory, from SQLite's record of the last build
    assert self_search(root) == 1.0
