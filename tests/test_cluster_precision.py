"""Clusters a person can name without checking every face: the consistency check keeps look-alike
groups apart, the crowd check keeps a crowd of look-alike people from becoming one cluster, review
shows the faces far from the rest first, naming reports (and with --strict skips) them, and a caller
can leave faces out of a clustering. No data needed: made-up embeddings."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.errors import GalleryError
from gallery.store import Gallery, append_embedded_faces
from search.cluster import cluster_gallery, contact_sheet, list_clusters, name_cluster, show_cluster
from search.cluster.graph import KnnGraph, knn_graph
from search.cluster.methods import _agglomerate, average_link, cohesion, crowd_levels
from search.cluster.outliers import outlyingness, similarity_to_rest
from search.cluster.run import cluster_labels
from search.cluster.settings import MODEL_DEFAULTS, ClusterSettings, changed_settings, resolve_settings
from tests.helpers.galleries import stamp

runner = CliRunner()
DEFAULT = MODEL_DEFAULTS["dlib-resnet"]
PREVIOUS = ClusterSettings(threshold=0.94, floor=0.925)  # the size-aware rule alone, as it was


def with_similarities(sizes: list[int], sims: list[list[float]], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors in groups of `sizes` whose cosines are sims[i][j] between members of groups i and j
    (sims[i][i]: inside group i), from the eigenvectors of that Gram matrix, with a little noise."""
    group = np.repeat(np.arange(len(sizes)), sizes)
    gram = np.asarray(sims, np.float64)[group][:, group]
    np.fill_diagonal(gram, 1.0)
    values, vectors = np.linalg.eigh(gram)
    assert values.min() > 0, "the similarities asked for are no Gram matrix"
    x = vectors * np.sqrt(values)
    x += 0.002 * np.random.default_rng(seed).standard_normal(x.shape)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), group


def groups_of(labels: np.ndarray, group: np.ndarray) -> list[set[int]]:
    return [set(labels[group == g].tolist()) for g in range(int(group.max()) + 1)]


# --- the merge rule ------------------------------------------------------------------------------

def test_two_tight_groups_joined_by_a_loose_bridge_stay_apart() -> None:
    # two people photographed alike (0.97 inside) whom the embedding separates poorly (0.935 across,
    # above the floor), and four loose faces between them (0.95 to either)
    x, group = with_similarities([20, 20, 4], [[0.97, 0.935, 0.95], [0.935, 0.97, 0.95], [0.95, 0.95, 0.935]])
    graph = knn_graph(x, 30)
    before = cluster_labels(x, graph, PREVIOUS)
    assert np.unique(before).size == 1  # the size-aware floor alone merges the two people
    after = cluster_labels(x, graph, DEFAULT)
    a, b, bridge = groups_of(after, group)
    assert len(a) == 1 and len(b) == 1 and a != b  # each person whole, the two apart
    # each bridge face joined one side or stayed alone (as close to both people as they are to each
    # other, the crowd check leaves them out): none put the two people into one cluster
    assert all(lab in a | b or (after == lab).sum() == 1 for lab in bridge)


def test_a_large_cluster_does_not_absorb_a_smaller_one_whose_faces_are_far_from_it() -> None:
    # 40 faces of one person (0.965 inside), 6 of another (0.975 inside), 0.947 across: a mean above the
    # floor, but well below how similar the large cluster's own faces are
    x, group = with_similarities([40, 6], [[0.965, 0.947], [0.947, 0.975]])
    graph = knn_graph(x, 30)
    assert np.unique(cluster_labels(x, graph, PREVIOUS)).size == 1
    assert np.unique(cluster_labels(x, graph, replace(DEFAULT, cohesion_gap=None, join_gap=None))).size == 1
    large, small = groups_of(cluster_labels(x, graph, DEFAULT), group)
    assert len(large) == 1 and len(small) == 1 and large != small


def test_the_check_still_merges_one_person_seen_in_two_settings() -> None:
    # a person's large cluster (0.955 inside) and a tight group of their photos from one day (0.975):
    # the link (0.95) is nearly as high as the large cluster's own faces are to each other
    x, group = with_similarities([30, 5], [[0.955, 0.95], [0.95, 0.975]])
    labels = cluster_labels(x, knn_graph(x, 30), DEFAULT)
    assert np.unique(labels).size == 1


def test_cohesion_is_the_mean_inner_cosine() -> None:
    x, _ = with_similarities([5, 1], [[0.9, 0.5], [0.5, 1.0]])
    labels = np.array([0, 0, 0, 0, 0, 1])
    sums = np.stack([x[labels == c].sum(axis=0) for c in (0, 1)])
    inner = x[:5] @ x[:5].T
    got = cohesion(sums, np.array([5, 1]))
    assert got[0] == pytest.approx((inner.sum() - 5) / 20, abs=1e-6)
    assert np.isnan(got[1])  # one face has no inner pairs
    assert np.isnan(cohesion(sums, np.array([5, 1]), min_size=6)[0])


