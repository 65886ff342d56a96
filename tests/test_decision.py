"""The decision statistic (combined score of best face and template, minus a weight x the runner-up's),
its joint calibration with the threshold, and how a decision is printed: pure logic, no data needed;
then calibration on a synthetic gallery through the real search path."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gallery.cli import app
from gallery.faces.models import get_model_spec, registered
from gallery.store import Gallery, append_embedded_faces
from indexer import build_index
from search import Searcher
from search.calibrate import calibrate, choose_rule
from search.decision import (
    BEST_FACE,
    DecisionRule,
    candidate_statistics,
    decimals_apart,
    rank_candidates,
    verdict_text,
)
from search.evaluation import LeaveOneOut, fnir_at_fpir, rule_scores
from search.identify import Neighbour, decide
from search.threshold import resolve_decision, resolve_one_to_one
from tests.helpers.galleries import stamp

DIM = 16
runner = CliRunner()


def test_combined_score_ranks_and_the_runner_up_margin_decides() -> None:
    rule = DecisionRule(template_share=0.5, weight=0.5, runner_up_prior=0.8)
    best = np.array([0.95, 0.96, 0.80])
    template = np.array([0.94, 0.86, np.nan])  # the third identity has no template: its best face stands in
    r = rank_candidates(best, template, rule)
    assert r.order.tolist() == [0, 1, 2]  # 0.945 beats 0.91 although its best face is lower
    assert r.combined[2] == pytest.approx(0.80)
    assert r.statistic == pytest.approx(0.945 - 0.5 * 0.91)
    assert r.runner_up == 1
    stats = candidate_statistics(r, rule)
    assert stats[0] == pytest.approx(r.statistic) and stats[1] == pytest.approx(0.91 - 0.5 * 0.945)
    alone = rank_candidates(np.array([0.95]), np.array([0.9]), rule)
    assert alone.runner_up is None and alone.statistic == pytest.approx(0.925 - 0.5 * 0.8)  # the prior stands in
    empty = rank_candidates(np.array([]), np.array([]), rule)
    assert empty.top is None and empty.statistic is None


def test_best_face_rule_is_the_rule_before() -> None:
    r = rank_candidates(np.array([0.91, 0.93]), np.array([0.99, 0.5]), BEST_FACE)
    assert r.order.tolist() == [1, 0] and r.statistic == pytest.approx(0.93)
    assert BEST_FACE.describe() == "best face"
    assert "runner-up" in DecisionRule(0.5, 0.5).describe()


def n(face_id: int, score: float, identity: str | None, identity_id: int | None = None) -> Neighbour:
    return Neighbour(face_id, score, identity, f"{face_id}.jpg", [0, 0, 1, 1], face_id, identity_id)


def test_decide_names_on_the_statistic_and_reports_the_runner_up() -> None:
    rule = DecisionRule(0.5, 0.5, 0.8)
    neighbours = [n(1, 0.96, "ann"), n(2, 0.95, "bob"), n(3, 0.90, "ann")]
    # ann's template is far from the query, bob's close: bob is ranked first although ann has the best face
    answer = decide("q.jpg", None, neighbours, k=2, threshold=0.4, rule=rule,
                    template_scores={"ann": 0.80, "bob": 0.95})
    assert [c.identity for c in answer.candidates] == ["bob", "ann"]
    assert answer.identity == "bob" and answer.score == pytest.approx(0.95)  # the best face's cosine is shown
    assert answer.statistic == pytest.approx(0.95 - 0.5 * 0.88)
    assert answer.runner_up == {"identity": "ann", "combined": pytest.approx(0.88), "found_by": "faces"}
    assert answer.margin == pytest.approx(answer.statistic - 0.4)
    assert [c.above_threshold for c in answer.candidates] == [True, False]  # only the top can be named
    unknown = decide("q.jpg", None, neighbours, k=2, threshold=0.52, rule=rule,
                     template_scores={"ann": 0.80, "bob": 0.95})
    assert unknown.unknown and unknown.identity is None and unknown.margin < 0


def test_a_look_alike_found_by_its_template_alone_raises_the_runner_up() -> None:
    rule = DecisionRule(0.5, 0.5, 0.8)
    neighbours = [n(1, 0.96, "ann"), n(2, 0.80, "bob")]
    alone = decide("q.jpg", None, neighbours, k=2, threshold=0.54, rule=rule, template_scores={"ann": 0.96})
    assert alone.identity == "ann" and alone.runner_up["identity"] == "bob"
    # cy has no face among the neighbours but a template as close as ann's: ann must not be named
    crowd = decide("q.jpg", None, neighbours, k=2, threshold=0.54, rule=rule, template_scores={"ann": 0.96},
                   look_alike=("cy", 0.96))
    assert crowd.runner_up == {"identity": "cy", "found_by": "template",
                               "combined": pytest.approx(0.5 * 0.80 + 0.5 * 0.96)}  # its best face <= the last
    assert crowd.identity is None and crowd.statistic < alone.statistic
    assert [c.identity for c in crowd.candidates] == ["ann", "bob"]  # a look-alike is never a candidate
    weak = decide("q.jpg", None, neighbours, k=2, threshold=0.54, rule=rule, template_scores={"ann": 0.96},
                  look_alike=("cy", 0.5))
    assert weak.runner_up["identity"] == "bob" and weak.statistic == pytest.approx(alone.statistic)


def test_a_value_below_the_threshold_never_prints_equal() -> None:
    assert decimals_apart(0.9537, 0.9538) == 4
    assert decimals_apart(0.95371, 0.95372) == 5
    text = verdict_text(0.95374, 0.95375)
    stat, thr = text.split("statistic ")[1].split(" <")[0], text.split("threshold ")[1].split(" ")[0]
    assert stat != thr and "below" in text
    assert ">=" in verdict_text(0.6, 0.5)
    tiny = verdict_text(0.5 - 1e-9, 0.5)  # closer than any printed decimal: the gap is printed
    assert "below" in tiny and "e-09" in tiny


def loo_from(rows: list[tuple[bool, list[bool], list[float], list[float]]]) -> LeaveOneOut:
    return LeaveOneOut(3, np.array([r[0] for r in rows]), [np.array(r[1]) for r in rows],
                       [np.array(r[2], float) for r in rows], [np.array(r[3], float) for r in rows])


def test_rule_scores_hold_the_probes_identity_out_for_the_non_mated_search() -> None:
    loo = loo_from([
        (True, [True, False, False], [0.95, 0.90, 0.85], [0.95, 0.88, 0.80]),  # right, clear margin
        (True, [False, True, False], [0.95, 0.94, 0.80], [0.90, 0.93, 0.80]),  # own is first on combined
        (False, [True, False, False], [0.99, 0.91, 0.90], [0.99, 0.91, 0.90]),  # no mate: non-mated only
    ])
    rule = DecisionRule(0.5, 0.5, 0.0)
    s = rule_scores(loo, rule)
    assert s.mated == 2 and s.rank(1) == 1.0
    assert s.impostor[0] == pytest.approx(0.89 - 0.5 * 0.825)  # the others only: 0.89 top, 0.825 runner-up
    assert s.impostor[2] == pytest.approx(0.91 - 0.5 * 0.90)
    assert s.top_if_correct[1] == pytest.approx(0.935 - 0.5 * 0.925)
    assert math.isnan(s.runner_up_combined[0]) is False


def synthetic_loo(seed: int, n: int = 3000) -> LeaveOneOut:
    """Probes where the runner-up tells true matches from look-alikes: strangers resemble many people at
    once (a high runner-up), a true match stands out."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        crowd = rng.uniform(0.80, 0.90)
        others = np.sort(rng.normal(crowd, 0.02, 4))[::-1]
        own = crowd + abs(rng.normal(0.07, 0.04))
        best = np.r_[own, others]
        rows.append((i % 3 != 0, [True, False, False, False, False], best.tolist(), (best - 0.005).tolist()))
    return loo_from(rows)


