"""Open-set identification ("who is this?"): decision rules on held-out people, and the uncalibrated defaults.

From a labeled gallery ingested by the product (e.g. LFW A–J with dlib-resnet; one ingest serves every
split):

`heldout` — the leave-identities-out protocol, `--splits` seeded splits. In each split, a random
`--enrolled-share` of the identities with 2+ labeled faces are enrolled, each with one of its labeled
faces held out as a mated probe (any quality: a probe below the quality gate counts as a miss for a gated
rule); every other identity is a stranger (never enrolled: all its faces are deleted from the split's
gallery), and up to `--stranger-cap` of its labeled faces are searched. The split's gallery is
the ingested one copied and edited with the product's own operations (`Gallery.delete_faces` of the
probes and of every stranger's face: templates follow in the same transactions). Each decision rule is
then calibrated by `search.calibrate.calibrate` on that gallery (leave-one-out, target FPIR 1%), and the
probes and strangers are answered by `Searcher.search_stored` (their stored embeddings and quality
verdicts: the same vectors a photo query of the same pipeline gives, through the product's search and
decision). Reported per rule: FNIR at FPIR 1% and 0.1% on the held-out people (the threshold that lets
that share of strangers be named), rank-1, and at the calibrated threshold the FPIR measured on the
strangers and the FNIR. `--compare GALLERY2` runs the same splits (same people, same photos) on a
second ingest of the same photos (e.g. one built with flip averaging).

`defaults` — the conservative thresholds of uncalibrated galleries (search.threshold.CONSERVATIVE): for
K = 1 … 1000 enrolled identities, `--draws` random K-identity galleries derived from the ingested one
(every face of the others as a stranger), each searched with the model's default rule through the
product's `Searcher` with the gallery's templates; t(K) is the 99th percentile of the strangers' statistic
pooled over the draws, and the FPIR of the table's (interpolated) value is measured on fresh draws.

    python benchmarks/open_set.py heldout /tmp/lfw --splits 5 --work /tmp/os --output results/open_set.json
    python benchmarks/open_set.py defaults /tmp/lfw --work /tmp/os-def --output results/open_set_defaults.json
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.store import Gallery  # noqa: E402
from indexer import build_index  # noqa: E402
from search.calibrate import calibrate  # noqa: E402
from search.decision import BEST_FACE, DecisionRule, rank_candidates  # noqa: E402
from search.evaluation import LeaveOneOut, leave_one_out, probe_evidence, threshold_at_fpir  # noqa: E402
from search.searcher import Searcher  # noqa: E402
from search.threshold import CONSERVATIVE, TARGET_FPIR, conservative_threshold, default_rule  # noqa: E402

REPORTED_FPIR = (0.01, 0.001)
SIZES = (1, 3, 10, 30, 100, 300, 1000)


@dataclass(frozen=True)
class Variant:
    """A decision rule to compare: fixed, or with its weight calibrated (weight None), gated or not."""

    name: str
    rule: DecisionRule | None  # None: the product's calibration chooses the weight (and the threshold)
    gate: bool = True
    cohort: int = 0  # > 0: cohort z-normalisation of the top combined score over the next `cohort`
    low_quality_evidence: bool = True  # False: gallery faces below the quality gate are left out of the evidence
    aggregation: str = "max"  # an identity's face score: its best face, or the mean of its best M (mean:M)


def variants(base: DecisionRule) -> list[Variant]:
    prior = base.runner_up_prior
    return [
        Variant("best face (today's rule, no quality gate)", BEST_FACE, gate=False),
        Variant("best face, quality gate", BEST_FACE),
        Variant("template", DecisionRule(1.0, 0.0, prior)),
        Variant("1/2 (best + template)", DecisionRule(0.5, 0.0, prior)),
        Variant("best - 0.5 x runner-up best", DecisionRule(0.0, 0.5, prior)),
        Variant("1/2 (best + template) - 0.4 x runner-up", DecisionRule(0.5, 0.4, prior)),
        Variant("1/2 (best + template) - 0.5 x runner-up", DecisionRule(0.5, 0.5, prior)),
        Variant("1/2 (best + template) - 0.6 x runner-up", DecisionRule(0.5, 0.6, prior)),
        Variant("1/2 (best + template) - 0.5 x runner-up, no quality gate", DecisionRule(0.5, 0.5, prior), gate=False),
        Variant("1/2 (best + template) - 0.5 x runner-up, gallery faces below the gate left out",
                DecisionRule(0.5, 0.5, prior), low_quality_evidence=False),
        Variant("1/2 (mean of best 2 faces + template) - 0.5 x runner-up", DecisionRule(0.5, 0.5, prior),
                aggregation="mean:2"),
        Variant("0.7 best + 0.3 template - 0.5 x runner-up", DecisionRule(0.3, 0.5, prior)),
        Variant("0.3 best + 0.7 template - 0.5 x runner-up", DecisionRule(0.7, 0.5, prior)),
        Variant("1/2 (best + template), weight calibrated (the product's default)", None),
        Variant("cohort z-norm of 1/2 (best + template), next 10", DecisionRule(0.5, 0.0, prior), cohort=10),
        Variant("cohort z-norm of 1/2 (best + template), next 30", DecisionRule(0.5, 0.0, prior), cohort=30),
    ]


# --- splits ---------------------------------------------------------------------------------------------


@dataclass
class Split:
    seed: int
    enrolled: list[str]
    probe_paths: list[str]  # one held-out photo per enrolled identity
    strangers: list[str]  # identities never enrolled (all their faces are deleted from the split's gallery)
    stranger_paths: dict[str, list[str]] | None = None  # the photos of each searched as a stranger


def make_split(labels: dict[str, list[str]], share: float, seed: int, stranger_cap: int = 5) -> Split:
    """labels: identity -> its labeled photos' paths. Strangers: every identity not enrolled, with at most
    `stranger_cap` of its faces searched (one person with 530 photos must not be a tenth of the strangers)."""
    rng = np.random.default_rng(seed)
    mated = sorted(n for n, paths in labels.items() if len(paths) >= 2)
    enrolled = sorted(rng.choice(mated, size=int(round(share * len(mated))), replace=False).tolist())
    probes = [sorted(labels[n])[int(rng.integers(len(labels[n])))] for n in enrolled]
    chosen = set(enrolled)
    strangers = sorted(n for n in labels if n not in chosen)
    searched = {n: sorted(rng.choice(sorted(labels[n]), size=min(stranger_cap, len(labels[n])), replace=False))
                for n in strangers}
    return Split(seed, enrolled, probes, strangers, searched)


def labeled_photos(gallery: Gallery) -> tuple[dict[str, list[str]], dict[str, int], dict[str, list[int]]]:
    """(identity -> photo paths of its labeled faces, photo path -> its labeled face id, identity -> face ids)."""
    by_name: dict[str, list[str]] = {}
    face_of: dict[str, int] = {}
    ids_of: dict[str, list[int]] = {}
    for d in gallery.face_details(labeled_only=True):
        by_name.setdefault(d.identity, []).append(d.photo)
        face_of[d.photo] = d.face_id
        ids_of.setdefault(d.identity, []).append(d.face_id)
    return by_name, face_of, ids_of


def derive_split_gallery(source: Path, work: Path, split: Split) -> tuple[Path, list[int], list[int]]:
    """Copy the ingested gallery and delete the probes and every stranger's face with the product's own
    edit; returns (gallery, probe face ids, stranger face ids)."""
    target = work / f"split-{split.seed}-{source.name}"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(source, target)
    (target / ".ingest.lock").unlink(missing_ok=True)
    with Gallery.open(target) as g:
        _, face_of, ids_of = labeled_photos(g)
        probes = [face_of[p] for p in split.probe_paths]
        g.delete_faces(probes + sorted(f for n in split.strangers for f in ids_of[n]))
    searched = split.stranger_paths or {n: [] for n in split.strangers}
    strangers = sorted(face_of[p] for n in split.strangers for p in searched[n])
    return target, probes, strangers


# --- measuring ------------------------------------------------------------------------------------------


@dataclass
class HeldOut:
    """The evidence of the held-out searches of one split (gathered once, then judged by every rule)."""

    mated: LeaveOneOut  # the probes (own identity enrolled, own face deleted)
    strangers: LeaveOneOut  # never-enrolled faces (their identity has no face in the gallery)
    mated_poor: np.ndarray  # below the quality gate (a gated rule answers "too poor")
    strangers_poor: np.ndarray


def gather(searcher: Searcher, probes: list[int], truth: list[str], strangers: list[int],
           stranger_names: list[str]) -> HeldOut:
    """Evidence of each held-out face as a query, through the searcher (neighbours, templates, look-alikes):
    what `Searcher.search_stored` decides on."""
    quality = searcher.gallery.face_quality_rows(probes + strangers, live_only=False)
    mated = probe_evidence(searcher, searcher.gallery.read_embeddings(probes), truth, [{f} for f in probes],
                           [None] * len(probes))
    others = probe_evidence(searcher, searcher.gallery.read_embeddings(strangers), stranger_names,
                            [{f} for f in strangers], [None] * len(strangers))
    return HeldOut(mated, others, np.array([quality[f]["quality_issue"] is not None for f in probes]),
                   np.array([quality[f]["quality_issue"] is not None for f in strangers]))


def judged(ev: LeaveOneOut, rule: DecisionRule, cohort: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(top statistic, top is the query's own identity) per query, by search.decision (the searcher's
    rule); cohort > 0: the top combined score z-normalised over the next `cohort` candidates' instead."""
    stats, right = [], []
    for i, (own, best, tmpl) in enumerate(zip(ev.own, ev.best, ev.template)):
        r = rank_candidates(best, tmpl, rule, ev.look_alike(i, rule))
        if r.top is None:
            stats.append(-math.inf)
            right.append(False)
            continue
        right.append(bool(own[r.top]))
        if cohort:
            rest = r.combined[r.order[1 : cohort + 1]]
            stats.append((r.combined[r.top] - rest.mean()) / max(rest.std(), 1e-6) if rest.size >= 2 else -math.inf)
        else:
            stats.append(float(r.statistic))
    return np.asarray(stats, np.float64), np.asarray(right, bool)


