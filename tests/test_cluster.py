"""Clustering: the graph methods (no data), the gallery workflow on synthetic galleries (cluster, add,
name, split, reject, erase), and the whole CLI walk-through on a real unlabeled LFW ingest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.errors import GalleryError, NotInGallery
from gallery.store import Gallery, append_embedded_faces
from search.cluster import (
    cluster_gallery,
    list_clusters,
    name_cluster,
    reject_faces,
    show_cluster,
    split_cluster,
)
from search.cluster.graph import knn_graph
from search.cluster.methods import average_link, core_points, single_link
from search.cluster.metrics import score_clustering
from search.cluster.settings import MODEL_DEFAULTS, defaults_key, resolve_settings
from tests.conftest import copy_lfw_people, lfw_available, lfw_photo, requires_lfw
from tests.helpers.galleries import stamp

runner = CliRunner()
DIM = 32


def people(n_people: int, per_person: int, seed: int, noise: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors around `n_people` random centres: cosine within a person ~0.8, between ~0."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_people, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    who = np.repeat(np.arange(n_people), per_person)
    x = centres[who] + noise * rng.standard_normal((who.size, DIM)).astype(np.float32) / np.sqrt(DIM)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), who


def same_partition(a: np.ndarray, b: np.ndarray) -> bool:
    s = score_clustering(a, b)
    return s.pairwise_precision == 1.0 and s.pairwise_recall == 1.0 and s.bcubed_f == 1.0


# --- methods (pure) ------------------------------------------------------------------------------

def test_average_link_on_a_full_graph_is_exact_average_linkage() -> None:
    from scipy.cluster.hierarchy import fcluster, linkage

    rng = np.random.default_rng(3)
    x = rng.standard_normal((120, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = knn_graph(x, 119)  # every pair is an edge
    for threshold in (0.2, 0.4, 0.6):
        ours = average_link(x, graph, threshold)
        theirs = fcluster(linkage(x.astype(np.float64), "average", metric="cosine"), 1 - threshold, "distance")
        assert same_partition(ours, theirs), threshold
        assert 1 < np.unique(ours).size < 120


def test_size_aware_threshold_merges_large_groups_not_single_pairs() -> None:
    # two groups whose faces are 0.8-similar inside and 0.55 across: one person seen in two settings
    base = np.eye(4, dtype=np.float32)
    a = base[0] * 0.9 + base[1] * np.sqrt(1 - 0.81)
    b = base[0] * 0.9 - base[1] * np.sqrt(1 - 0.81)  # cos(a, b) = 0.81 - 0.19 = 0.62
    rng = np.random.default_rng(0)
    group = lambda c, n: np.stack([c + 0.05 * rng.standard_normal(4) for _ in range(n)]).astype(np.float32)  # noqa: E731
    x = np.concatenate([group(a, 30), group(b, 30)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    graph = knn_graph(x, 59)
    across = float(x[:30].sum(0) @ x[30:].sum(0)) / 900
    plain = average_link(x, graph, across + 0.05)  # plain average linkage above the cross mean: two
    assert np.unique(plain).size == 2
    aware = average_link(x, graph, across + 0.05, floor=across - 0.05)  # large groups need only the floor
    assert np.unique(aware).size == 1
    # ...while two single faces at that cross similarity stay apart
    pair = np.stack([a, b]).astype(np.float32)
    assert np.unique(average_link(pair, knn_graph(pair, 1), across + 0.05, floor=across - 0.05)).size == 2


def test_frozen_clusters_absorb_but_never_merge_each_other() -> None:
    x, who = people(2, 10, seed=1, noise=0.3)
    x = np.concatenate([x, x[:1]])  # a new face of person 0
    graph = knn_graph(x, 20)
    start = np.concatenate([np.zeros(10, int), np.ones(10, int), [2]])
    merged = average_link(x, graph, -1.0, labels=start)  # everything may merge
    assert np.unique(merged).size == 1
    kept = average_link(x, graph, -1.0, labels=start, frozen=np.array([True, True, False]))
    assert np.unique(kept).size == 2 and kept[-1] == kept[0]


def test_single_link_chains_and_core_points_do_not() -> None:
    # a chain a - b - c where a and c are far apart: single link joins all three
    x = np.array([[1, 0], [np.cos(0.5), np.sin(0.5)], [np.cos(1.0), np.sin(1.0)]], np.float32)
    graph = knn_graph(x, 2)
    threshold = float(np.cos(0.55))
    assert np.unique(single_link(graph, threshold)).size == 1
    assert np.unique(average_link(x, graph, threshold)).size == 2
    assert np.unique(core_points(graph, threshold, min_neighbours=3)).size == 3  # no core: all alone


def test_knn_graph_leaves_each_face_out_and_pads() -> None:
    x, _ = people(3, 4, seed=2)
    graph = knn_graph(x, 20)
    assert graph.neighbours.shape == (12, 20)
    assert not (graph.neighbours == np.arange(12)[:, None]).any()
    assert (graph.neighbours[:, 11:] == -1).all() and np.isneginf(graph.similarities[:, 11:]).all()
    assert (np.diff(graph.similarities[:, :11], axis=1) <= 1e-6).all()  # most similar first


def test_scores() -> None:
    truth = np.array([0, 0, 0, 1, 1, 2])
    perfect = score_clustering(np.array([5, 5, 5, 7, 7, 9]), truth)
    assert perfect.pairwise_f == 1.0 and perfect.bcubed_f == 1.0 and perfect.clusters == 2
    one = score_clustering(np.zeros(6, int), truth)
    assert one.pairwise_recall == 1.0 and one.pairwise_precision == pytest.approx(4 / 15)
    assert one.bcubed_precision == pytest.approx((3 * 3 / 6 + 2 * 2 / 6 + 1 / 6) / 6)
    assert score_clustering(np.arange(6), truth).singleton_rate == 1.0


def test_settings_defaults_and_refusals() -> None:
    default = resolve_settings("dlib-resnet", None)
    assert default == MODEL_DEFAULTS["dlib-resnet"]
    moved = resolve_settings("dlib-resnet", None, threshold=0.95)
    assert moved.floor == pytest.approx(0.95 - (default.threshold - default.floor))
    with pytest.raises(GalleryError, match="--threshold"):
        resolve_settings("some-model", None)
    with pytest.raises(GalleryError, match="floor"):
        resolve_settings("some-model", None, threshold=0.5, floor=0.7)
    with pytest.raises(GalleryError, match="method"):
        resolve_settings("some-model", None, threshold=0.5, method="kmeans")


def test_a_gallery_without_flip_averaging_keeps_the_setting_tuned_without_it() -> None:
    # flip averaging raises every cosine: its galleries get the setting tuned on flipped embeddings
    # (with the crowd check), galleries built before it the one tuned on plain embeddings before it
    flipped = MODEL_DEFAULTS[defaults_key({"name": "dlib-resnet", "flip": True})]
    plain = MODEL_DEFAULTS[defaults_key({"name": "dlib-resnet"})]
    assert flipped == MODEL_DEFAULTS["dlib-resnet"] and flipped.crowd() is not None
    assert plain != flipped and plain.threshold < flipped.threshold and plain.crowd() is None
    assert defaults_key({"name": "some-model"}) == "some-model"  # no entry: the model's name, as before
    assert defaults_key(None) == ""


# --- the gallery workflow (synthetic faces) ------------------------------------------------------

SETTING = {"threshold": 0.5, "floor": 0.45}


def synthetic_gallery(root: Path, x: np.ndarray, names: list[str | None] | None = None) -> np.ndarray:
    with Gallery.open_or_create(root) as g:
        return append_embedded_faces(g, stamp(DIM), x, identities=names)


def assignment(root: Path) -> dict[int, int]:
    with Gallery.open(root) as g:
        state = g.clustering_faces()
    return dict(zip(state.face_ids.tolist(), state.cluster_ids.tolist()))


def test_cluster_name_add_reject_split_erase(tmp_path: Path) -> None:
    root = tmp_path / "g"
    x, who = people(6, 8, seed=5)
    ids = synthetic_gallery(root, x)
    report = cluster_gallery(root, **SETTING)
    assert (report.faces, report.clusters, report.singletons, report.incremental) == (48, 6, 0, False)
    got = assignment(root)
    for person in range(6):  # every person is one cluster, and no cluster mixes people
        assert len({got[int(f)] for f in ids[who == person]}) == 1
    assert len(set(got.values())) == 6
    rows = list_clusters(root)
    assert [r.size for r in rows] == [8] * 6 and all(r.name is None for r in rows)
    first = rows[0].cluster
    members = [f["face_id"] for f in show_cluster(root, first).faces]
    assert rows[0].representative_face in members

    # naming labels every face; a second cluster named the same merges into that person
    named = name_cluster(root, first, "Ann")
    assert (named.faces_labeled, named.merged) == (8, False)
    with Gallery.open(root) as g:
        assert dict(g.identities())["Ann"] == 8
    second = rows[1].cluster
    assert name_cluster(root, second, "Ann").merged
    with Gallery.open(root) as g:
        assert dict(g.identities())["Ann"] == 16
    name_cluster(root, second, "Bob")  # renaming that cluster takes its faces back out of Ann
    # nothing new: an incremental run changes nothing
    again = cluster_gallery(root)
    assert (again.incremental, again.new_faces, again.joined) == (True, 0, 0)

    # new faces of Ann's person join her cluster and take her name; a stranger stays alone
    ann_person = who[ids == members[0]][0]
    new_x, _ = people(6, 8, seed=5)  # same centres, fresh noise below
    rng = np.random.default_rng(9)
    fresh = new_x[who == ann_person][:3] + 0.2 * rng.standard_normal((3, DIM)).astype(np.float32) / np.sqrt(DIM)
    stranger = rng.standard_normal((1, DIM)).astype(np.float32)
    added = np.concatenate([fresh, stranger])
    added /= np.linalg.norm(added, axis=1, keepdims=True)
    new_ids = synthetic_gallery(root, added)
    step = cluster_gallery(root)
    assert (step.new_faces, step.joined, step.named_joined, step.new_clusters) == (4, 3, 3, 0)
    got = assignment(root)
    assert all(got[int(f)] == first for f in new_ids[:3]) and got[int(new_ids[3])] == -1
    with Gallery.open(root) as g:
        assert dict(g.identities())["Ann"] == 11

    # a changed setting on an incremental run is refused with the way out
    with pytest.raises(GalleryError, match="--rebuild"):
        cluster_gallery(root, threshold=0.6)

    # a rejected face leaves, and does not come back on a rebuild
    assert reject_faces(root, first, [int(new_ids[0])]).rejected == 1
    assert assignment(root)[int(new_ids[0])] == -1
    with pytest.raises(NotInGallery, match="not in cluster"):
        reject_faces(root, first, [int(new_ids[0])])
    cluster_gallery(root, rebuild=True, **SETTING)
    got = assignment(root)
    ann_cluster = got[int(new_ids[1])]
    assert got[int(new_ids[0])] != ann_cluster
    ann_rows = [r for r in list_clusters(root) if r.name == "Ann"]
    assert len(ann_rows) == 1 and ann_rows[0].cluster == ann_cluster  # names survive a rebuild

    # split with a strict threshold breaks a cluster into parts; unknown ids are named as such
    assert split_cluster(root, ann_cluster).into == []  # one step stricter: still one person
    result = split_cluster(root, ann_cluster, threshold=0.95)
    assert sum(p["size"] for p in result.into) + result.unclustered == 10
    assert len(result.into) + result.unclustered >= 2
    assert {p["cluster"] for p in result.into}.isdisjoint({ann_cluster})
    with pytest.raises(NotInGallery):
        show_cluster(root, ann_cluster)
    with pytest.raises(NotInGallery):
        name_cluster(root, 10_000, "X")

    # erasing a clustered person works (cluster rows go with the faces)
    from gallery.app.erasure import erase
    from gallery.store.erase import ErasureSelection

    bob = [r for r in list_clusters(root) if r.name == "Bob"][0]
    erase(root, ErasureSelection(identity="Bob"), command="identities erase")
    assert all(r.cluster != bob.cluster for r in list_clusters(root))


def test_incremental_through_the_gallery_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With an index built, new faces are searched through it (and the unindexed tail)."""
    import search.cluster.run as run_module
    from indexer.build import build_index

    monkeypatch.setattr(run_module, "STREAM_ABOVE", 0)  # the streamed read large galleries take
    root = tmp_path / "g"
    x, who = people(40, 10, seed=11)
    synthetic_gallery(root, x[: 300])
    cluster_gallery(root, threshold=0.65, floor=0.6)  # 40 random centres in 32-d: some pairs are close
    build_index(root)
    new_ids = synthetic_gallery(root, x[300:])  # the last 10 people: 100 faces, no clusters yet
    step = cluster_gallery(root)
    assert (step.new_faces, step.new_clusters, step.joined) == (100, 10, 0)
    got = assignment(root)
    for person in range(30, 40):
        assert len({got[int(f)] for f in new_ids[who[300:] == person]}) == 1


