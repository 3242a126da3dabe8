"""People -> the API's JSON reply, and the annotated image with its media type.

The same shape serves POST /pose and the batch jobs (one result per photo). The README's
"The reply" section documents every field.
"""

from __future__ import annotations

import base64
import math
from typing import TYPE_CHECKING

import numpy as np

from . import draw
from .card import Card
from .region import Region

if TYPE_CHECKING:  # only named here: importing the pipeline would import onnxruntime, which shaping JSON never needs
    from .pipeline import People, Person
    from .track import TrackedPerson

MAX_ANNOTATED_BYTES = 3_900_000  # as base64 about 5.2 MB: the reply stays under Lambda's 6 MB


def person_json(person: Person, card: Card, threshold: float) -> dict:
    """One person: score, box, joints (one per model joint) and COCO's flat keypoint list."""
    visible = person.scores >= threshold
    joints = [
        {"id": i, "name": name, "x": _num(x, 2), "y": _num(y, 2), "score": _num(s, 4), "visible": bool(v)}
        for i, (name, (x, y), s, v) in enumerate(zip(card.joints, person.points, person.scores, visible))
    ]
    keypoints: list[float] = []
    for j in joints:
        keypoints += [j["x"], j["y"], 2] if j["visible"] else [0, 0, 0]
    left, top, right, bottom = person.box
    return {
        "score": _num(person.score, 4),
        "box": {"left": _num(left, 2), "top": _num(top, 2), "width": _num(right - left, 2),
                "height": _num(bottom - top, 2)},
        "joints": joints,
        "keypoints": keypoints,
        "region": _region(person.region),
    }


def tracked_person_json(tracked: TrackedPerson, card: Card, threshold: float) -> dict:
    """A person of a tracked frame: person_json plus `track_id` and `color`, the track's colour in the
    annotated video (draw.track_color) as "#rrggbb", so that a page draws each track as the video does."""
    return {**person_json(tracked.person, card, threshold), "track_id": tracked.track_id,
            "color": "#{:02x}{:02x}{:02x}".format(*draw.track_color(tracked.track_id))}


def skeleton_json(card: Card) -> list[dict]:
    """The limbs: each joint pair by name and by index."""
    return [{"from": card.joints[a], "to": card.joints[b], "pair": [a, b]} for a, b in card.skeleton]


def models_json(pose_model, detector) -> dict:
    """The reply's `model` and `detector`: what served it (name, version, quantization, file sha256)."""
    def describe(m) -> dict:
        return {"name": m.card.name, "version": m.card.version, "quantization": m.card.quantization,
                "sha256": m.sha256}
    return {"model": describe(pose_model), "detector": None if detector is None else describe(detector)}


def to_json(found: People, card: Card, threshold: float, image_size: tuple[int, int], models: dict) -> dict:
    """The reply without the annotated image: `people` best first; the top-level `joints`,
    `keypoints` and `region` are those of people[0] (the reply of a one-person service)."""
    people = [person_json(p, card, threshold) for p in found.people]
    first = people[0] if people else {"joints": [], "keypoints": [], "region": None}
    return {
        "people": people,
        "joints": first["joints"],
        "keypoints": first["keypoints"],
        "region": first["region"],
        "skeleton": skeleton_json(card),
        "image": {"width": int(image_size[0]), "height": int(image_size[1])},
        **models,
        "threshold": threshold,
    }


def annotated_image(rgb: np.ndarray, found: People, card: Card, threshold: float,
                    image_format: str = "png") -> tuple[str, bytes]:
    """(media type, bytes) of the drawing as `image_format` (draw.FORMATS), or a JPEG when a detailed
    photo's image would push the reply past Lambda's 6 MB."""
    drawing = draw.annotate(rgb, [(p.points, p.scores >= threshold, p.box) for p in found.people],
                            card.sides, card.skeleton, palette=image_format == "png")
    media_type, data = draw.encode(drawing, image_format)
    if len(data) > MAX_ANNOTATED_BYTES:
        return draw.encode(drawing, "jpeg")
    return media_type, data


def data_url(media_type: str, data: bytes) -> str:
    return f"data:{media_type};base64," + base64.b64encode(data).decode("ascii")


def _region(region: Region | None) -> dict | None:
    if region is None:
        return None
    return {"left": region.left, "top": region.top, "width": region.width, "height": region.height}


def _num(value: float, digits: int) -> float:
    """A JSON-safe rounded number: NaN and infinities (a broken model's output) become 0."""
    value = float(value)
    return round(value, digits) if math.isfinite(value) else 0.0