def measure_variant(searcher: Searcher, loo: LeaveOneOut, held: HeldOut, variant: Variant, base: DecisionRule
                    ) -> dict:
    t0 = time.perf_counter()
    rule = variant.rule if variant.rule is not None else base
    calibrated = None
    if not variant.cohort:
        report = calibrate(searcher, TARGET_FPIR, apply=False, rule=variant.rule, loo=loo)
        rule = DecisionRule.from_dict(report.rule)
        calibrated = {"threshold": report.threshold, "rule": report.rule, "loo_fnir": round(report.fnir, 4),
                      "loo_fpir": round(report.fpir, 4), "loo_rank1": round(report.rank1, 4)}
    m_stat, m_right = judged(held.mated, rule, variant.cohort)
    s_stat, _ = judged(held.strangers, rule, variant.cohort)
    rank1 = float(m_right.mean())
    if variant.gate:  # a query below the quality gate is answered "too poor to identify": never named
        m_stat = np.where(held.mated_poor, -math.inf, m_stat)
        s_stat = np.where(held.strangers_poor, -math.inf, s_stat)
        m_right = m_right & ~held.mated_poor
    named_right = np.where(m_right, m_stat, -math.inf)
    out: dict = {"rank1": round(rank1, 4), "rank1_gate": round(float(m_right.mean()), 4),
                 "probes_too_poor": int(held.mated_poor.sum()) if variant.gate else 0,
                 "strangers_too_poor": int(held.strangers_poor.sum()) if variant.gate else 0,
                 "mated": int(m_stat.size), "strangers": int(s_stat.size)}
    for f in REPORTED_FPIR:
        t = threshold_at_fpir(s_stat, f)
        out[f"fnir@{f:g}"] = round(float((named_right < t).mean()), 4)
    if calibrated is not None:
        t = calibrated["threshold"]
        calibrated["fpir_strangers"] = round(float((s_stat >= t).mean()), 4)
        calibrated["fnir"] = round(float((named_right < t).mean()), 4)
        out["calibrated"] = calibrated
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out, (rule, calibrated["threshold"] if calibrated else None, m_stat, s_stat)


