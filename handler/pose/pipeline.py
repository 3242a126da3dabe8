"""Every person in a photo: detector -> person boxes -> the pose model on each crop -> people in photo pixels.

    photo -> detector -> boxes (score threshold, NMS) -> each box widened to the pose input's aspect
          -> the whole photo and all crops through the pose session (model.py: MAX_BATCH a run)
          -> joints back in photo pixels
          -> one person per box, scored (box score x mean of the joints the model is fairly sure
          of) -> duplicates removed (OKS NMS) -> the main person first, then best score first
          -> joint and person scores made probabilities by the card's maps (calibrate.py)

The main person is the one the pose model finds when it looks at the whole photo, as a
single-person service does (that look rides in the same batch as the crops, then takes its closer
look, closer_look below): the detected person whose joints match that look (OKS >= 0.3 over the joints
it placed with some confidence) comes first, if the detector and the pose model are at least half as sure
of them as of the best-scored person. When no detected person matches it, a single-person model's
look (card `whole_photo`, MoveNet's) is itself the main person: the detector missed someone the model
sees (cut by the photo's edges, say); for a top-down model (PP-TinyPose) the most prominent person
(score x box area) comes first instead. Then best score first. So a caller that reads only people[0] gets the person a one-person
reply described. Chosen on ../shared/eval: ordering by score alone put a small unlabelled passer-by
first on several photos; with PP-TinyPose, whose look at a whole photo is poorer than MoveNet's, a weak
match (or that look itself, when it matched nobody) put an unlabelled person first (docs/models.md has the
figures).

When the detector finds nobody (or there is no detector), the pose model looks at the whole photo,
with its closer look (closer_look below), so a photo of one person never answers with nobody.

A single-stage model (card output kind ``yolo_pose``) finds the people itself: unless its card asks for
the detector's crops and there is a detector, one run on the letterboxed photo gives its candidates, and
``own_people`` keeps those above the card's score threshold, after NMS, best score first.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from . import calibrate, detect
from .card import Card, ScoreMaps
from .decode import yolo_pose_candidates
from .image import prepare
from .model import Estimate, PoseModel
from .region import MIN_JOINTS, MIN_SCORE, Region, in_photo, person_region

MAX_PEOPLE = 20  # the most a reply holds, max_people's default: COCO keypoint AP 48.2 against 44.3 at 10 (docs/models.md)
JOINT_SCORE_FLOOR = 0.2  # a person's score averages the joints scored above this (as Simple Baselines)
OKS_SIGMA = 0.07  # one per-joint OKS sigma for every model (COCO's 17 average 0.072)
OKS_NMS = 0.9  # two people whose joints agree this much (OKS) are one
MAIN_OKS = 0.3  # the whole-photo look and a detected person are the same person from this OKS up
MAIN_SCORE_SHARE = 0.5  # ... and the look's person is the main one only when scored at least half the best


@dataclass(eq=False)
class Person:
    points: np.ndarray  # (K, 2) x, y in photo pixels
    scores: np.ndarray  # (K,)
    score: float  # how sure the service is that this is a person, in [0, 1]
    box: tuple[float, float, float, float]  # left, top, right, bottom in photo pixels
    region: Region | None  # the part of the photo the pose model saw; None: the whole photo


@dataclass
class People:
    people: list[Person]  # the main person first, then best score first
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detections(Protocol):
    boxes: np.ndarray  # (D, 4) left, top, right, bottom in photo pixels, best first
    scores: np.ndarray  # (D,)


class Detector(Protocol):
    def __call__(self, rgb: np.ndarray) -> Detections: ...


def estimate_people(rgb: np.ndarray, pose: PoseModel, detector: Detector | None,
                    max_people: int = MAX_PEOPLE) -> People:
    """(H, W, 3) uint8 RGB photo -> at most `max_people` people, main person first, with stage timings."""
    if pose.card.output.kind == "yolo_pose" and (detector is None or not uses_detector(pose.card)):
        return own_people(rgb, pose, max_people)
    t0 = time.perf_counter()
    found = detector(rgb) if detector is not None else None
    detect_ms = (time.perf_counter() - t0) * 1e3
    if found is None or len(found.scores) == 0:
        est = estimate_person(rgb, pose)
        alone = Person(est.points, est.scores, _joint_confidence(est.scores), _extent(est, rgb), est.region)
        return People(probabilities([alone], pose.card.score_maps, rgb), {"detect": detect_ms, **est.timings_ms})
    boxes, box_scores = found.boxes[:max_people], found.scores[:max_people]
    spec = pose.card.input
    regions = [Region.around(b, spec.width, spec.height) for b in boxes]
    batch = pose.look(rgb, [None, *regions])
    people = oks_nms([Person(p, s, float(b) * _joint_confidence(s), tuple(map(float, box)), r)
                      for p, s, b, box, r in zip(batch.points[1:], batch.scores[1:], box_scores, boxes, regions)])
    timings = {"detect": detect_ms, **batch.timings_ms}
    whole = closer_look(rgb, pose, Estimate(batch.points[0], batch.scores[0]))
    timings = {k: timings[k] + whole.timings_ms.get(k, 0.0) for k in timings}
    main = main_person(people, whole)
    if main is not None:
        people = [main, *(p for p in people if p is not main)]
    elif pose.card.whole_photo and int(np.sum(whole.scores >= MIN_SCORE)) >= MIN_JOINTS:
        # a single-person model sees a person the detector missed (cut by the photo's edges, say):
        # its look, closer look included, is the answer a one-person service gave
        people.insert(0, Person(whole.points, whole.scores, _joint_confidence(whole.scores), _extent(whole, rgb),
                                whole.region))
    else:
        people.sort(key=lambda p: -p.score * _area(p.box))  # the most prominent first
    return People(probabilities(people[:max_people], pose.card.score_maps, rgb), timings)


def people_in_boxes(rgb: np.ndarray, pose: PoseModel, boxes: list[tuple[float, float, float, float]]) -> People:
    """One person in each of the given person boxes (left, top, right, bottom in photo pixels), in their order,
    without the detector: the crops estimate_people makes of a detector's boxes, no whole-photo look, no NMS.
    For a tracker (track.py) whose boxes come from the previous frame's joints. Each person is scored by their
    joints alone (the box is given, not detected)."""
    spec = pose.card.input
    regions = [Region.around(b, spec.width, spec.height) for b in boxes]
    if not regions:
        return People([], {"detect": 0.0})
    batch = pose.look(rgb, regions)
    people = [Person(p, s, _joint_confidence(s), tuple(map(float, box)), r)
              for p, s, box, r in zip(batch.points, batch.scores, boxes, regions)]
    return People(probabilities(people, pose.card.score_maps, rgb), {"detect": 0.0, **batch.timings_ms})


def uses_detector(card: Card) -> bool:
    """Whether the person detector finds the people this model looks at: for every output kind but
    ``yolo_pose``, whose card says (``output.person_detector``); a model that finds them itself needs none."""
    return card.output.kind != "yolo_pose" or card.output.person_detector


def own_people(rgb: np.ndarray, pose: PoseModel, max_people: int = MAX_PEOPLE) -> People:
    """A single-stage model's own people in the whole photo: one run on the letterboxed photo -> its
    candidates scoring at least the card's score_threshold (the best detect.MAX_CANDIDATES) -> NMS at the
    card's nms_iou -> at most `max_people`, best score first, in photo pixels (the letterbox inverse)."""
    spec, out = pose.card.input, pose.card.output
    t0 = time.perf_counter()
    tensor, letterbox = prepare(rgb, spec)
    t1 = time.perf_counter()
    output = pose.run(tensor)
    t2 = time.perf_counter()
    c = yolo_pose_candidates(pose.card, output)
    points, scores, boxes, person = c.points[0], c.scores[0], c.boxes[0], c.person[0]
    finite = np.isfinite(points).all(axis=(1, 2)) & np.isfinite(scores).all(axis=1) & np.isfinite(boxes).all(axis=1)
    sure = np.flatnonzero(finite & (person >= out.score_threshold))
    best = sure[np.argsort(-person[sure], kind="stable")[:detect.MAX_CANDIDATES]]
    kept = best[detect.nms(boxes[best], person[best], out.nms_iou, max_people)]
    photo_boxes = detect.to_photo(boxes[kept], letterbox)
    people = [Person(letterbox.inverse(points[i]), scores[i], float(person[i]), tuple(map(float, b)), None)
              for i, b in zip(kept, photo_boxes)]
    t3 = time.perf_counter()
    timings = {"detect": 0.0, "preprocess": (t1 - t0) * 1e3, "inference": (t2 - t1) * 1e3,
               "postprocess": (t3 - t2) * 1e3}
    return People(probabilities(people, pose.card.score_maps, rgb), timings)