def test_weight_and_threshold_are_chosen_together() -> None:
    loo = synthetic_loo(0)
    rule, threshold, tried = choose_rule(loo, DecisionRule(0.5, 0.0, 0.85), 0.01)  # a default without margin
    assert set(tried) == {f"{w:g}" for w in np.round(np.arange(0, 1.01, 0.1), 2)}
    assert tried[f"{rule.weight:g}"] == min(tried.values())
    assert rule.weight > 0 and tried[f"{rule.weight:g}"] < tried["0"]  # the margin clearly helps here
    # the threshold is the one that keeps FPIR at the target for that weight
    assert fnir_at_fpir(rule_scores(loo, rule), 0.01)[0] == pytest.approx(threshold)
    # held out: a fresh draw of the same kind keeps FPIR near the target with the chosen pair
    fresh = rule_scores(synthetic_loo(1), rule)
    assert (fresh.impostor >= threshold).mean() <= 0.02


def test_a_weight_no_better_than_the_default_within_noise_leaves_it() -> None:
    rng = np.random.default_rng(5)
    rows = []
    for i in range(2000):  # the runner-up carries no information: every weight is as good as another
        best = np.sort(rng.normal(0.85, 0.03, 5))[::-1]
        own = [False] * 5
        if i % 2:
            best[0] += abs(rng.normal(0.05, 0.03))
            own[0] = True
        rows.append((bool(i % 2), own, best.tolist(), best.tolist()))
    rule, _, tried = choose_rule(loo_from(rows), DecisionRule(0.5, 0.5, 0.85), 0.01)
    assert rule.weight == 0.5 and len(tried) == 11