def test_labeled_faces_are_left_out_unless_asked(tmp_path: Path) -> None:
    root = tmp_path / "g"
    x, who = people(2, 5, seed=4)
    synthetic_gallery(root, x, names=["Known"] * 5 + [None] * 5)
    assert cluster_gallery(root, **SETTING).faces == 5
    assert cluster_gallery(root, rebuild=True, include_labeled=True, **SETTING).faces == 10


def test_unknown_model_needs_a_threshold(tmp_path: Path) -> None:
    root = tmp_path / "g"
    synthetic_gallery(root, people(2, 3, seed=0)[0])
    with pytest.raises(GalleryError, match="--threshold"):
        cluster_gallery(root)


# --- the walk-through on real photos --------------------------------------------------------------

PEOPLE = {"Colin_Powell": 6, "Hugo_Chavez": 6, "Ariel_Sharon": 5, "Aaron_Eckhart": 1, "AJ_Cook": 1}


@pytest.fixture(scope="module")
def unlabeled_lfw(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not lfw_available():
        pytest.skip("needs the LFW A–J photos (../shared/data/lfw-aj beside the repository)")
    from gallery.cli import app

    base = tmp_path_factory.mktemp("cluster_lfw")
    archive = base / "archive"
    copy_lfw_people(archive, PEOPLE)
    result = runner.invoke(app, ["ingest", str(archive), "--gallery", str(base / "g"), "--labels", "none", "--quiet"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["index", "build", "--gallery", str(base / "g")])
    assert result.exit_code == 0, result.output
    return base / "g"


@requires_lfw
def test_walk_through_on_unlabeled_photos(unlabeled_lfw: Path, tmp_path: Path) -> None:
    from gallery.cli import app

    g = str(unlabeled_lfw)
    result = runner.invoke(app, ["cluster", "--gallery", g, "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["method"] == "average" and report["clusters"] >= 3
    listed = json.loads(runner.invoke(app, ["clusters", "--gallery", g, "--json"]).stdout)
    by_person: dict[str, set[int]] = {}
    for cluster in listed:
        shown = json.loads(runner.invoke(app, ["clusters", "show", str(cluster["cluster"]), "--gallery", g,
                                               "--json"]).stdout)
        for face in shown["faces"]:
            by_person.setdefault(Path(face["photo"]).parent.name, set()).add(cluster["cluster"])
    # each person with several photos is one cluster, and no cluster holds two people
    for person in ("Colin_Powell", "Hugo_Chavez", "Ariel_Sharon"):
        assert len(by_person.get(person, set())) == 1, by_person
    clusters = [next(iter(by_person[p])) for p in ("Colin_Powell", "Hugo_Chavez", "Ariel_Sharon")]
    assert len(set(clusters)) == 3
    powell = clusters[0]

    # a contact sheet of the cluster, then the name; search of an unseen photo answers it
    sheet = tmp_path / "powell.png"
    result = runner.invoke(app, ["clusters", "show", str(powell), "--gallery", g, "--sheet", str(sheet)])
    assert result.exit_code == 0 and sheet.stat().st_size > 10_000
    result = runner.invoke(app, ["clusters", "name", str(powell), "Colin Powell", "--gallery", g])
    assert result.exit_code == 0 and "named 'Colin Powell'" in result.stdout
    result = runner.invoke(app, ["search", str(lfw_photo("Colin_Powell", 30)), "--gallery", g, "--json"])
    answer = json.loads(result.stdout)
    answer = answer[0] if isinstance(answer, list) else answer
    faces = answer.get("faces", [answer])
    assert any(f.get("identity") == "Colin Powell" for f in faces), result.stdout

    # a rejected face leaves the cluster
    shown = json.loads(runner.invoke(app, ["clusters", "show", str(powell), "--gallery", g, "--json"]).stdout)
    out_face = shown["faces"][-1]["face_id"]
    result = runner.invoke(app, ["clusters", "reject", str(powell), str(out_face), "--gallery", g])
    assert result.exit_code == 0, result.output
    shown = json.loads(runner.invoke(app, ["clusters", "show", str(powell), "--gallery", g, "--json"]).stdout)
    assert out_face not in {f["face_id"] for f in shown["faces"]}
    # bad input is a message, not a traceback
    result = runner.invoke(app, ["clusters", "show", "999999", "--gallery", g])
    assert result.exit_code == 2 and "No cluster 999999" in result.output
    result = runner.invoke(app, ["clusters", "show", str(powell), "--gallery", g, "--sheet", str(tmp_path / "x.gif")])
    assert result.exit_code == 2 and ".jpg" in result.output


def test_large_galleries_use_an_ivf_graph_with_exact_similarities(monkeypatch: pytest.MonkeyPatch) -> None:
    import search.cluster.graph as graph_module

    x, who = people(400, 10, seed=8, noise=0.4)
    exact = knn_graph(x, 10)
    monkeypatch.setattr(graph_module, "EXACT_MAX_FACES", 100)
    approx = knn_graph(x, 10)
    # the similarities on its edges are exact (re-ranked), and nearly every close neighbour is found
    rows = np.repeat(np.arange(x.shape[0]), 10)
    found = approx.neighbours.ravel() >= 0
    sims = np.einsum("ij,ij->i", x[rows[found]], x[approx.neighbours.ravel()[found]])
    assert np.allclose(sims, approx.similarities.ravel()[found], atol=1e-5)
    same_person = exact.similarities > 0.5
    hit = [len(set(approx.neighbours[i]) & set(exact.neighbours[i, same_person[i]])) for i in range(len(x))]
    assert sum(hit) >= 0.98 * same_person.sum()
    # and clustering on it gives (nearly) the partition of the exact graph
    agreement = score_clustering(average_link(x, approx, 0.5), average_link(x, exact, 0.5))
    assert agreement.pairwise_f > 0.99 and agreement.bcubed_f > 0.99


def test_a_gallery_with_no_live_faces_clusters_to_nothing(tmp_path: Path) -> None:
    root = tmp_path / "g"
    ids = synthetic_gallery(root, people(1, 3, seed=0)[0])
    with Gallery.open(root) as g:
        g.mark_deleted([int(i) for i in ids])
    report = cluster_gallery(root, **SETTING)
    assert (report.faces, report.clusters, report.singletons) == (0, 0, 0)
    assert list_clusters(root) == []


def test_a_crash_inside_a_rebuild_never_undoes_a_rejection(tmp_path: Path, monkeypatch) -> None:
    """The clustering and its rejections are one transaction: a crash while the rejections are written
    leaves the clustering as it was, and the rejected face never rejoins its cluster (it did: the
    new clusters were committed first, the rejections that named the old ids after)."""
    from gallery.store.clusters import GalleryClusters

    root = tmp_path / "g"
    x, who = people(4, 6, seed=2)
    ids = synthetic_gallery(root, x)
    cluster_gallery(root, **SETTING)
    got = assignment(root)
    face = int(ids[0])
    cluster = got[face]
    assert reject_faces(root, cluster, [face]).rejected == 1
    before = assignment(root)

    def crash(*args: object) -> None:
        raise KeyboardInterrupt("killed while writing the rejections")

    monkeypatch.setattr(GalleryClusters, "_write_rejections", staticmethod(crash))
    with pytest.raises(KeyboardInterrupt):
        cluster_gallery(root, rebuild=True, **SETTING)
    monkeypatch.undo()
    assert assignment(root) == before  # nothing of the crashed rebuild was committed
    cluster_gallery(root, rebuild=True, **SETTING)
    got = assignment(root)
    assert got[face] != got[int(ids[1])]  # still out of its person's cluster