def test_plain_average_linkage_is_unchanged_by_a_check_that_never_binds() -> None:
    x, group = with_similarities([8, 8, 8], [[0.9, 0.5, 0.5], [0.5, 0.9, 0.5], [0.5, 0.5, 0.9]])
    graph = knn_graph(x, 23)
    from search.cluster.methods import Consistency

    plain = average_link(x, graph, 0.8)
    loose = average_link(x, graph, 0.8, check=Consistency(gap=1.0, join_gap=1.0))
    assert np.array_equal(plain, loose) and np.unique(plain).size == 3


# --- the crowd check -----------------------------------------------------------------------------

def crowd(inside: float = 0.96, across: float = 0.945) -> tuple[np.ndarray, np.ndarray]:
    """A person with five tight photos (0.97), 0.94 from a crowd of twelve look-alike people (pairs and
    single faces: `inside` within a person, `across` between them), as dlib-resnet places some groups."""
    sizes = [5] + [2] * 6 + [1] * 6
    sims = np.full((len(sizes), len(sizes)), across)
    np.fill_diagonal(sims, inside)
    sims[0, :] = sims[:, 0] = 0.94
    sims[0, 0] = 0.97
    return with_similarities(sizes, sims.tolist())


def test_a_crowd_of_look_alike_people_does_not_become_one_cluster() -> None:
    x, group = crowd()
    graph = knn_graph(x, 30)
    without = cluster_labels(x, graph, replace(DEFAULT, crowd_k=None))
    blob = np.bincount(without).argmax()
    assert np.unique(group[without == blob]).size == 12  # size and consistency alone: one cluster of 12 people
    labels = cluster_labels(x, graph, DEFAULT)
    for lab in np.unique(labels):
        assert np.unique(group[labels == lab]).size == 1  # every cluster is one person
    person = groups_of(labels, group)[0]
    assert len(person) == 1 and (labels == next(iter(person))).sum() == 5  # the person whole, alone
    assert sum(len(g) == 1 and (labels == next(iter(g))).sum() == 2 for g in groups_of(labels, group)[1:7]) >= 5


def test_the_crowd_check_keeps_a_person_with_many_photos_whole() -> None:
    # 200 photos of one person (0.95 to each other) and two other people at 0.9: measured from the
    # start, each photo's crowd would be the person's own other photos (0.95) and nothing would merge;
    # measured outside the first pass's cluster it is the other people's (0.9)
    x, group = with_similarities([200, 8, 8], [[0.95, 0.9, 0.9], [0.9, 0.97, 0.9], [0.9, 0.9, 0.97]])
    graph = knn_graph(x, 30)
    labels = cluster_labels(x, graph, DEFAULT)
    assert [len(g) for g in groups_of(labels, group)] == [1, 1, 1] and np.unique(labels).size == 3
    from_the_start = crowd_levels(graph, np.arange(x.shape[0]), DEFAULT.crowd_k)
    assert from_the_start[group == 0].mean() == pytest.approx(0.95, abs=0.005)
    naive = _agglomerate(x, graph, np.arange(x.shape[0]), None, DEFAULT.threshold, DEFAULT.floor,
                         DEFAULT.consistency(), DEFAULT.crowd(), from_the_start)
    assert np.unique(naive[group == 0]).size == 200  # what measuring from the start would do


def test_crowd_level_is_the_kth_neighbour_outside_the_cluster() -> None:
    neighbours = np.array([[1, 2, 3, 4], [0, 2, 3, -1], [0, 1, -1, -1]], np.int32)
    similarities = np.array([[0.99, 0.98, 0.9, 0.8], [0.99, 0.97, 0.85, -np.inf], [0.98, 0.97, -np.inf, -np.inf]],
                            np.float32)
    graph = KnnGraph(np.vstack([neighbours, np.full((2, 4), -1, np.int32)]),
                     np.vstack([similarities, np.full((2, 4), -np.inf, np.float32)]))
    labels = np.array([0, 0, 0, 1, 2])
    levels = crowd_levels(graph, labels, 2)
    assert levels[0] == pytest.approx(0.8)  # 1 and 2 are its own cluster: 3 (0.9) then 4 (0.8)
    assert levels[1] == pytest.approx(0.85)  # one face outside listed: the lowest one
    assert np.isnan(levels[2]) and np.isnan(levels[3]) and np.isnan(levels[4])  # none outside, or no row
    assert crowd_levels(graph, np.arange(5), 1)[0] == pytest.approx(0.99)  # alone: every neighbour counts