@pytest.fixture
def synthetic_gallery(tmp_path: Path):
    """30 identities x 6 faces around their centres, plus 20 strangers' faces never enrolled."""
    spec = replace(get_model_spec("dlib-resnet"), name=stamp(DIM)["name"], dim=DIM, input_size=0,
                   preprocessing="test")
    rng = np.random.default_rng(3)
    centres = rng.standard_normal((50, DIM)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)

    def faces(ids: range, per: int) -> tuple[np.ndarray, list[str]]:
        x = np.repeat(centres[list(ids)], per, axis=0) + 0.25 * rng.standard_normal((len(ids) * per, DIM))
        return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), [f"p{i}" for i in ids for _ in
                                                                                    range(per)]

    x, names = faces(range(30), 6)
    strangers, _ = faces(range(30, 50), 1)
    with registered(spec):
        with Gallery.open_or_create(tmp_path / "g") as g:
            append_embedded_faces(g, stamp(DIM), x, identities=names)
            build_index(g)
        yield tmp_path / "g", strangers


def test_calibration_on_a_synthetic_gallery_stores_rule_threshold_and_one_to_one(synthetic_gallery) -> None:
    root, strangers = synthetic_gallery
    with Searcher(root) as s:
        report = calibrate(s, target_fpir=0.01, max_probes=500)
    assert report.nonmated_searches == 180 and report.mated_searches == 180
    # 180 non-mated searches cannot resolve 1%: the default weight is kept, the threshold floored
    assert report.rule["weight"] == 0.5 and report.weights_tried == {}
    assert report.fnir_at == {"0.1%": None, "1%": None}
    one = report.one_to_one
    assert one is not None and one["genuine_pairs"] == 30 * 15 and one["fmr"] <= 0.001
    with Gallery.open(root) as g:
        decision = resolve_decision(g)
        assert decision.source.startswith("calibrated") and decision.rule.weight == 0.5
        assert decision.threshold == pytest.approx(report.threshold)
        value, source = resolve_one_to_one(g)
        assert value == pytest.approx(one["value"]) and source.startswith("calibrated 1:1")
    with Searcher(root) as s:
        named = [a.identity for a in s.search_embeddings(strangers)]
        faces = s.search_embeddings(strangers[:1], faces_mode=True)[0]
    assert named.count(None) >= 19  # strangers stay unnamed
    assert faces.question == "1:1" and faces.threshold == pytest.approx(one["value"])
    info = json.loads(runner.invoke(app, ["info", "--gallery", str(root), "--json"]).stdout)
    assert info["one_to_one_threshold"] == pytest.approx(one["value"]) and info["identification"]["weight"] == 0.5


def test_an_old_calibration_is_not_applied_to_the_new_statistic(synthetic_gallery) -> None:
    root, _ = synthetic_gallery
    with Gallery.open(root) as g:
        g.set_threshold(0.95, "gallery calibrate (a best-face threshold of an earlier version)", {"labeled_faces": 180})
        decision = resolve_decision(g)
        assert not decision.source.startswith("calibrated")  # the conservative default of the new rule instead
        from search.threshold import calibration_status, needs_calibration

        status = calibration_status(g)
        assert status.outdated and needs_calibration(status)