def cross_check(searcher: Searcher, rule: DecisionRule, threshold: float, gate: bool, probes: list[int],
                strangers: list[int], m_stat: np.ndarray, s_stat: np.ndarray) -> dict:
    """The same rule through `Searcher.search_stored` (the whole search path, quality gate included): its
    statistics must be the ones judged from the gathered evidence."""
    searcher.rule, searcher.threshold, searcher.quality_gate = rule, threshold, gate
    answers = searcher.search_stored(probes + strangers, k=2)
    stats = np.array([a.statistic if a.statistic is not None and not a.too_poor else -math.inf for a in answers])
    gathered = np.concatenate([m_stat, s_stat])
    # a mated answer whose top is another identity counts as -inf in the judged figures: compare the rest
    both = np.isfinite(gathered) & np.isfinite(stats)
    too_poor = np.array([a.too_poor is not None for a in answers])
    return {"answers": len(answers), "compared": int(both.sum()),
            "max_abs_difference": float(np.max(np.abs(stats[both] - gathered[both]))) if both.any() else 0.0,
            "too_poor": int(too_poor.sum())}


def heldout(args: argparse.Namespace) -> dict:
    galleries = [args.gallery, *([args.compare] if args.compare else [])]
    with Gallery.open(args.gallery) as g:
        labels, _, _ = labeled_photos(g)
        base = default_rule_for(g)
    result: dict = {"galleries": [str(p) for p in galleries], "splits": [], "enrolled_share": args.enrolled_share,
                    "target_fpir": TARGET_FPIR}
    chosen = [v for v in variants(base) if not args.only or any(o in v.name for o in args.only)]
    for s in range(args.splits):
        split = make_split(labels, args.enrolled_share, args.seed + s, args.stranger_cap)
        row: dict = {"seed": split.seed, "enrolled": len(split.enrolled), "strangers_people": len(split.strangers)}
        for gallery in galleries:
            derived, probes, strangers = derive_split_gallery(gallery, args.work, split)
            with Gallery.open(derived) as g:
                owner = {f: n for n, fs in labeled_photos_by_id(g).items() for f in fs}
            stranger_names = [owner[f] for f in strangers]
            per = {}
            todo = chosen if gallery == args.gallery else [x for x in chosen if x.rule is None or
                                                              x.name.startswith("best face (today")]
            for evidence, aggregation in sorted({(v.low_quality_evidence, v.aggregation) for v in todo}, reverse=True):
                group = [v for v in todo if (v.low_quality_evidence, v.aggregation) == (evidence, aggregation)]
                with Searcher(derived, k=5, quality_gate=True, low_quality_evidence=evidence,
                              aggregation=aggregation) as searcher:
                    t0 = time.perf_counter()
                    loo = leave_one_out(searcher, max_probes=args.max_probes)
                    held = gather(searcher, probes, list(split.enrolled), strangers, stranger_names)
                    row[f"{gallery.name}: evidence_seconds"] = round(time.perf_counter() - t0, 1)
                    for v in group:
                        per[v.name], (rule, threshold, m_stat, s_stat) = measure_variant(searcher, loo, held, v,
                                                                                          base)
                        if threshold is not None and (v.rule is None or v.name.startswith("best face (today")):
                            per[v.name]["cross_check"] = cross_check(searcher, rule, threshold, v.gate, probes,
                                                                     strangers, m_stat, s_stat)
                        print(f"split {split.seed} {gallery.name} {v.name}: {json.dumps(per[v.name])}", flush=True)
            row[str(gallery)] = per
            shutil.rmtree(derived)
        result["splits"].append(row)
    result["summary"] = summarise(result, galleries)
    return result


