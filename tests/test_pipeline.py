"""Every person in a photo: detector -> crops -> one batched pose run -> people, on the real models."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import DATA, served_model
from local import function
from pose import image
from pose.detect import open_detector
from pose.model import Estimate, PoseModel
from pose.pipeline import Person, estimate_people, estimate_person, main_person, oks, oks_nms


@pytest.fixture(scope="module")
def pose_model() -> PoseModel:
    return PoseModel(served_model(), threads=2)


@pytest.fixture(scope="module")
def detector():
    return open_detector(function.detector_path(), threads=2)


def person(points, score: float, box=(0.0, 0.0, 100.0, 200.0)) -> Person:
    points = np.asarray(points, dtype=np.float64)
    return Person(points, np.full(len(points), 0.9), score, box, None)


def test_oks_is_one_for_the_same_joints_and_falls_with_distance():
    a = person([[10, 10], [50, 90], [60, 180]], 0.9)
    assert oks(a, a) == pytest.approx(1.0)
    near, far = (person(a.points + d, 0.5) for d in (3.0, 40.0))
    assert 0.9 < oks(a, near) < 1.0 and oks(a, far) < 0.2


def test_oks_nms_keeps_the_better_of_two_matching_people_and_every_distinct_one():
    best = person([[10, 10], [50, 90], [60, 180]], 0.9)
    echo = person(best.points + 1.0, 0.6)
    other = person(best.points + [300.0, 0.0], 0.7, (300.0, 0.0, 400.0, 200.0))
    kept = oks_nms([echo, other, best])
    assert kept == [best, other]


def scene_of_two(k: float = 0.45) -> tuple[np.ndarray, list[tuple[int, int]], float]:
    """pose.jpg pasted twice, side by side and apart, into a wide grey scene."""
    photo = Image.open(DATA / "pose.jpg").convert("RGB")
    small = photo.resize((round(photo.width * k), round(photo.height * k)), Image.Resampling.LANCZOS)
    scene = Image.new("RGB", (small.width * 3, round(small.height * 1.3)), (128, 128, 128))
    spots = [(small.width // 4, small.height // 8), (small.width * 7 // 4, small.height // 5)]
    for spot in spots:
        scene.paste(small, spot)
    return np.asarray(scene), spots, k


def test_two_people_in_one_photo_come_back_as_two_each_where_they_stand(pose_model, detector, pose_jpg):
    alone = estimate_people(image.read_photo(pose_jpg), pose_model, detector).people[0]
    sure = alone.scores >= 0.6
    rgb, spots, k = scene_of_two()
    people = estimate_people(rgb, pose_model, detector).people
    assert len(people) == 2
    found = sorted(people, key=lambda p: p.box[0])
    for p, (left, top) in zip(found, spots):
        expected = (alone.points + 0.5) * k - 0.5 + (left, top)
        error = np.linalg.norm(p.points[sure] - expected[sure], axis=1)
        assert np.median(error) < 0.03 * rgb.shape[0] / 1.3, (left, top, np.median(error))  # 3% of their height
        x0, y0, x1, y1 = p.box
        assert x0 - 20 <= expected[sure, 0].min() and expected[sure, 0].max() <= x1 + 20
        assert p.region is not None and 0 < p.score <= 1


def test_all_people_run_in_one_batch_with_the_same_joints_as_a_run_each(detector):
    rgb, _, _ = scene_of_two()
    batched = PoseModel(served_model(), threads=2)
    each = PoseModel(served_model(), threads=2)
    each.batched = False
    a = estimate_people(rgb, batched, detector).people
    b = estimate_people(rgb, each, detector).people
    assert len(a) == len(b) == 2
    for p, q in zip(a, b):
        assert np.allclose(p.points, q.points, atol=1e-3) and np.allclose(p.scores, q.scores, atol=1e-4)


def test_max_people_keeps_the_best_scored(pose_model, detector):
    pilots = image.read_photo((DATA / "Pilots.jpg").read_bytes())
    every = estimate_people(pilots, pose_model, detector, max_people=20).people
    assert len(every) >= 3
    rest = [p.score for p in every[1:]]  # the main person first, then best score first
    assert rest == sorted(rest, reverse=True)
    two = estimate_people(pilots, pose_model, detector, max_people=2).people
    assert len(two) <= 2


def test_a_photo_where_the_detector_finds_nobody_still_answers_one_person(pose_model, detector):
    blank = np.full((300, 400, 3), 90, np.uint8)
    assert len(detector(blank).scores) == 0
    found = estimate_people(blank, pose_model, detector)
    assert len(found.people) == 1 and found.people[0].points.shape == (len(pose_model.card.joints), 2)
    assert found.people[0].region is None


def test_the_main_person_is_the_detected_one_the_whole_photo_look_matches_not_the_best_scored():
    near = person([[100, 50], [110, 120], [105, 190]], 0.5, (80.0, 30.0, 140.0, 210.0))
    other = person([[400, 50], [410, 120], [405, 190]], 0.9, (380.0, 30.0, 440.0, 210.0))
    look = Estimate(near.points + 4.0, np.array([0.8, 0.7, 0.6]))
    assert main_person([other, near], look) is near
    doubtful = person(near.points, 0.4, near.box)  # under half the best score: the look alone does not decide
    assert main_person([other, doubtful], look) is None
    nowhere = Estimate(near.points + [200.0, 0.0], np.array([0.8, 0.7, 0.6]))
    assert main_person([other, near], nowhere) is None
    unsure = Estimate(near.points, np.array([0.8, 0.1, 0.1]))  # fewer than 3 joints placed: no look to follow
    assert main_person([other, near], unsure) is None


def test_a_large_person_beside_a_small_one_is_people_0(pose_model, detector):
    photo = Image.open(DATA / "pose.jpg").convert("RGB")
    small = photo.resize((photo.width // 3, photo.height // 3), Image.Resampling.LANCZOS)
    scene = Image.new("RGB", (photo.width + small.width + 40, photo.height), (128, 128, 128))
    scene.paste(photo, (0, 0))
    scene.paste(small, (photo.width + 20, 40))
    people = estimate_people(np.asarray(scene), pose_model, detector).people
    assert len(people) == 2
    assert people[0].box[0] < photo.width / 2 < people[0].box[2]  # the large one
    assert people[1].box[0] > photo.width


def test_a_person_the_detector_misses_is_still_answered_as_a_one_person_reply(pose_model, detector, pose_jpg):
    """A tight crop of pose.jpg cut at the knees and elbows: the detector may find a box or not; the
    pose model's own look at the photo finds the person, so people[0] is where the person is."""
    rgb = image.read_photo(pose_jpg)
    alone = estimate_person(rgb, pose_model)
    sure = alone.scores >= 0.6
    (x0, y0), (x1, y1) = alone.points[sure].min(axis=0), alone.points[sure].max(axis=0)
    cut = rgb[int(y0 + 0.2 * (y1 - y0)):int(y1 - 0.2 * (y1 - y0)), int(x0 + 0.15 * (x1 - x0)):int(x1 - 0.15 * (x1 - x0))]
    people = estimate_people(np.ascontiguousarray(cut), pose_model, detector).people
    whole = estimate_person(np.ascontiguousarray(cut), pose_model)
    placed = whole.scores >= 0.3
    assert oks(people[0], person(whole.points, 0.0, people[0].box), placed) > 0.5