def test_crowd_settings_resolve_and_turn_off() -> None:
    assert resolve_settings("dlib-resnet", None).crowd() == DEFAULT.crowd()
    assert resolve_settings("dlib-resnet", None, crowd_k=0).crowd() is None
    previous = replace(DEFAULT, crowd_k=None, crowd_margin=None, crowd_margin_large=None).as_dict()
    del previous["crowd_k"], previous["crowd_margin"], previous["crowd_margin_large"]
    assert resolve_settings("dlib-resnet", previous).crowd() is None  # clustered before the check: added alike
    asked = resolve_settings("dlib-resnet", previous, crowd_k=3)
    assert changed_settings(previous, asked) == ["crowd_k"]  # asking for it on such a gallery needs --rebuild
    assert changed_settings(previous, resolve_settings("dlib-resnet", previous)) == []
    assert DEFAULT.stricter().crowd() is None  # split and the doubtful marks look at one cluster alone
    with pytest.raises(GalleryError, match="crowd"):
        resolve_settings("dlib-resnet", None, crowd_k=31)
    with pytest.raises(GalleryError, match="Crowd margins"):
        resolve_settings("dlib-resnet", None, crowd_margin=2.0)


def test_the_crowd_check_in_a_gallery_and_its_incremental_runs(tmp_path: Path) -> None:
    x, group = crowd()
    results = {}
    for crowd_k in (3, 0):  # with the check, and turned off
        root = tmp_path / f"crowd-{crowd_k}"
        with Gallery.open_or_create(root) as g:
            append_embedded_faces(g, stamp(x.shape[1]), x[group < 11])  # two crowd faces come later
        settings = {**{k: getattr(DEFAULT, k) for k in ("threshold", "floor", "cohesion_gap", "join_gap")},
                    "crowd_k": crowd_k, "crowd_margin": 0.0125, "crowd_margin_large": -0.0075}
        first = cluster_gallery(root, **settings)
        assert first.crowd_k == crowd_k
        with Gallery.open(root) as g:
            assert g.clustering_settings()["crowd_k"] == crowd_k
            append_embedded_faces(g, stamp(x.shape[1]), x[group >= 11])
        later = cluster_gallery(root)  # added with the stored setting
        assert later.crowd_k == crowd_k and later.new_faces == 2
        results[crowd_k] = (first.clusters, later.joined, sorted(c.size for c in list_clusters(root)))
    with pytest.raises(GalleryError, match="--rebuild"):
        cluster_gallery(tmp_path / "crowd-3", crowd_k=0)
    assert results[3] == (7, 0, [2, 2, 2, 2, 2, 2, 5])  # the person and six pairs; the late faces stay alone
    assert results[0] == (2, 2, [5, 18])  # without it the crowd is one cluster, and the late faces join it


# --- outliers first, naming protects itself (a gallery of made-up faces) -------------------------

DIM = 32
SETTING = {"threshold": 0.5, "floor": 0.45}  # a test model has no measured default


MEAN = 0.49  # the stranger's mean cosine to the person's eight faces


def gallery_with_an_intruder(root: Path) -> tuple[np.ndarray, int]:
    """Eight faces of one person (cosine ~0.8) and one stranger whose mean cosine to them (MEAN) is
    enough to join them at SETTING (a group of two needs 0.45 + 0.05 / sqrt 2 = 0.485) and not one step
    stricter (0.46 + 0.05 / sqrt 2 = 0.495). Returns the face ids and the stranger's id."""
    rng = np.random.default_rng(7)
    centre = np.zeros(DIM, np.float32)
    centre[0] = 1.0
    person = centre + 0.5 * rng.standard_normal((8, DIM)).astype(np.float32) / np.sqrt(DIM)
    person[:, -1] = 0.0  # the last axis is the stranger's own
    person /= np.linalg.norm(person, axis=1, keepdims=True)
    total = person.sum(axis=0)
    a = MEAN * 8 / np.linalg.norm(total)
    stranger = a * total / np.linalg.norm(total)
    stranger[-1] = np.sqrt(1 - a * a)
    x = np.concatenate([person, stranger[None]]).astype(np.float32)
    with Gallery.open_or_create(root) as g:
        ids = append_embedded_faces(g, stamp(DIM), x)
    return ids, int(ids[-1])