def labeled_photos_by_id(g: Gallery) -> dict[str, list[int]]:
    """identity -> its labeled face ids, deleted ones included (the held-out faces)."""
    from sqlalchemy import select

    from gallery.store.schema import Face, Identity

    out: dict[str, list[int]] = {}
    with g.session() as s:
        for name, face_id in s.execute(select(Identity.name, Face.face_id)
                                       .join(Face, Face.identity_id == Identity.identity_id)):
            out.setdefault(name, []).append(int(face_id))
    return out


def default_rule_for(g: Gallery) -> DecisionRule:
    from gallery.faces.models import model_for_gallery

    return default_rule(model_for_gallery(g.model_stamp))


def summarise(result: dict, galleries: list[Path]) -> dict:
    """Mean over splits of each gallery's and rule's figures."""
    out: dict = {}
    for gallery in galleries:
        rows = [r[str(gallery)] for r in result["splits"]]
        for name in rows[0]:
            keys = [k for k in rows[0][name] if k.startswith("fnir@") or k == "rank1"]
            summary = {k: round(float(np.mean([r[name][k] for r in rows])), 4) for k in keys}
            if "calibrated" in rows[0][name]:
                for k in ("fpir_strangers", "fnir"):
                    values = [r[name]["calibrated"][k] for r in rows]
                    summary[f"calibrated_{k}"] = round(float(np.mean(values)), 4)
                    summary[f"calibrated_{k}_max"] = round(float(np.max(values)), 4)
                summary["weights"] = [r[name]["calibrated"]["rule"]["weight"] for r in rows]
            out[f"{gallery.name}: {name}"] = summary
    return out


