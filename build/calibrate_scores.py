"""Fit a pose model's score maps (raw scores -> probabilities) on labelled photos and write them into its card.

    python -m build.calibrate_scores models/pp-tinypose-256x192.onnx --detector models/rtmdet-nano.onnx \
        --maps models/score-maps/pp-tinypose-256x192.json         # then: python -m build.convert_openvino
    python -m build.calibrate_scores MODEL.onnx --detector DETECTOR.onnx   # measure only

The maps are written as JSON (`--maps`), which the model's build step puts into its card (for PP-TinyPose,
build/convert_openvino.py reads models/score-maps/), so that the build stays reproducible.

Labels: every person of ../shared/eval/coco_multi.json (read in place, never copied). The service's own
pipeline (pose/pipeline.py, at most 20 people, raw scores: the maps of the input file are dropped first)
runs on each photo; its people are matched to the labelled people as COCO's evaluation matches them (best
score first, each labelled person once, by OKS with COCO's per-joint sigmas).

- A joint of a person matched to a labelled person (OKS >= 0.1) is right when its OKS term, exp(-d^2 /
  (2 s^2 k^2)), is over 0.5; joints the labels leave out are not used. Joints of one kind (face: nose, eyes
  and ears; then shoulders, elbows, wrists, hips, knees, ankles, left and right together) share a map.
- A person is right when matched at OKS >= 0.5; wrong when matched to nobody (or only by less); a person
  matched to no labelled person but overlapping one the labels give no joints (a crowd, or too small) is
  not used.

Each map is isotonic (pool adjacent violators) on the raw scores in quantile bins of at least MIN_BIN
samples, with knots at the pooled blocks' centres and each block's share right by Laplace's rule (k + 1) /
(n + 2), so that no block of a few dozen samples claims certainty: monotone, so the order of joints and
people, and with it COCO AP, is kept. Cross-validated by photo (FOLDS folds): the expected calibration error (ECE, 10 bins)
of the maps fitted without a photo on that photo's scores, against the raw scores', and at the card's
threshold the share of right joints shown and the precision of those shown. The set is small: read the
figures as rough, the maps as better than raw scores, not as final.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx

from build import cards
from build import evaluate
from pose import calibrate, card as model_card
from pose.detect import open_detector
from pose.model import PoseModel
from pose.pipeline import estimate_people

FOLDS = 5
MIN_BIN = 20  # samples per quantile bin before pooling
MAX_PEOPLE = 20
KINDS = ("face", "shoulder", "elbow", "wrist", "hip", "knee", "ankle")
FACE = ("nose", "eye", "ear")


def kind_of(joint: str) -> str:
    base = joint.split("_", 1)[-1]
    return "face" if base in FACE else base


def oks_terms(points: np.ndarray, label: dict) -> tuple[np.ndarray, np.ndarray]:
    """(K,) OKS terms of predicted `points` (K, 2) against a COCO annotation, and which joints it labels."""
    truth = np.asarray(label["keypoints"], dtype=np.float64).reshape(-1, 3)
    d2 = np.sum((points - truth[:, :2]) ** 2, axis=1)
    terms = np.exp(-d2 / (2 * max(label["area"], 1.0) * (2 * evaluate.COCO_SIGMAS) ** 2))
    return terms, truth[:, 2] > 0


def box_iou(a: tuple[float, ...], b: list[float]) -> float:
    """IoU of (left, top, right, bottom) and COCO's [x, y, w, h]."""
    bx0, by0, bx1, by1 = b[0], b[1], b[0] + b[2], b[1] + b[3]
    w = max(0.0, min(a[2], bx1) - max(a[0], bx0))
    h = max(0.0, min(a[3], by1) - max(a[1], by0))
    union = (a[2] - a[0]) * (a[3] - a[1]) + b[2] * b[3] - w * h
    return w * h / union if union > 0 else 0.0


