"""Measure the face quality gate: how each quality measure relates to being named right, named wrong,
or (as a stranger) named at all, on real faces and on photos made worse on purpose.

From a labeled gallery ingested by the product with quality measures (e.g. LFW A–J, dlib-resnet):

1. **Real faces.** Every labeled face is searched against the rest of the gallery (leave-one-out through
   `search.evaluation`, the quality gate off), with the gallery's decision rule calibrated at FPIR 1%. Per
   face: named right (mated), named wrong (mated: another identity named), named as a stranger (its identity
   held out: anyone named). Rates by bins of each measure.
2. **Made worse.** `--photos` labeled photos of identities with 2+ faces, each blurred (Gaussian radius
   1–4 px), shrunk (to 1/2 … 1/8: faces of ~50 … 12 px), and cut off (15–60% of the face box outside the
   photo), then run through the product's `FacePipeline` (detection, alignment, embedding, quality) and
   searched the same way with their original face left out of the gallery's answer and template. Rates
   per degradation and level, with the measures the pipeline gave.
3. **A gate** (`--gate size,det,inside,sharpness,pose`, default the product's `QUALITY_GATE`): the share of
   real faces and of made-worse faces it flags, and the rates of the flagged and the kept.

    python benchmarks/quality_gate.py /tmp/lfw --photos 300 --output results/quality_gate.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gallery.device import apply_process_defaults  # noqa: E402

apply_process_defaults()  # as the `gallery` command does: before torch and faiss load

from gallery.faces.models import model_for_gallery  # noqa: E402
from gallery.faces.quality import QUALITY_GATE, QualityGate, gate_issue  # noqa: E402
from gallery.store import Gallery  # noqa: E402
from search.calibrate import calibrate  # noqa: E402
from search.decision import DecisionRule  # noqa: E402
from search.evaluation import leave_one_out, probe_evidence, probe_outcomes  # noqa: E402
from search.searcher import Searcher  # noqa: E402

MEASURES = ("size", "det_score", "inside", "sharpness", "pose")
COLUMN = {"size": "q_size", "det_score": "det_score", "inside": "q_inside", "sharpness": "q_sharpness",
          "pose": "q_pose"}
BINS = {
    "size": [0, 20, 24, 30, 40, 60, 80, 1e9],
    "det_score": [0, 0.95, 0.98, 0.99, 0.995, 0.999, 1.01],
    "inside": [0, 0.6, 0.75, 0.85, 0.9, 0.95, 0.99, 1.01],
    "sharpness": [0, 5, 10, 15, 20, 25, 30, 40, 60, 1e9],
    "pose": [0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1e9],
}
DEGRADATIONS = {
    "blur": [1.0, 1.5, 2.0, 3.0, 4.0],  # Gaussian radius in pixels
    "shrink": [0.5, 0.35, 0.25, 0.18, 0.125],  # photo scale: faces of ~100 px become ~50 ... ~12 px
    "cut": [0.15, 0.3, 0.45, 0.6],  # share of the face box pushed out of the photo (left side)
}


def rates(outcomes: dict[str, np.ndarray], mask: np.ndarray) -> dict:
    n = int(mask.sum())
    if n == 0:
        return {"n": 0}
    return {"n": n, "named_right": round(float(outcomes["right"][mask].mean()), 4),
            "named_wrong": round(float(outcomes["wrong"][mask].mean()), 4),
            "stranger_named": round(float(outcomes["stranger_named"][mask].mean()), 4)}


def binned(values: dict[str, np.ndarray], outcomes: dict[str, np.ndarray]) -> dict:
    out = {}
    for m in MEASURES:
        v = values[m]
        rows = []
        edges = BINS[m]
        for lo, hi in zip(edges[:-1], edges[1:]):
            mask = np.isfinite(v) & (v >= lo) & (v < hi)
            rows.append({"from": lo, "to": hi, **rates(outcomes, mask)})
        out[m] = rows
    return out


def gate_mask(values: dict[str, np.ndarray], gate: QualityGate) -> np.ndarray:
    n = len(values["size"])

    def val(m: str, i: int) -> float | None:
        x = values[m][i]
        return None if not np.isfinite(x) else float(x)

    return np.array([gate_issue(val("size", i), val("det_score", i), val("inside", i), val("sharpness", i),
                                val("pose", i), gate) is not None for i in range(n)], bool)


def real_faces(searcher: Searcher, rule: DecisionRule, threshold: float) -> tuple[dict, dict]:
    loo = leave_one_out(searcher, max_probes=10**9, good_only=False)
    outcomes = probe_outcomes(loo, rule, threshold)
    rows = searcher.gallery.face_quality_rows(loo.face_ids)
    values = {m: np.array([np.nan if rows[int(f)][COLUMN[m]] is None else rows[int(f)][COLUMN[m]]
                           for f in loo.face_ids], np.float64) for m in MEASURES}
    return values, outcomes


def degrade(image, kind: str, level: float, box: list[float]):
    from PIL import ImageFilter

    if kind == "blur":
        return image.filter(ImageFilter.GaussianBlur(level))
    if kind == "shrink":
        w, h = image.size
        return image.resize((max(1, round(w * level)), max(1, round(h * level))), resample=3)
    x1, _, x2, _ = box
    cut = int(round(x1 + level * (x2 - x1)))
    return image.crop((cut, 0, image.size[0], image.size[1]))


def made_worse(gallery_dir: Path, searcher: Searcher, rule: DecisionRule, threshold: float, photos: int,
               seed: int) -> tuple[dict, dict, dict]:
    from PIL import Image

    from gallery.faces.pipeline import FacePipeline

    with Gallery.open(gallery_dir) as g:
        details = [d for d in g.face_details(labeled_only=True)]
        spec = model_for_gallery(g.model_stamp)
    counts: dict[str, int] = {}
    for d in details:
        counts[d.identity] = counts.get(d.identity, 0) + 1
    eligible = [d for d in details if counts[d.identity] >= 2]
    rng = np.random.default_rng(seed)
    chosen = [eligible[i] for i in sorted(rng.choice(len(eligible), size=min(photos, len(eligible)), replace=False))]
    own_ids = searcher.gallery.face_identity_ids([d.face_id for d in chosen])
    counted = searcher.gallery.face_quality_rows([d.face_id for d in chosen])
    originals = searcher.gallery.read_embeddings([d.face_id for d in chosen])
    pipeline = FacePipeline(spec, "cpu")
    per_level: dict = {}
    pooled_values: dict[str, list[float]] = {m: [] for m in MEASURES}
    pooled_outcomes: dict[str, list[bool]] = {"right": [], "wrong": [], "stranger_named": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind, levels in DEGRADATIONS.items():
            for level in levels:
                xs, names, exclude, leave, measures, lost = [], [], [], [], [], 0
                for j, d in enumerate(chosen):
                    with Image.open(d.photo) as im:
                        worse = degrade(im.convert("RGB"), kind, level, d.box)
                    path = Path(tmp) / f"{kind}-{level}-{d.face_id}.png"
                    worse.save(path)
                    found = pipeline.faces_of(path, largest_only=True)
                    if not found.ok:
                        lost += 1
                        continue
                    q = found.quality(spec)[0]
                    xs.append(found.embeddings[0])
                    names.append(d.identity)
                    exclude.append({d.face_id})
                    keep = counted[d.face_id]["quality_issue"] is None
                    leave.append((int(own_ids[d.face_id]), originals[j]) if keep else None)
                    measures.append(q)
                if not xs:
                    per_level[f"{kind} {level:g}"] = {"searched": 0, "lost": lost}
                    continue
                loo = probe_evidence(searcher, np.stack(xs), names, exclude, leave)
                out = probe_outcomes(loo, rule, threshold)
                values = {m: np.array([np.nan if getattr(q, m) is None else getattr(q, m) for q in measures])
                          for m in MEASURES}
                per_level[f"{kind} {level:g}"] = {
                    "searched": len(xs), "no_face_found": lost,
                    **rates(out, np.ones(len(xs), bool)),
                    "measures_median": {m: round(float(np.nanmedian(values[m])), 3) for m in MEASURES},
                }
                print(f"{kind} {level:g}: {json.dumps(per_level[f'{kind} {level:g}'])}", flush=True)
                for m in MEASURES:
                    pooled_values[m].extend(values[m].tolist())
                for k in pooled_outcomes:
                    pooled_outcomes[k].extend(out[k].tolist())
    return per_level, {m: np.asarray(v) for m, v in pooled_values.items()}, \
        {k: np.asarray(v, bool) for k, v in pooled_outcomes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("gallery", type=Path, help="a labeled gallery ingested with quality measures")
    parser.add_argument("--photos", type=int, default=300, help="labeled photos made worse")
    parser.add_argument("--gate", help="size,det,inside,sharpness,pose (default: the product's gate)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    gate = QUALITY_GATE if not args.gate else QualityGate(*[float(v) for v in args.gate.split(",")])
    t0 = time.time()
    with Searcher(args.gallery, quality_gate=False) as searcher:
        report = calibrate(searcher, 0.01, apply=False)
        rule, threshold = DecisionRule.from_dict(report.rule), report.threshold
        values, outcomes = real_faces(searcher, rule, threshold)
        result: dict = {"gallery": str(args.gallery), "rule": rule.as_dict(), "threshold": threshold,
                        "gate": gate.as_dict(), "real": {"all": rates(outcomes, np.ones(len(values["size"]), bool)),
                                                         "by_measure": binned(values, outcomes)}}
        flagged = gate_mask(values, gate)
        result["real"]["gate"] = {"flagged_share": round(float(flagged.mean()), 4),
                                  "flagged": rates(outcomes, flagged), "kept": rates(outcomes, ~flagged)}
        per_level, worse_values, worse_outcomes = made_worse(args.gallery, searcher, rule, threshold, args.photos,
                                                             args.seed)
    flagged = gate_mask(worse_values, gate)
    result["made_worse"] = {"by_level": per_level, "by_measure": binned(worse_values, worse_outcomes),
                            "gate": {"flagged_share": round(float(flagged.mean()), 4),
                                     "flagged": rates(worse_outcomes, flagged),
                                     "kept": rates(worse_outcomes, ~flagged)}}
    result["seconds"] = round(time.time() - t0, 1)
    result["command"] = " ".join(sys.argv)
    print(json.dumps({k: result[k] for k in ("rule", "threshold", "gate")} | {
        "real_gate": result["real"]["gate"], "worse_gate": result["made_worse"]["gate"]}, indent=2))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