# --- conservative defaults ------------------------------------------------------------------------------


def defaults(args: argparse.Namespace) -> dict:
    """The conservative per-size thresholds of the default rule (see the module doc)."""
    rng = np.random.default_rng(args.seed)
    with Gallery.open(args.gallery) as g:
        labels, face_of, ids_of = labeled_photos(g)
        rule = default_rule_for(g)
        from gallery.faces.models import model_for_gallery

        spec = model_for_gallery(g.model_stamp)
    names = sorted(labels)
    pooled: dict[int, list[np.ndarray]] = {k: [] for k in SIZES}
    fresh: dict[int, list[tuple[np.ndarray, float]]] = {k: [] for k in SIZES}
    for k in SIZES:
        draws = args.draws_small if k <= 10 else args.draws  # a few people differ much more from draw to draw
        for draw in range(2 * draws):
            enrolled = set(rng.choice(names, size=k, replace=False).tolist())
            strangers = sorted(f for n in names if n not in enrolled for f in ids_of[n])
            pick = rng.permutation(len(strangers))[: args.strangers]
            strangers = [strangers[i] for i in sorted(pick)]
            split = Split(draw, sorted(enrolled), [], [n for n in names if n not in enrolled])
            derived = args.work / f"defaults-{k}"
            if derived.exists():
                shutil.rmtree(derived)
            shutil.copytree(args.gallery, derived)
            (derived / ".ingest.lock").unlink(missing_ok=True)
            with Gallery.open(derived) as g:
                g.delete_faces(sorted(f for n in split.strangers for f in ids_of[n]))
                build_index(g)  # as `gallery index build` would leave a gallery of these K people
            with Searcher(derived, k=2, threshold=0.0, rule=rule) as searcher:
                stats = np.array([a.statistic if a.statistic is not None and not a.too_poor else -math.inf
                                  for a in searcher.search_stored(strangers, k=2)])
            shutil.rmtree(derived)
            # the first half of the draws fit the table, the second half check it
            if draw < draws:
                pooled[k].append(stats)
            else:
                fresh[k].append((stats, 0.0))
            print(f"K={k} draw {draw}: {len(strangers)} strangers, p99 {np.quantile(stats, 0.99):.4f}", flush=True)
    table = [(k, round(float(np.quantile(np.concatenate(pooled[k]), 1 - TARGET_FPIR)), 4)) for k in SIZES]
    # monotone in K: a larger gallery never gets a lower threshold than a smaller one
    monotone, running = [], -math.inf
    for k, t in table:
        running = max(running, t)
        monotone.append((k, round(running, 4)))
    previous = CONSERVATIVE.get(spec.name)
    CONSERVATIVE[spec.name] = monotone
    check = []
    for k in SIZES:
        t, _ = conservative_threshold(spec, k)
        stats = np.concatenate([s for s, _ in fresh[k]])
        check.append({"identities": k, "threshold": t, "measured_fpir": round(float((stats >= t).mean()), 4),
                      "strangers": int(stats.size)})
    if previous is not None:
        CONSERVATIVE[spec.name] = previous
    return {"gallery": str(args.gallery), "model": spec.name, "rule": rule.as_dict(), "target_fpir": TARGET_FPIR,
            "draws": args.draws, "draws_small": args.draws_small, "table_raw": table, "table": monotone,
            "check_on_fresh_draws": check}


