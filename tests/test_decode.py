"""Heatmap decoding as Simple Baselines' get_final_preds, on synthetic heatmaps; keypoint outputs;
a person axis everywhere: (P, K, 2) points and (P, K) scores."""

from __future__ import annotations

import numpy as np
import pytest

from pose import card as model_card
from pose.decode import decode, heatmap_peaks
from pose.errors import ModelError


def gaussian(h: int, w: int, x: float, y: float, sigma: float = 2.0) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma ** 2)).astype(np.float32)


def test_peak_at_integer_cell_is_found_exactly_without_shift():
    maps = gaussian(64, 64, 20, 30)[None, None]
    points, scores = heatmap_peaks(maps)
    assert points.tolist() == [[[20.0, 30.0]]] and scores[0, 0] == pytest.approx(1.0)


@pytest.mark.parametrize("x,y,expected", [
    (20.3, 30.0, (20.25, 30.0)), (19.7, 30.0, (19.75, 30.0)),
    (20.0, 30.4, (20.0, 30.25)), (20.0, 29.6, (20.0, 29.75)), (20.2, 29.8, (20.25, 29.75)),
])
def test_quarter_cell_shift_goes_toward_the_higher_neighbour(x, y, expected):
    points, _ = heatmap_peaks(gaussian(64, 64, x, y)[None, None])
    assert tuple(points[0, 0]) == expected


@pytest.mark.parametrize("x,y", [(1, 30), (63, 30), (30, 1), (30, 63), (0, 0), (2, 62)])
def test_shift_only_for_peaks_strictly_inside_cells_2_to_w_minus_2(x, y):
    """get_final_preds shifts only when 1 < px < W - 1 and 1 < py < H - 1."""
    m = gaussian(64, 64, x + 0.3, y + 0.3)
    points, _ = heatmap_peaks(m[None, None])
    inside = 1 < x < 63 and 1 < y < 63
    assert tuple(points[0, 0]) == ((x + 0.25, y + 0.25) if inside else (x, y))


def test_a_map_without_positive_peak_gives_origin_and_its_score():
    maps = np.stack([np.full((8, 8), -1.0, np.float32), gaussian(8, 8, 4, 4)])
    points, scores = heatmap_peaks(maps[None])
    assert points[0, 0].tolist() == [0.0, 0.0] and scores[0, 0] == -1.0
    assert points[0, 1].tolist() == [4.0, 4.0]


def test_each_person_of_a_batch_is_decoded_on_their_own_maps():
    """Batch first, as get_max_preds: person p's joints come from maps[p] only, shift included."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(3, 45, size=(4, 3, 2))
    maps = np.stack([np.stack([gaussian(48, 48, x, y) * (0.5 + 0.1 * p) for x, y in person])
                     for p, person in enumerate(centres)])
    points, scores = heatmap_peaks(maps)
    assert points.shape == (4, 3, 2) and scores.shape == (4, 3)
    for p in range(4):
        alone, alone_scores = heatmap_peaks(maps[p:p + 1])
        assert np.array_equal(points[p], alone[0]) and np.array_equal(scores[p], alone_scores[0])
        assert np.allclose(points[p], centres[p], atol=0.5)


def card_with(output: dict, width: int = 256, height: int = 256, n: int = 3) -> model_card.Card:
    import json
    return model_card.parse(json.dumps({
        "schema": 1, "name": "t", "version": "1", "source": "test", "license": "MIT", "quantization": "fp32",
        "input": {"name": "in", "height": height, "width": width, "layout": "NCHW", "dtype": "float32",
                  "color": "RGB", "scaling": {"kind": "raw"}},
        "output": output, "joints": [f"j{i}" for i in range(n)], "sides": ["center"] * n,
        "skeleton": [[0, 1]], "flip_pairs": [], "threshold": 0.6}))


def test_heatmap_cells_map_to_input_pixels_by_the_stride_in_both_layouts():
    card = card_with({"kind": "heatmaps", "name": "hm", "layout": "NCHW"}, width=192, height=256)
    maps = np.stack([gaussian(64, 48, 10, 20), gaussian(64, 48, 40, 60), gaussian(64, 48, 5.3, 7)])
    points, scores = decode(card, maps[None])
    assert np.allclose(points, [[[40, 80], [160, 240], [4 * 5.25, 28]]])
    nhwc = card_with({"kind": "heatmaps", "name": "hm", "layout": "NHWC"}, width=192, height=256)
    points2, scores2 = decode(nhwc, np.moveaxis(maps, 0, -1)[None])
    assert np.allclose(points, points2) and np.allclose(scores, scores2)


def test_keypoint_rows_are_y_x_score_normalised_to_the_input():
    card = card_with({"kind": "keypoints", "name": "kp", "encoding": "yx_score_normalized"}, width=256, height=256)
    out = np.array([[[[0.5, 0.25, 0.9], [0.0, 1.0, 0.1], [0.75, 0.5, 0.5]]]], np.float32)
    points, scores = decode(card, out)
    assert np.allclose(points, [[[63.5, 127.5], [255.5, -0.5], [127.5, 191.5]]])
    assert np.allclose(scores, [[0.9, 0.1, 0.5]])
    two, two_scores = decode(card, np.concatenate([out, out[:, :, ::-1]]))
    assert two.shape == (2, 3, 2) and np.allclose(two[1], points[0][::-1]) and np.allclose(two_scores[1], [0.5, 0.1, 0.9])


@pytest.mark.parametrize("shape", [(1, 1, 6, 3), (3, 3), (1, 1, 3, 2), (9,), (1, 2, 3, 3)])
def test_a_keypoint_output_that_does_not_fit_the_card_is_refused_not_reshaped(shape):
    """(1, 1, 6, 3) would once have read as two people strung into one list of six joints."""
    card = card_with({"kind": "keypoints", "name": "kp", "encoding": "yx_score_normalized"})
    with pytest.raises(ModelError):
        decode(card, np.zeros(shape, np.float32))


def test_heatmaps_of_another_joint_count_are_refused():
    card = card_with({"kind": "heatmaps", "name": "hm", "layout": "NCHW"})
    with pytest.raises(ModelError):
        decode(card, np.zeros((1, 4, 64, 64), np.float32))