def test_outliers_are_listed_first_and_marked(tmp_path: Path) -> None:
    root = tmp_path / "g"
    ids, stranger = gallery_with_an_intruder(root)
    report = cluster_gallery(root, **SETTING)
    assert report.clusters == 1 and report.clustered_faces == 9  # the stranger got in
    [cluster] = [c.cluster for c in list_clusters(root)]
    detail = show_cluster(root, cluster)
    first = detail.faces[0]
    assert first["face_id"] == stranger and first["doubtful"] and first["similarity"] == pytest.approx(MEAN, abs=2e-3)
    assert detail.doubtful == 1 and not any(f["doubtful"] for f in detail.faces[1:])
    rest = [f["similarity"] for f in detail.faces[1:]]
    assert rest == sorted(rest) and min(rest) > 0.7  # then lowest similarity to the rest first
    sheet = contact_sheet(root, cluster, tmp_path / "sheet.png")
    from PIL import Image

    with Image.open(sheet) as image:  # the first tile, the doubtful face, is framed in red
        r, g_, b = image.convert("RGB").getpixel((1, 1))
    assert r > 200 and g_ < 100 and b < 100


def test_outlyingness_of_raw_vectors() -> None:
    x, group = with_similarities([6, 1], [[0.95, 0.80], [0.80, 1.0]])
    sim = similarity_to_rest(x)
    assert sim[-1] == pytest.approx(0.80, abs=0.01) and (sim[:6] > 0.9).all()
    found = outlyingness(x, ClusterSettings(threshold=0.9, floor=0.9))
    assert found.doubtful.tolist() == [False] * 6 + [True]
    assert found.order()[0] == 6
    alone = outlyingness(x[:1], ClusterSettings(threshold=0.9, floor=0.9))
    assert alone.similarity.tolist() == [1.0] and not alone.doubtful.any()


def test_naming_reports_far_faces_and_strict_leaves_them_unnamed(tmp_path: Path) -> None:
    root = tmp_path / "g"
    _, stranger = gallery_with_an_intruder(root)
    cluster_gallery(root, **SETTING)
    [cluster] = [c.cluster for c in list_clusters(root)]
    result = name_cluster(root, cluster, "Ann")
    assert result.faces_labeled == 9 and [f["face_id"] for f in result.far_faces] == [stranger]
    assert result.left_unnamed == 0
    with Gallery.open(root) as g:
        assert g.face_records([stranger])[stranger].identity == "Ann"  # reported, but named (not strict)
        g.relabel_faces([stranger], None)

    strict = name_cluster(root, cluster, "Bea", strict=True)
    assert (strict.faces_labeled, strict.left_unnamed) == (8, 1)
    assert [f["face_id"] for f in strict.far_faces] == [stranger]
    with Gallery.open(root) as g:
        assert g.face_records([stranger])[stranger].identity is None
        assert dict(g.identities()) == {"Bea": 8}


def test_clusters_name_strict_on_the_command_line(tmp_path: Path) -> None:
    from gallery.cli import app

    root = tmp_path / "g"
    _, stranger = gallery_with_an_intruder(root)
    cluster_gallery(root, **SETTING)
    [cluster] = [c.cluster for c in list_clusters(root)]
    shown = runner.invoke(app, ["clusters", "show", str(cluster), "--gallery", str(root)])
    assert shown.exit_code == 0, shown.output
    assert "1 doubtful (?) first" in shown.stdout
    lines = [line for line in shown.stdout.splitlines() if line.startswith("│")]
    assert str(stranger) in lines[0] and "?" in lines[0]
    named = runner.invoke(app, ["clusters", "name", str(cluster), "Cy", "--strict", "--gallery", str(root)])
    assert named.exit_code == 0, named.output
    assert "8 faces named 'Cy'" in named.stdout and f"(left unnamed): {stranger}" in named.stdout
    assert f"gallery clusters reject {cluster}" in named.output
    as_json = runner.invoke(app, ["clusters", "name", str(cluster), "Cy", "--strict", "--json", "--gallery", str(root)])
    data = json.loads(as_json.stdout)
    assert data["left_unnamed"] == 1 and data["far_faces"][0]["face_id"] == stranger
    with Gallery.open(root) as g:
        assert g.face_records([stranger])[stranger].identity is None


# --- leaving faces out -----------------------------------------------------------------------------

def test_a_caller_can_leave_faces_out(tmp_path: Path) -> None:
    root = tmp_path / "g"
    ids, stranger = gallery_with_an_intruder(root)
    report = cluster_gallery(root, exclude={stranger}, **SETTING)
    assert (report.faces, report.excluded, report.clustered_faces) == (8, 1, 8)
    with Gallery.open(root) as g:
        state = g.clustering_faces()
    assert state.cluster_ids[state.face_ids == stranger][0] < 0
    # a predicate over the sorted live face ids, as a quality gate would give
    report = cluster_gallery(root, rebuild=True, exclude=lambda g, faces: faces >= ids[6], **SETTING)
    assert (report.faces, report.excluded) == (6, 3)
    # the faces left out come in on a later run without the filter, as new faces
    later = cluster_gallery(root)
    assert later.incremental and later.new_faces == 3
    with pytest.raises(GalleryError, match="one boolean per face"):
        cluster_gallery(root, rebuild=True, exclude=lambda g, faces: [True], **SETTING)