# --- template scan cost --------------------------------------------------------------------------------


def template_scan(args: argparse.Namespace) -> dict:
    """Single-query latency of the exact template search (search.templates.TemplateSearch.search) against
    the number of identities: where it stops being cheap sets EXACT_TEMPLATES."""
    from search.templates import EXACT_TEMPLATES, TemplateSearch

    rng = np.random.default_rng(args.seed)
    rows = []
    for k in [int(v) for v in args.identities.split(",")]:
        search = TemplateSearch.__new__(TemplateSearch)  # the search itself, on made-up templates
        search.enabled, search.limit = True, k
        search.ids = np.arange(k, dtype=np.int64)
        v = rng.standard_normal((k, args.dim)).astype(np.float32)
        search.vectors = v / np.linalg.norm(v, axis=1, keepdims=True)
        search.refresh = lambda: None  # type: ignore[method-assign]
        q = search.vectors[rng.integers(0, k, 200)] + 0.1
        q /= np.linalg.norm(q, axis=1, keepdims=True)
        for i in range(5):
            search.search(q[i : i + 1], 8)
        times = []
        for i in range(len(q)):
            t0 = time.perf_counter()
            search.search(q[i : i + 1], 8)
            times.append(time.perf_counter() - t0)
        rows.append({"identities": k, "p50_ms": round(1000 * float(np.median(times)), 3),
                     "p99_ms": round(1000 * float(np.quantile(times, 0.99)), 3),
                     "memory_mb": round(search.vectors.nbytes / 2**20, 1)})
        print(json.dumps(rows[-1]), flush=True)
    return {"dim": args.dim, "exact_templates": EXACT_TEMPLATES, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    h = sub.add_parser("heldout", help="leave-identities-out comparison of decision rules")
    h.add_argument("gallery", type=Path, help="a labeled gallery ingested by the product")
    h.add_argument("--compare", type=Path, help="a second ingest of the same photos (e.g. with flip averaging)")
    h.add_argument("--splits", type=int, default=5)
    h.add_argument("--enrolled-share", type=float, default=0.5,
                   help="share of the identities with 2+ labeled faces that are enrolled")
    h.add_argument("--max-probes", type=int, default=2000, help="leave-one-out probes of each calibration")
    h.add_argument("--stranger-cap", type=int, default=5, help="faces searched per never-enrolled person")
    h.add_argument("--only", nargs="*", help="run only the rules whose name contains one of these")
    d = sub.add_parser("defaults", help="conservative thresholds of uncalibrated galleries")
    d.add_argument("gallery", type=Path)
    d.add_argument("--draws", type=int, default=4, help="random galleries per size to fit (as many again check)")
    d.add_argument("--draws-small", type=int, default=16, help="the same for galleries of up to 10 identities")
    d.add_argument("--strangers", type=int, default=3000, help="stranger faces searched per draw")
    t = sub.add_parser("template-scan", help="latency of the exact template search against the gallery's size")
    t.add_argument("--identities", default="1000,10000,30000,50000,100000,300000")
    t.add_argument("--dim", type=int, default=128)
    for p in (h, d, t):
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--work", type=Path, default=Path("/tmp/open-set"))
        p.add_argument("--output", type=Path)
    args = parser.parse_args()
    args.work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    result = {"heldout": heldout, "defaults": defaults, "template-scan": template_scan}[args.command](args)
    result["seconds"] = round(time.time() - t0, 1)
    result["command"] = " ".join(sys.argv)
    print(json.dumps(result.get("summary", result), indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