def estimate_person(rgb: np.ndarray, pose: PoseModel) -> Estimate:
    """One person in the whole photo, as a single-person service answers: the pose model's look at the whole
    photo, then its closer look (timings summed over both)."""
    return closer_look(rgb, pose, pose.estimate(rgb))


def closer_look(rgb: np.ndarray, pose: PoseModel, first: Estimate) -> Estimate:
    """When `first` (a look at the whole photo) found a person who is small in the photo, look
    again in a box around them (region.py); each joint is then the one of the look that scored
    it higher, so a joint the box cut off keeps its first place. `first` when there is no box."""
    spec = pose.card.input
    region = person_region(first.points, first.scores, rgb.shape[1], rgb.shape[0], spec.width, spec.height)
    if region is None:
        return first
    second = pose.estimate(rgb, region)
    closer = second.scores >= first.scores
    points = np.where(closer[:, None], second.points, first.points)
    timings = {k: first.timings_ms.get(k, 0.0) + second.timings_ms[k] for k in second.timings_ms}
    return Estimate(points, np.maximum(first.scores, second.scores), timings, region)


def probabilities(people: list[Person], maps: ScoreMaps | None, rgb: np.ndarray) -> list[Person]:
    """The people with their joint and person scores made probabilities by the card's maps (calibrate.py),
    and a joint placed outside the photo scored 0: a model may place the legs of a person cut by the frame
    below it, sure of them, but no photo shows them (the labels the maps were fitted on never have them).
    Everything before works on the model's raw scores, which its thresholds were chosen on."""
    height, width = rgb.shape[:2]
    return [replace(p, scores=np.where(in_photo(p.points, width, height),
                                       calibrate.joint_probabilities(maps, p.scores), 0.0),
                    score=calibrate.person_probability(maps, p.score)) for p in people]


