"""Accuracy of a served model on the shared eval set (../shared/eval), through the service's own code.

    python -m build.evaluate models/pp-tinypose-256x192.onnx [--detector models/rtmdet-nano.onnx] [--json out/eval.json]

Two protocols, as the eval README describes them:
- crops: the model runs on each labelled instance's square crop and is scored against that instance;
- whole: the model runs on the whole photo, as the service receives it, and is scored against the
  labelled person its prediction matches best.
Metrics: PCKh@0.5 and PCKh@0.1 on the MPII instances, OKS and PCK@0.2 on the COCO instances, each
over the joints the model and the labels share by name (a COCO model has no head_top, say). COCO
numbers are also given without the `coco_train2017_TRAIN` subset (MoveNet was trained on it): use
those to compare models. With a detector, the service's multi-person pipeline (pose/pipeline.py)
answers and its best-scored person, people[0], is the one scored.

And every person (`coco_multi`): the pipeline's people on each whole photo of `coco_multi.json`,
as COCO keypoint results, scored by pycocotools' own COCOeval: AP, AP50, AP75, AR.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pose.image import read_photo
from pose.model import PoseModel
from pose.pipeline import MAX_PEOPLE, estimate_people, estimate_person

ROOT = Path(__file__).resolve().parent.parent

EVAL = ROOT.parent / "shared" / "eval"
TRAIN_SUBSET = "coco_train2017_TRAIN"
COCO_SIGMAS = np.array([.26, .25, .25, .35, .35, .79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89]) / 10
LOW_LIGHT_SUBSET = "exlpose"


def load_labels(eval_dir: Path = EVAL) -> dict:
    if not (eval_dir / "mpii.json").is_file():
        raise FileNotFoundError(f"the eval set is absent: {eval_dir} (clone with ../shared beside the project)")
    sets = {name: json.loads((eval_dir / f"{name}.json").read_text()) for name in ("mpii", "coco")}
    return {
        "mpii": (sets["mpii"]["meta"]["mpii_joint_order"], sets["mpii"]["instances"]),
        "coco": (sets["coco"]["meta"]["coco_joint_order"], sets["coco"]["instances"]),
    }


def read_rgb(eval_dir: Path, rel: str) -> np.ndarray:
    return read_photo((eval_dir / rel).read_bytes())


def crop_of(rgb: np.ndarray, crop: dict) -> tuple[np.ndarray, np.ndarray]:
    """The instance's square crop (zero padded outside the photo) and its top-left offset."""
    side = max(1, int(round(crop["size"])))
    left = int(round(crop["center"][0] - crop["size"] / 2))
    top = int(round(crop["center"][1] - crop["size"] / 2))
    patch = Image.fromarray(rgb).crop((left, top, left + side, top + side))
    return np.asarray(patch), np.array([left, top], dtype=np.float64)


@dataclass
class Scored:
    """One instance scored: per shared joint, whether it was labelled and whether it was right."""

    instance: str
    subset: str
    labelled: np.ndarray  # (J,) bool
    correct: dict[str, np.ndarray]  # metric -> (J,) bool (PCK kinds)
    oks: float | None = None


