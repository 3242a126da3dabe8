"""Regions of the photo a pose model looks at: around a detected person, and a closer look.

A closer look: the region around the person that the first pass found, to run the model again on.

A single-person model sees the whole photo shrunk into its input (256 x 256 for MoveNet): a person
who covers a third of the photo's height gets a third of the model's resolution. So the service runs
the model once on the whole photo, boxes the joints it placed with some confidence, widens the box
to the input's aspect ratio, and, when that box shows the person at least twice as large, runs the
model again on it (pipeline.closer_look keeps, joint by joint, the pass that scored higher). Chosen on
../shared/eval so that whole photos gain (MoveNet OKS +8) and tight crops of one person, where a
first pass already sees well, lose nothing that matters (OKS -0.5); `make report` has the figures.
Every box has the input's aspect, so a 3:4 input (PP-TinyPose's 192 x 256) gets a 3:4 box. A top-down
model like TinyPose sees little in a whole photo, so the second look matters more (whole photos OKS
31.9 -> 44.4), but does not reach MoveNet's one-person figures (69.2): with no detector, or when it
finds nobody, MoveNet places one person's joints better (tests/test_eval_served.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MIN_SCORE = 0.3  # the joints the box is made of: placed with at least this score...
MIN_JOINTS = 3  # ...and at least this many of them, inside the photo
MARGIN = 1.5  # the box is this much larger than the joints' extent (head top, hands, feet stick out)
MIN_ZOOM = 2.0  # no second look unless it shows the person at least this much larger
BOX_MARGIN = 1.25  # a detector's person box is widened this much (as top-down pose models were trained)


@dataclass(frozen=True)
class Region:
    """A box in photo pixels (integer corners); it may reach past the photo's edges (image.prepare reads only
    the part inside the photo and pads the rest black, as the letterbox pads)."""

    left: int
    top: int
    width: int
    height: int

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        """(..., 2) pixels of the crop -> pixels of the photo."""
        return np.asarray(points, dtype=np.float64) + (self.left, self.top)

    @classmethod
    def around(cls, box: np.ndarray, in_w: int, in_h: int, margin: float = BOX_MARGIN) -> "Region":
        """A person box (left, top, right, bottom in photo pixels) widened `margin` times and to the
        model input's aspect, about its centre: what a top-down pose model expects to see."""
        x0, y0, x1, y1 = (float(v) for v in box)
        aspect = in_w / in_h
        box_h = max((y1 - y0) * margin, (x1 - x0) * margin / aspect, 1.0)
        return cls.centred((x0 + x1) / 2, (y0 + y1) / 2, box_h * aspect, box_h)

    @classmethod
    def centred(cls, cx: float, cy: float, width: float, height: float) -> "Region":
        return cls(int(round(cx - width / 2)), int(round(cy - height / 2)),
                   max(1, int(round(width))), max(1, int(round(height))))


def in_photo(points: np.ndarray, width: int, height: int) -> np.ndarray:
    """(..., 2) points -> (...,) whether each lies on the photo's pixels (pixel centres on integers)."""
    x, y = points[..., 0], points[..., 1]
    return (x >= -0.5) & (x <= width - 0.5) & (y >= -0.5) & (y <= height - 0.5)


def person_region(points: np.ndarray, scores: np.ndarray, width: int, height: int,
                  in_w: int, in_h: int) -> Region | None:
    """The box to look at again for joints `points` (photo pixels) with `scores` in a `width` x
    `height` photo and a model input of `in_w` x `in_h`; None when too few joints say where the
    person is, or when the box would not show them MIN_ZOOM times larger than the whole photo does."""
    points = np.asarray(points, dtype=np.float64)
    inside = in_photo(points, width, height)
    sure = points[(np.asarray(scores) >= MIN_SCORE) & inside]
    if len(sure) < MIN_JOINTS:
        return None
    (x0, y0), (x1, y1) = sure.min(axis=0), sure.max(axis=0)
    aspect = in_w / in_h
    box_h = max((y1 - y0) * MARGIN, (x1 - x0) * MARGIN / aspect, 1.0)
    box_w = box_h * aspect
    zoom = (in_w / box_w) / min(in_w / width, in_h / height)  # the box's scale over the letterbox's
    if zoom < MIN_ZOOM:
        return None
    return Region.centred((x0 + x1) / 2, (y0 + y1) / 2, box_w, box_h)