def main_person(people: list[Person], whole: Estimate) -> Person | None:
    """The detected person the whole-photo look found: the one whose joints match it best, if by
    OKS >= MAIN_OKS over the joints that look placed with some confidence, and if the detector and pose
    model are at least MAIN_SCORE_SHARE as sure of them as of the best-scored person."""
    sure = whole.scores >= MIN_SCORE
    if int(sure.sum()) < MIN_JOINTS or not people:
        return None
    look = Person(whole.points, whole.scores, 0.0, (0.0, 0.0, 0.0, 0.0), None)
    match = max(people, key=lambda p: oks(p, look, sure))
    confident = match.score >= MAIN_SCORE_SHARE * max(p.score for p in people)
    return match if confident and oks(match, look, sure) >= MAIN_OKS else None


def _extent(est: Estimate, rgb: np.ndarray) -> tuple[float, float, float, float]:
    """The box of the joints placed with some confidence on the photo (the photo when none is): left <=
    right and top <= bottom always, whatever the model placed off the photo."""
    height, width = rgb.shape[:2]
    sure = est.points[(est.scores >= MIN_SCORE) & in_photo(est.points, width, height)]
    if not len(sure):
        return (-0.5, -0.5, width - 0.5, height - 0.5)
    (x0, y0), (x1, y1) = sure.min(axis=0), sure.max(axis=0)
    return (float(x0), float(y0), float(x1), float(y1))


def _joint_confidence(scores: np.ndarray) -> float:
    sure = scores[scores > JOINT_SCORE_FLOOR]
    return float(np.clip(sure.mean(), 0.0, 1.0)) if len(sure) else 0.0


def oks(a: Person, b: Person, joints: np.ndarray | None = None) -> float:
    """COCO's object keypoint similarity of two people's joints (all, or those `joints` selects),
    on the larger box's area."""
    area = max(_area(a.box), _area(b.box), 1.0)
    d2 = np.sum((a.points - b.points) ** 2, axis=1)
    similarity = np.exp(-d2 / (2 * area * (2 * OKS_SIGMA) ** 2))
    return float(np.mean(similarity if joints is None else similarity[joints]))


def _area(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def oks_nms(people: list[Person], threshold: float = OKS_NMS) -> list[Person]:
    """Best first; a person whose joints match a better-scored person's (OKS > threshold) is dropped."""
    kept: list[Person] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(oks(person, k) <= threshold for k in kept):
            kept.append(person)
    return kept