def samples(model: PoseModel, detector) -> dict:
    """Per photo: the raw joint scores with right/wrong (for each kind) and the raw person scores with right/wrong."""
    gt = json.loads((evaluate.EVAL / "coco_multi.json").read_text())
    order = [n.replace("left_", "l_").replace("right_", "r_") for n in gt["categories"][0]["keypoints"]]
    index = [model.card.joints.index(n) for n in order]
    kinds = [kind_of(model.card.joints[i]) for i in index]
    photos = []
    for info in gt["images"]:
        labels = [a for a in gt["annotations"] if a["image_id"] == info["id"]]
        scored = [a for a in labels if a["num_keypoints"] > 0 and not a["iscrowd"]]
        people = estimate_people(evaluate.read_rgb(evaluate.EVAL, f"images/{info['file_name']}"), model, detector,
                                 MAX_PEOPLE).people
        joints: dict[str, list] = {k: [] for k in KINDS}
        persons = []
        free = list(range(len(scored)))
        for person in sorted(people, key=lambda p: -p.score):
            points, scores = np.asarray(person.points)[index], np.asarray(person.scores)[index]
            best, best_oks, best_terms = None, 0.0, None
            for g in free:
                terms, labelled = oks_terms(points, scored[g])
                value = float(terms[labelled].mean())
                if value > best_oks:
                    best, best_oks, best_terms = g, value, (terms, labelled)
            if best is not None and best_oks >= 0.1:
                free.remove(best)
                terms, labelled = best_terms
                for j in np.flatnonzero(labelled):
                    joints[kinds[j]].append((float(scores[j]), bool(terms[j] > 0.5)))
                persons.append((float(person.score), best_oks >= 0.5))
            elif not any(box_iou(person.box, a["bbox"]) >= 0.5 for a in labels if a not in scored):
                persons.append((float(person.score), False))
        photos.append({"joints": joints, "persons": persons})
    return photos