def match(model_joints: tuple[str, ...], label_joints: list[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    shared = [j for j in label_joints if j in model_joints]
    return (np.array([model_joints.index(j) for j in shared]), np.array([label_joints.index(j) for j in shared]),
            shared)


def score_mpii(pred: np.ndarray, inst: dict, mi: np.ndarray, li: np.ndarray) -> Scored:
    gt = np.asarray(inst["joints"], dtype=np.float64)[li]
    labelled = gt[:, 2] > 0
    d = np.linalg.norm(pred[mi] - gt[:, :2], axis=1)
    h = inst["head_size"]
    return Scored(inst["id"], inst["subset"], labelled,
                  {"pckh@0.5": labelled & (d <= 0.5 * h), "pckh@0.1": labelled & (d <= 0.1 * h)})


def score_coco(pred: np.ndarray, inst: dict, mi: np.ndarray, li: np.ndarray) -> Scored:
    gt = np.asarray(inst["keypoints"], dtype=np.float64)[li]
    labelled = gt[:, 2] > 0
    d = np.linalg.norm(pred[mi] - gt[:, :2], axis=1)
    var = (2 * COCO_SIGMAS[li]) ** 2
    e = d ** 2 / var / (inst["area"] + np.spacing(1)) / 2
    oks = float(np.exp(-e)[labelled].mean()) if labelled.any() else None
    side = max(inst["bbox"][2], inst["bbox"][3])
    return Scored(inst["id"], inst["subset"], labelled, {"pck@0.2": labelled & (d <= 0.2 * side)}, oks)


def quality(s: Scored) -> float:
    """How well a prediction matches an instance, for picking the best-matching person."""
    if s.oks is not None:
        return s.oks
    return float(s.correct["pckh@0.5"].sum() / max(1, s.labelled.sum()))


class Served:
    """A served model as the service answers one person in a photo: its look, then its closer look
    (pipeline.estimate_person)."""

    def __init__(self, model: PoseModel):
        self.model, self.card = model, model.card

    def estimate(self, rgb: np.ndarray):
        return estimate_person(rgb, self.model)


class OnePass(Served):
    """A served model with its closer look (handler/pose/region.py) turned off: one pass per input."""

    def estimate(self, rgb: np.ndarray):
        return self.model.estimate(rgb)


class Pipeline:
    """The service's pipeline (detector, crops, one batched pose run; the whole photo when nobody
    is detected) as a model for this module: `estimate` answers with people[0]."""

    def __init__(self, model: PoseModel, detector, max_people: int = MAX_PEOPLE):
        self.model, self.card, self.detector, self.max_people = model, model.card, detector, max_people

    def people(self, rgb: np.ndarray):
        return estimate_people(rgb, self.model, self.detector, self.max_people).people

    def estimate(self, rgb: np.ndarray):
        return self.people(rgb)[0]


COCO_MAX_PEOPLE = 20  # COCO's keypoint evaluation keeps at most 20 people a photo


def coco_multi(people: Callable[[np.ndarray], list], joints: tuple[str, ...], eval_dir: Path = EVAL) -> dict:
    """COCO keypoint AP of `people(rgb)` (objects with points (K, 2), score) on every person of
    coco_multi.json's photos, by pycocotools; joints are matched to COCO's by name (a model must
    have all 17). Returns AP, AP50, AP75, APm, APl, AR in percent, and the results themselves."""
    gt = coco_labels(eval_dir)
    index = coco_joint_index(gt, joints)
    results = []
    for image_id in sorted(gt.getImgIds()):
        info = gt.loadImgs(image_id)[0]
        rgb = read_rgb(eval_dir, f"images/{info['file_name']}")
        results += keypoint_results(image_id, people(rgb), index)
    return keypoint_ap(gt, results)


def coco_labels(eval_dir: Path = EVAL, dataset: dict | None = None):
    """coco_multi.json (or `dataset`, a dict in its format) as pycocotools' COCO, quietly."""
    from pycocotools.coco import COCO

    path = eval_dir / "coco_multi.json"
    if dataset is None and not path.is_file():
        raise FileNotFoundError(f"the eval set is absent: {path} (clone with ../shared beside the project)")
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        gt = COCO(None if dataset is not None else str(path))
        if dataset is not None:
            gt.dataset = dataset
            gt.createIndex()
    return gt


def coco_joint_index(gt, joints: tuple[str, ...]) -> list[int]:
    """The index in `joints` of each of COCO's 17 joints, in COCO's order (matched by name)."""
    order = [name.replace("left_", "l_").replace("right_", "r_")  # COCO's names, as the cards spell them
             for name in gt.loadCats(gt.getCatIds(catNms=["person"]))[0]["keypoints"]]
    if not set(order) <= set(joints):
        raise ValueError(f"a model without COCO's 17 joints cannot be scored by COCO keypoint AP: {joints}")
    return [joints.index(name) for name in order]


def keypoint_results(image_id: int, people: list, index: list[int]) -> list[dict]:
    """At most COCO_MAX_PEOPLE people of one image as COCO keypoint results."""
    results = []
    for person in people[:COCO_MAX_PEOPLE]:
        xy = np.asarray(person.points, dtype=np.float64)[index]
        keypoints = np.concatenate([xy, np.ones((len(index), 1))], axis=1).ravel()
        results.append({"image_id": image_id, "category_id": 1, "keypoints": [round(float(v), 2) for v in keypoints],
                        "score": float(person.score)})
    return results


def keypoint_ap(gt, results: list[dict], image_ids: list[int] | None = None) -> dict:
    """pycocotools' COCOeval of keypoint results against `gt` (on `image_ids` only, when given): AP, AP50, AP75,
    APm, APl, AR in percent, and the people answered there."""
    from pycocotools.cocoeval import COCOeval

    if image_ids is not None:
        wanted = set(image_ids)
        results = [r for r in results if r["image_id"] in wanted]
    if not results:
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0, "APm": 0.0, "APl": 0.0, "AR": 0.0, "people": 0}
    with contextlib.redirect_stdout(io.StringIO()):
        evaluation = COCOeval(gt, gt.loadRes(results), "keypoints")
        if image_ids is not None:
            evaluation.params.imgIds = sorted(wanted)
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = [round(100.0 * float(v), 2) for v in evaluation.stats]
    return {"AP": stats[0], "AP50": stats[1], "AP75": stats[2], "APm": stats[3], "APl": stats[4], "AR": stats[5],
            "people": len(results)}


def run(model: PoseModel, eval_dir: Path = EVAL, protocols: tuple[str, ...] = ("crops", "whole"),
        whole_points: Callable[[str, np.ndarray], np.ndarray] | None = None) -> dict:
    """Per (protocol, label set), the list of Scored instances (whole: one per photo, its best match).

    `whole_points(image_rel, rgb)` may replace the in-process model for the whole-photo protocol,
    e.g. to score what a served endpoint answers for the photo's bytes.
    """
    labels = load_labels(eval_dir)
    images: dict[str, np.ndarray] = {}
    whole_pred: dict[str, np.ndarray] = {}
    predict_whole = whole_points or (lambda _rel, rgb: model.estimate(rgb).points)
    results: dict = {}
    for set_name, (label_joints, instances) in labels.items():
        mi, li, _ = match(model.card.joints, label_joints)
        if len(mi) == 0:
            continue
        scorer = score_mpii if set_name == "mpii" else score_coco
        for protocol in protocols:
            scored: list[Scored] = []
            by_image: dict[str, list[Scored]] = {}
            for inst in instances:
                if inst["image"] not in images:
                    images[inst["image"]] = read_rgb(eval_dir, inst["image"])
                rgb = images[inst["image"]]
                if protocol == "crops":
                    patch, offset = crop_of(rgb, inst["crop"])
                    scored.append(scorer(model.estimate(patch).points + offset, inst, mi, li))
                else:
                    if inst["image"] not in whole_pred:
                        whole_pred[inst["image"]] = predict_whole(inst["image"], rgb)
                    by_image.setdefault(inst["image"], []).append(scorer(whole_pred[inst["image"]], inst, mi, li))
            if protocol == "whole":
                scored = [max(group, key=quality) for group in by_image.values()]
            results[(protocol, set_name)] = scored
    return results


def summarise(scored: list[Scored], exclude_subsets: tuple[str, ...] = ()) -> dict:
    kept = [s for s in scored if s.subset not in exclude_subsets]
    out: dict = {"instances": len(kept)}
    if not kept:
        return out
    labelled = np.concatenate([s.labelled for s in kept])
    for metric in kept[0].correct:
        hits = np.concatenate([s.correct[metric] for s in kept])
        out[metric] = round(100.0 * hits.sum() / max(1, labelled.sum()), 2)
    oks = [s.oks for s in kept if s.oks is not None]
    if oks:
        out["oks"] = round(100.0 * float(np.mean(oks)), 2)
    out["joints_labelled"] = int(labelled.sum())
    return out


def report(results: dict) -> dict:
    table = {}
    for (protocol, set_name), scored in results.items():
        table[f"{protocol}/{set_name}"] = summarise(scored)
        if set_name == "coco":
            table[f"{protocol}/{set_name}/no-train"] = summarise(scored, (TRAIN_SUBSET,))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--detector", type=Path, help="a person detector: score the multi-person pipeline")
    parser.add_argument("--eval-dir", type=Path, default=EVAL)
    args = parser.parse_args(argv)
    model = PoseModel(args.model)
    detector = None
    if args.detector:
        from pose.detect import open_detector

        detector = open_detector(args.detector, threads=None)
    table = report(run(Pipeline(model, detector), args.eval_dir))
    if len(model.card.joints) == 17:
        table["multi/coco"] = coco_multi(Pipeline(model, detector, COCO_MAX_PEOPLE).people, model.card.joints,
                                         args.eval_dir)
    print(f"{model.card.name} ({model.card.quantization})")
    for key, row in table.items():
        print(f"  {key:<22} " + "  ".join(f"{k}={v}" for k, v in row.items()))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": model.card.name, "quantization": model.card.quantization,
                                         "results": table}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
