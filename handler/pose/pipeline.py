"""Every person in a photo: detector -> person boxes -> one batched pose run -> people in photo pixels.

    photo -> detector -> boxes (score threshold, NMS) -> each box widened to the pose input's aspect
          -> all crops in one session.run -> joints back in photo pixels -> one person per box,
          scored (box score x mean of the joints the model is fairly sure of) -> duplicates removed
          (OKS NMS) -> best first

When the detector finds nobody (or there is no detector), the pose model looks at the whole photo,
with its closer look (model.py), so a photo of one person never answers with nobody.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from .model import PoseModel
from .region import MIN_SCORE, Region

MAX_PEOPLE = 10  # the default of the request's max_people
JOINT_SCORE_FLOOR = 0.2  # a person's score averages the joints scored above this (as Simple Baselines)
OKS_SIGMA = 0.07  # one per-joint OKS sigma for every model (COCO's 17 average 0.072)
OKS_NMS = 0.9  # two people whose joints agree this much (OKS) are one


@dataclass
class Person:
    points: np.ndarray  # (K, 2) x, y in photo pixels
    scores: np.ndarray  # (K,)
    score: float  # how sure the service is that this is a person, in [0, 1]
    box: tuple[float, float, float, float]  # left, top, right, bottom in photo pixels
    region: Region | None  # the part of the photo the pose model saw; None: the whole photo


@dataclass
class People:
    people: list[Person]  # best first
    timings_ms: dict[str, float] = field(default_factory=dict)


class Detections(Protocol):
    boxes: np.ndarray  # (D, 4) left, top, right, bottom in photo pixels, best first
    scores: np.ndarray  # (D,)


class Detector(Protocol):
    def __call__(self, rgb: np.ndarray) -> Detections: ...


def estimate_people(rgb: np.ndarray, pose: PoseModel, detector: Detector | None,
                    max_people: int = MAX_PEOPLE) -> People:
    """(H, W, 3) uint8 RGB photo -> at most `max_people` people, best first, with stage timings."""
    t0 = time.perf_counter()
    found = detector(rgb) if detector is not None else None
    detect_ms = (time.perf_counter() - t0) * 1e3
    if found is None or len(found.scores) == 0:
        return _whole_photo(rgb, pose, detect_ms)
    boxes, box_scores = found.boxes[:max_people], found.scores[:max_people]
    spec = pose.card.input
    regions = [Region.around(b, spec.width, spec.height) for b in boxes]
    batch = pose.look(rgb, regions)
    people = [Person(p, s, float(b) * _joint_confidence(s), tuple(map(float, box)), r)
              for p, s, b, box, r in zip(batch.points, batch.scores, box_scores, boxes, regions)]
    return People(oks_nms(people), {"detect": detect_ms, **batch.timings_ms})


def _whole_photo(rgb: np.ndarray, pose: PoseModel, detect_ms: float) -> People:
    est = pose.estimate(rgb)
    height, width = rgb.shape[:2]
    sure = est.points[est.scores >= MIN_SCORE]
    if len(sure):
        box = (*np.clip(sure.min(axis=0), -0.5, None), *np.minimum(sure.max(axis=0), (width - 0.5, height - 0.5)))
    else:
        box = (-0.5, -0.5, width - 0.5, height - 0.5)
    person = Person(est.points, est.scores, _joint_confidence(est.scores), tuple(map(float, box)), est.region)
    return People([person], {"detect": detect_ms, **est.timings_ms})


def _joint_confidence(scores: np.ndarray) -> float:
    sure = scores[scores > JOINT_SCORE_FLOOR]
    return float(np.clip(sure.mean(), 0.0, 1.0)) if len(sure) else 0.0


def oks(a: Person, b: Person) -> float:
    """COCO's object keypoint similarity of two people's joints, on the larger box's area."""
    area = max(_area(a.box), _area(b.box), 1.0)
    d2 = np.sum((a.points - b.points) ** 2, axis=1)
    return float(np.mean(np.exp(-d2 / (2 * area * (2 * OKS_SIGMA) ** 2))))


def _area(box: tuple[float, float, float, float]) -> float:
    return max(box[2] - box[0], 0.0) * max(box[3] - box[1], 0.0)


def oks_nms(people: list[Person], threshold: float = OKS_NMS) -> list[Person]:
    """Best first; a person whose joints match a better-scored person's (OKS > threshold) is dropped."""
    kept: list[Person] = []
    for person in sorted(people, key=lambda p: -p.score):
        if all(oks(person, k) <= threshold for k in kept):
            kept.append(person)
    return kept