def fit(pairs: list[tuple[float, bool]]) -> model_card.ScoreMap:
    """Isotonic map of raw score -> P(right) from (raw, right) pairs, in quantile bins of at least MIN_BIN."""
    data = np.array(sorted(pairs), dtype=np.float64).reshape(-1, 2)
    bins = max(1, len(data) // MIN_BIN)
    blocks = [[float(c[:, 0].mean()), float(c[:, 1].mean()), len(c)] for c in np.array_split(data, bins) if len(c)]
    pooled: list[list[float]] = []
    for x, y, w in blocks:  # pool adjacent violators
        pooled.append([x * w, y * w, w])
        while len(pooled) > 1 and pooled[-2][1] / pooled[-2][2] >= pooled[-1][1] / pooled[-1][2]:
            x2, y2, w2 = pooled.pop()
            pooled[-1] = [pooled[-1][0] + x2, pooled[-1][1] + y2, pooled[-1][2] + w2]
    raw = [x / w for x, _, w in pooled]
    # Laplace's rule of succession: a block of 20 joints all right is 21/22 sure, not certain
    probability = list(np.maximum.accumulate([(y + 1) / (w + 2) for _, y, w in pooled]))
    if len(raw) == 1:  # one block: a flat map
        raw, probability = [raw[0] - 1e-3, raw[0] + 1e-3], probability * 2
    return model_card.ScoreMap(tuple(round(v, 5) for v in raw), tuple(round(v, 4) for v in probability))


def ece(probability: np.ndarray, right: np.ndarray, bins: int = 10) -> float:
    """Expected calibration error: the mean |P - share right| over equal-width bins, weighted by their counts."""
    which = np.minimum((probability * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.sum() * abs(probability[inside].mean() - right[inside].mean())
    return total / max(len(probability), 1)


def cross_validate(photos: list[dict], threshold: float) -> dict:
    """Out-of-fold probabilities of every joint and person -> ECE raw vs calibrated, and recall/precision at
    `threshold` for both."""
    out = {"joint_raw": [], "joint_calibrated": [], "joint_right": [], "person_raw": [], "person_calibrated": [],
           "person_right": []}
    for fold in range(FOLDS):
        train = [p for i, p in enumerate(photos) if i % FOLDS != fold]
        test = [p for i, p in enumerate(photos) if i % FOLDS == fold]
        for kind in KINDS:
            score_map = fit([s for p in train for s in p["joints"][kind]])
            pairs = np.array([s for p in test for s in p["joints"][kind]], dtype=np.float64).reshape(-1, 2)
            out["joint_raw"] += list(pairs[:, 0])
            out["joint_calibrated"] += list(calibrate.apply(score_map, pairs[:, 0]))
            out["joint_right"] += list(pairs[:, 1])
        person_map = fit([s for p in train for s in p["persons"]])
        pairs = np.array([s for p in test for s in p["persons"]], dtype=np.float64).reshape(-1, 2)
        out["person_raw"] += list(pairs[:, 0])
        out["person_calibrated"] += list(calibrate.apply(person_map, pairs[:, 0]))
        out["person_right"] += list(pairs[:, 1])
    a = {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}
    right = a["joint_right"] > 0.5

    def shown(scores: np.ndarray) -> dict:
        visible = scores >= threshold
        return {"recall": round(float((visible & right).sum() / max(right.sum(), 1)), 3),
                "precision": round(float((visible & right).sum() / max(visible.sum(), 1)), 3)}

    return {"joints": int(len(right)), "right": round(float(right.mean()), 3),
            "joint_ece_raw": round(ece(np.clip(a["joint_raw"], 0, 1), right), 3),
            "joint_ece_calibrated": round(ece(a["joint_calibrated"], right), 3),
            "persons": int(len(a["person_right"])),
            "person_ece_raw": round(ece(np.clip(a["person_raw"], 0, 1), a["person_right"] > 0.5), 3),
            "person_ece_calibrated": round(ece(a["person_calibrated"], a["person_right"] > 0.5), 3),
            f"shown at {threshold}, raw": shown(a["joint_raw"]),
            f"shown at {threshold}, calibrated": shown(a["joint_calibrated"])}


def score_maps_json(photos: list[dict], joints: tuple[str, ...], report: dict) -> dict:
    groups = []
    for kind in KINDS:
        fitted = fit([s for p in photos for s in p["joints"][kind]])
        groups.append({"kind": kind, "joints": [i for i, j in enumerate(joints) if kind_of(j) == kind],
                       "raw": list(fitted.raw), "probability": list(fitted.probability)})
    person = fit([s for p in photos for s in p["persons"]])
    return {"joints": groups, "person": {"raw": list(person.raw), "probability": list(person.probability)},
            "fitted": f"build/calibrate_scores.py on {dt.date.today().isoformat()}: isotonic per joint kind on the "
                      f"{report['joints']} joints and {report['persons']} people the pipeline matched in "
                      f"../shared/eval/coco_multi.json; a joint is right when its OKS term is over 0.5, a person "
                      f"when matched at OKS 0.5; {FOLDS}-fold ECE by photo, joints {report['joint_ece_raw']} raw "
                      f"-> {report['joint_ece_calibrated']}, people {report['person_ece_raw']} -> "
                      f"{report['person_ece_calibrated']}"}


def without_maps(path: Path, tmp: Path) -> Path:
    """A copy of the model whose card has no score_maps (what the maps are fitted on)."""
    model = onnx.load(str(path))
    card = cards.get_card(model)
    card.pop("score_maps", None)
    onnx.save(cards.set_card(model, card), str(tmp))
    return tmp


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", type=Path)
    ap.add_argument("--detector", type=Path, required=True)
    ap.add_argument("--maps", type=Path, help="write the fitted maps (the card's score_maps) here as JSON")
    ap.add_argument("--json", type=Path, help="write the cross-validated figures here")
    a = ap.parse_args(argv)
    if not (evaluate.EVAL / "coco_multi.json").is_file():
        print(f"the eval set is absent ({evaluate.EVAL}): clone with ../shared beside the project", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        model = PoseModel(without_maps(a.model, Path(tmp) / "raw.onnx"), threads=2)
        photos = samples(model, open_detector(a.detector, threads=2))
    report = cross_validate(photos, model.card.threshold)
    print(json.dumps(report, indent=1))
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(report, indent=1) + "\n")
    if a.maps:
        card = cards.get_card(onnx.load(str(a.model)))
        card["score_maps"] = score_maps_json(photos, model.card.joints, report)
        model_card.parse(json.dumps(card))  # the service must accept it
        a.maps.parent.mkdir(parents=True, exist_ok=True)
        a.maps.write_text(json.dumps(card["score_maps"], indent=1) + "\n")
        print(f"wrote {a.maps}; rebuild the model to put them in its card")
    return 0


if __name__ == "__main__":
    sys.exit(main())
