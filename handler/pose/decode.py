"""Model outputs -> joint positions in model-input pixels and scores, with a person axis.

One table, ``DECODERS``, maps the card's output kind to its decoder. Every decoder takes the
batched output of one ``session.run`` (one row per person crop) and returns points ``(P, K, 2)``
and scores ``(P, K)``; an output that does not fit the card is refused, never reshaped into it.

A single-stage model (``yolo_pose``) gives many candidates per input: its decoder answers with the
best-scored one (the person of a crop), and ``yolo_pose_candidates`` gives them all, with their boxes
and person scores, for the pipeline to keep the people of a whole photo (threshold, NMS).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from .card import Card
from .errors import ModelError


def decode(card: Card, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The output of a batch of P inputs -> ((P, K, 2) x, y in input pixels, (P, K) scores)."""
    try:
        decoder = DECODERS[card.output.kind]
    except KeyError:
        raise ModelError(f"no decoder for output kind '{card.output.kind}'") from None
    return decoder(card, np.asarray(output))


def decode_heatmaps(card: Card, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, H, W) or (P, H, W, K) heatmaps -> peaks scaled from heatmap cells to input pixels."""
    maps = output if card.output.layout == "NCHW" else np.moveaxis(output, -1, 1)
    k = len(card.joints)
    if maps.ndim != 4 or maps.shape[1] != k:
        raise ModelError(f"invalid model card: the heatmap output of shape {output.shape} (layout "
                         f"{card.output.layout}) decodes to {maps.shape[1] if maps.ndim == 4 else '?'} joints, "
                         f"the card names {k}")
    points, scores = heatmap_peaks(maps)
    stride = np.array([card.input.width / maps.shape[3], card.input.height / maps.shape[2]])
    return points * stride, scores


def decode_keypoints(card: Card, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """"yx_score_normalized": (P, [1,] K, 3) rows of (y, x, score) in [0, 1] of the input."""
    k = len(card.joints)
    if output.ndim < 3 or output.shape[-2:] != (k, 3) or int(np.prod(output.shape[1:-2])) != 1:
        raise ModelError(f"invalid model card: the keypoint output of shape {output.shape} is not one row "
                         f"of (y, x, score) per joint and person: it decodes to "
                         f"{output.shape[-2] if output.ndim >= 2 else '?'} joints, the card names {k}")
    rows = output.reshape(output.shape[0], k, 3).astype(np.float64)
    points = np.stack([rows[..., 1] * card.input.width - 0.5, rows[..., 0] * card.input.height - 0.5], axis=-1)
    return points, rows[..., 2]


@dataclass(frozen=True)
class Candidates:
    """Every candidate person of each of P inputs, in input pixels with pixel centres on integers."""
    points: np.ndarray  # (P, N, K, 2) x, y
    scores: np.ndarray  # (P, N, K) joint (visibility) scores
    boxes: np.ndarray  # (P, N, 4) left, top, right, bottom
    person: np.ndarray  # (P, N) person scores


def yolo_pose_candidates(card: Card, output: np.ndarray) -> Candidates:
    """An Ultralytics YOLO-pose export's raw output, (P, 4 + 1 + 3K, N): per candidate cx, cy, w, h, the
    person score, then K x (x, y, score), positions in input pixels whose edges are integers (half a pixel
    more than ours) -> every candidate, unfiltered."""
    k = len(card.joints)
    if output.ndim != 3 or output.shape[1] != 5 + 3 * k or output.shape[2] == 0:
        raise ModelError(f"invalid model card: the yolo_pose output of shape {output.shape} is not "
                         f"(batch, 4 + 1 + 3 x {k} joints = {5 + 3 * k}, candidates)")
    rows = np.moveaxis(output, 1, 2).astype(np.float64)  # (P, N, 5 + 3K)
    centre, size = rows[..., 0:2], rows[..., 2:4]
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=-1) - 0.5
    joints = rows[..., 5:].reshape(*rows.shape[:2], k, 3)
    return Candidates(joints[..., :2] - 0.5, joints[..., 2], boxes, rows[..., 4])


def decode_yolo_pose(card: Card, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """"yolo_pose": the best-scored candidate of each input (a crop holds one person)."""
    c = yolo_pose_candidates(card, output)
    best = np.nan_to_num(c.person, nan=-np.inf).argmax(axis=1)
    rows = np.arange(len(best))
    return c.points[rows, best], c.scores[rows, best]


DECODERS: dict[str, Callable[[Card, np.ndarray], tuple[np.ndarray, np.ndarray]]] = {
    "heatmaps": decode_heatmaps,
    "keypoints": decode_keypoints,
    "yolo_pose": decode_yolo_pose,
}


def heatmap_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P, K, H, W) heatmaps -> ((P, K, 2) peak x, y in heatmap cells, (P, K) peak values).

    As Simple Baselines' get_max_preds + get_final_preds, batch first: the argmax of each map,
    then a quarter-cell shift toward the higher neighbour on each axis (only for peaks at least
    two cells inside the map, exactly as the reference code does), and the score is the peak
    value. A map whose peak is not positive gives (0, 0).
    """
    p, k, h, w = maps.shape
    flat = maps.reshape(p, k, -1)
    idx = flat.argmax(axis=2)
    scores = np.take_along_axis(flat, idx[..., None], axis=2)[..., 0].astype(np.float64)
    px, py = idx % w, idx // w
    points = np.stack([px, py], axis=-1).astype(np.float64)
    points[scores <= 0] = 0.0
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1) & (scores > 0)
    b, j = np.nonzero(inside)
    x, y = px[b, j], py[b, j]
    points[b, j, 0] += 0.25 * np.sign(maps[b, j, y, x + 1].astype(np.float64) - maps[b, j, y, x - 1])
    points[b, j, 1] += 0.25 * np.sign(maps[b, j, y + 1, x].astype(np.float64) - maps[b, j, y - 1, x])
    return points, scores
