"""Model outputs -> joint positions in model-input pixels and scores, as the card's output spec says."""

from __future__ import annotations

import numpy as np

from .card import Card


def decode(card: Card, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One model output (batch of 1) -> ((N, 2) x, y in input pixels, (N,) scores)."""
    spec = card.output
    if spec.kind == "heatmaps":
        maps = output[0] if spec.layout == "NCHW" else np.moveaxis(output[0], -1, 0)
        points, scores = heatmap_peaks(maps)
        stride_x = card.input.width / maps.shape[2]
        stride_y = card.input.height / maps.shape[1]
        return points * np.array([stride_x, stride_y]), scores
    # keypoints, "yx_score_normalized": (..., N, 3) rows of (y, x, score) in [0, 1] of the input
    rows = np.asarray(output, dtype=np.float64).reshape(-1, 3)
    points = np.stack([rows[:, 1] * card.input.width - 0.5, rows[:, 0] * card.input.height - 0.5], axis=1)
    return points, rows[:, 2]


def heatmap_peaks(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(N, H, W) heatmaps -> ((N, 2) peak x, y in heatmap cells, (N,) peak values).

    As Simple Baselines' get_final_preds: the argmax of each map, then a quarter-cell shift toward
    the higher neighbour on each axis (only for peaks at least two cells inside the map, exactly
    as the reference code does), and the score is the peak value. A map whose peak is not positive
    gives (0, 0).
    """
    n, h, w = maps.shape
    flat = maps.reshape(n, -1)
    idx = flat.argmax(axis=1)
    scores = flat[np.arange(n), idx].astype(np.float64)
    px, py = idx % w, idx // w
    points = np.stack([px, py], axis=1).astype(np.float64)
    points[scores <= 0] = 0.0
    inside = (px > 1) & (px < w - 1) & (py > 1) & (py < h - 1) & (scores > 0)
    for j in np.flatnonzero(inside):
        m, x, y = maps[j], px[j], py[j]
        points[j, 0] += 0.25 * np.sign(float(m[y, x + 1]) - float(m[y, x - 1]))
        points[j, 1] += 0.25 * np.sign(float(m[y + 1, x]) - float(m[y - 1, x]))
    return points, scores