def test_only_a_single_person_models_look_at_the_whole_photo_is_taken_for_a_person():
    """MoveNet (trained on whole photos) answers for a person the detector missed; PP-TinyPose (trained on
    person crops; card whole_photo false) does not, its look at a whole photo being no answer of its own."""
    from pose.card import parse

    assert PoseModel(served_model("movenet-thunder"), threads=1).card.whole_photo is True
    assert PoseModel(served_model("pp-tinypose-256x192"), threads=1).card.whole_photo is False
    text = json.dumps({**PoseModel(served_model("movenet-thunder"), threads=1).card.raw, "whole_photo": False})
    assert parse(text).whole_photo is False


def test_the_box_of_a_person_found_without_a_detector_is_on_the_photo_and_never_inverted():
    """A model may place every joint it is sure of above a small photo (a corrupt 48 x 32 JPEG did): the
    box then falls back to the photo, never (x, -0.5, x, -13) that the drawing refused with a 500."""
    from pose.pipeline import _extent

    rgb = np.zeros((32, 48, 3), np.uint8)
    above = Estimate(np.array([[34.4, -13.1], [30.0, -20.0], [20.0, -5.0]]), np.full(3, 0.9))
    assert _extent(above, rgb) == (-0.5, -0.5, 47.5, 31.5)
    straddling = Estimate(np.array([[10.0, -13.0], [20.0, 5.0], [30.0, 40.0], [12.0, 8.0]]), np.full(4, 0.9))
    assert _extent(straddling, rgb) == (12.0, 5.0, 20.0, 8.0)
