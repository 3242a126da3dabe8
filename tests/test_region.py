"""The closer look's box (pose/region.py): when there is one, where it is, and what it crops."""

from __future__ import annotations

import numpy as np
import pytest

from pose.region import MIN_ZOOM, Region, person_region


def standing(x0: float, y0: float, height: float, n: int = 12) -> np.ndarray:
    """n joints of a person `height` pixels tall and a third as wide, top-left at (x0, y0)."""
    t = np.linspace(0, 1, n)
    return np.stack([x0 + height / 3 * (t * 7 % 1), y0 + height * t], axis=1)


def test_a_small_person_gets_a_box_of_the_input_aspect_around_them():
    points = standing(400, 300, 200)
    region = person_region(points, np.full(12, 0.9), 1600, 1200, 256, 256)
    assert region is not None and region.width == region.height
    assert min(1600, 1200) / region.height >= MIN_ZOOM
    assert region.height == pytest.approx(200 * 1.5, abs=1)  # MARGIN around the joints' extent
    assert region.left <= points[:, 0].min() and points[:, 0].max() <= region.left + region.width
    assert region.top <= points[:, 1].min() and points[:, 1].max() <= region.top + region.height
    wide = person_region(points, np.full(12, 0.9), 1600, 1200, 192, 256)  # a 3:4 input, as Simple Baselines'
    assert wide.width / wide.height == pytest.approx(0.75, abs=0.01)


def test_no_box_when_the_person_already_fills_the_photo():
    points = standing(100, 20, 560)
    assert person_region(points, np.full(12, 0.9), 640, 600, 256, 256) is None


def test_the_box_must_be_at_least_min_zoom_closer():
    # A joints' extent of 100 px -> a 150 px box; in a 400 px photo that is 400 / 150 = 2.7x closer.
    assert 400 / 150 >= MIN_ZOOM
    assert person_region(standing(50, 50, 100), np.full(12, 0.9), 400, 400, 256, 256) is not None
    # In a 250 px photo the box is 250 / 150 = 1.7x closer: below MIN_ZOOM.
    assert 250 / 150 < MIN_ZOOM
    assert person_region(standing(20, 20, 100), np.full(12, 0.9), 250, 250, 256, 256) is None


def test_no_box_from_too_few_sure_joints_or_joints_outside_the_photo():
    points = standing(400, 300, 200)
    scores = np.full(12, 0.1)
    scores[:2] = 0.9
    assert person_region(points, scores, 1600, 1200, 256, 256) is None
    # Joints placed on the letterbox's padding (outside the photo) say nothing of where the person is.
    assert person_region(points + (2000, 0), np.full(12, 0.9), 1600, 1200, 256, 256) is None


def test_to_photo_adds_the_regions_corner():
    region = Region(left=-10, top=80, width=40, height=40)
    assert np.allclose(region.to_photo([[10.0, 5.0]]), [[0.0, 85.0]])
