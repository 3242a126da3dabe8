"""The tracker (pose/track.py) on synthetic scenes: people as COCO skeletons moving on a blank frame, a fake
detector that returns who is in view and a fake pose model that finds, in a box, the person whose centre is
nearest the box's (or nobody)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from pose.pipeline import People, Person
from pose.track import OneEuro, TrackOptions, Tracker, Tracks, follow_box

WIDTH, HEIGHT, FPS = 640, 480, 10
FRAME = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
# COCO's 17 joints of a standing person 1 unit tall, feet at y = 0.5: nose, eyes, ears, shoulders, elbows,
# wrists, hips, knees, ankles (left, right)
STANDING = np.array([[0, -0.42], [-0.02, -0.44], [0.02, -0.44], [-0.05, -0.43], [0.05, -0.43],
                     [-0.1, -0.3], [0.1, -0.3], [-0.14, -0.12], [0.14, -0.12], [-0.15, 0.05], [0.15, 0.05],
                     [-0.07, 0.03], [0.07, 0.03], [-0.08, 0.27], [0.08, 0.27], [-0.08, 0.5], [0.08, 0.5]])
ARMS_UP = STANDING.copy()
ARMS_UP[7:11] = [[-0.16, -0.48], [0.16, -0.48], [-0.16, -0.66], [0.16, -0.66]]


def skeleton(cx: float, cy: float, height: float = 160, arms_up: bool = False) -> np.ndarray:
    return (ARMS_UP if arms_up else STANDING) * height + (cx, cy)


def person(points: np.ndarray, score: float = 0.9) -> Person:
    (x0, y0), (x1, y1) = points.min(axis=0), points.max(axis=0)
    return Person(points, np.full(len(points), score), score, (x0, y0, x1, y1), None)


class Scene:
    """Who is where on each frame: name -> frame -> skeleton points or None (out of view). Counts the
    detector's calls."""

    def __init__(self, paths: dict, score: dict | None = None):
        self.paths, self.frame, self.detections = paths, 0, 0
        self.score = score or {}

    def visible(self) -> dict[str, np.ndarray]:
        return {name: pts for name, path in self.paths.items() if (pts := path(self.frame)) is not None}

    def _person(self, name: str, pts: np.ndarray) -> Person:
        return person(pts, self.score.get(name, lambda f: 0.9)(self.frame))

    def detect_all(self, rgb: np.ndarray) -> People:
        self.detections += 1
        return People([self._person(n, p) for n, p in self.visible().items()])

    def look_in(self, rgb: np.ndarray, boxes: list) -> People:
        found = []
        for x0, y0, x1, y1 in boxes:
            inside = [(np.hypot(*(p.mean(axis=0) - ((x0 + x1) / 2, (y0 + y1) / 2))), n, p)
                      for n, p in self.visible().items()
                      if x0 <= p.mean(axis=0)[0] <= x1 and y0 <= p.mean(axis=0)[1] <= y1]
            if inside:
                _, name, pts = min(inside, key=lambda item: item[0])
                found.append(self._person(name, pts))
            else:  # the model's guess in an empty crop: joints at random, scored low
                rng = np.random.default_rng(len(found))
                found.append(person(rng.uniform((x0, y0), (x1, y1), (17, 2)), 0.05))
        return People(found)


def run(scene: Scene, frames: int, options: TrackOptions = TrackOptions()) -> list[dict[str, int]]:
    """Per frame: scene name -> the track id the tracker gave that person (by their exact joints)."""
    tracker = Tracker(scene.detect_all, scene.look_in, options)
    out = []
    for f in range(frames):
        scene.frame = f
        result = tracker.step(FRAME, f / FPS)
        ids = {}
        for name, pts in scene.visible().items():
            same = [tp.track_id for tp in result.people if np.allclose(tp.person.points, pts)]
            if same:
                ids[name] = same[0]
        out.append(ids)
    return out


def ids_of(per_frame: list[dict[str, int]], name: str) -> set[int]:
    return {ids[name] for ids in per_frame if name in ids}


@pytest.mark.parametrize("detect_every", [1, 5])
def test_crossing_people_keep_their_ids(detect_every):
    # A (arms up) walks right, B (further away: smaller, higher) walks left: they overlap most at frame 15
    scene = Scene({"A": lambda f: skeleton(200 + 8 * f, 240, arms_up=True),
                   "B": lambda f: skeleton(440 - 8 * f, 270, 130)})
    per_frame = run(scene, 31, TrackOptions(detect_every=detect_every))
    # following boxes, a frame about the overlap may find only one of them (both boxes hold the same
    # person): the next frame is then a detection frame
    assert sum(len(ids) < 2 for ids in per_frame) <= (0 if detect_every == 1 else 2)
    assert len(ids_of(per_frame, "A")) == 1 and len(ids_of(per_frame, "B")) == 1, per_frame
    assert ids_of(per_frame, "A") != ids_of(per_frame, "B")


def test_matching_prefers_the_pose_when_boxes_coincide():
    tracks = Tracks(TrackOptions())
    up, down = person(skeleton(320, 240, arms_up=True)), person(skeleton(320, 240))
    first = {tp.track_id: tp.person for tp in tracks.match([up, down])}
    # the same two people, given in the other order and moved a little: each keeps its id by its pose
    again = tracks.match([person(skeleton(324, 240)), person(skeleton(316, 240, arms_up=True))])
    for tp in again:
        assert np.allclose(first[tp.track_id].points[9:11, 1], tp.person.points[9:11, 1])


def test_short_occlusion_keeps_the_id_and_a_long_one_gives_a_new_one():
    def hidden(start, end):
        return lambda f: None if start <= f < end else skeleton(100 + 4 * f, 240)

    short = run(Scene({"A": hidden(5, 12)}), 20, TrackOptions(keep_missing=10))
    assert ids_of(short, "A") == {1}
    long = run(Scene({"A": hidden(5, 20)}), 25, TrackOptions(keep_missing=10))
    assert ids_of(long, "A") == {1, 2}


def test_a_new_person_gets_a_new_id_by_the_next_detection_frame():
    scene = Scene({"A": lambda f: skeleton(150, 240), "B": lambda f: skeleton(300, 240),
                   "C": lambda f: skeleton(500, 240) if f >= 7 else None})
    per_frame = run(scene, 16, TrackOptions(detect_every=5))
    assert ids_of(per_frame, "A") == {1} and ids_of(per_frame, "B") == {2}
    assert ids_of(per_frame, "C") == {3}
    assert "C" not in per_frame[9] and "C" in per_frame[10]  # found by the detection of frame 10


def test_detection_runs_only_every_kth_frame_while_tracking_is_sure():
    scene = Scene({"A": lambda f: skeleton(150 + 3 * f, 240), "B": lambda f: skeleton(450 - 3 * f, 240)})
    run(scene, 20, TrackOptions(detect_every=5))
    assert scene.detections == 4  # frames 0, 5, 10, 15


def test_a_low_scored_person_makes_the_next_frame_a_detection_frame():
    scene = Scene({"A": lambda f: skeleton(150, 240)}, score={"A": lambda f: 0.1 if f == 2 else 0.9})
    tracker = Tracker(scene.detect_all, scene.look_in, TrackOptions(detect_every=10, unsure_score=0.3))
    detected = []
    for f in range(6):
        scene.frame = f
        detected.append(tracker.step(FRAME, f / FPS).detected)
    assert detected == [True, False, False, True, False, False]


def test_a_person_who_leaves_ends_their_track_and_detection_follows():
    scene = Scene({"A": lambda f: skeleton(150, 240), "B": lambda f: skeleton(450, 240) if f < 3 else None})
    tracker = Tracker(scene.detect_all, scene.look_in, TrackOptions(detect_every=10, keep_missing=2))
    detected, seen = [], []
    for f in range(10):
        scene.frame = f
        result = tracker.step(FRAME, f / FPS)
        detected.append(result.detected)
        seen.append([tp.track_id for tp in result.people])
    assert seen[3] == [1]  # B's box holds nobody: not reported
    assert detected[:5] == [True, False, False, False, True]  # frame 3 finds B's box empty: frame 4 detects
    assert [t.track_id for t in tracker.tracks.live] == [1]  # B's track ended after keep_missing frames


def test_two_tracks_converging_on_one_person_keep_one():
    # A and B stand apart, then B's followed box holds only A (B vanished where A stands)
    scene = Scene({"A": lambda f: skeleton(300, 240), "B": lambda f: skeleton(310, 240) if f < 2 else None})
    tracker = Tracker(scene.detect_all, scene.look_in, TrackOptions(detect_every=10))
    for f in range(3):
        scene.frame = f
        result = tracker.step(FRAME, f / FPS)
    assert [tp.track_id for tp in result.people] == [1]


def test_tracks_stay_bounded_over_a_stream_of_passers_by():
    # a new person crosses every 10 frames; each stays 30 frames: at most 3 in view, plus the ones kept missing
    def passer(k):
        return lambda f: skeleton(20 + 5 * (f - 10 * k), 100 + (k % 3) * 150, 100) if 0 <= f - 10 * k < 30 else None

    scene = Scene({f"P{k}": passer(k) for k in range(30)})
    tracker = Tracker(scene.detect_all, scene.look_in, TrackOptions(detect_every=3, keep_missing=5))
    most = 0
    for f in range(300):
        scene.frame = f
        tracker.step(FRAME, f / FPS)
        most = max(most, len(tracker.tracks.live))
    assert most <= 3 + 3 and tracker.tracks.next_id == 31


def test_follow_box_holds_the_joints_and_needs_three():
    p = person(skeleton(320, 240))
    x0, y0, x1, y1 = follow_box(p, WIDTH, HEIGHT)
    assert x0 < p.points[:, 0].min() and x1 > p.points[:, 0].max()
    assert y0 < p.points[:, 1].min() and y1 > p.points[:, 1].max()
    scores = np.zeros(17)
    scores[:2] = 0.9
    assert follow_box(Person(p.points, scores, 0.9, p.box, None), WIDTH, HEIGHT) is None


def test_one_euro_damps_jitter_at_rest_and_follows_a_move():
    rng = np.random.default_rng(0)
    still = 100 + rng.normal(0, 2, (60, 17, 2))
    f = OneEuro(min_cutoff=1.0, beta=0.01)
    smoothed = np.array([f(x, t / 30) for t, x in enumerate(still)])
    assert smoothed[10:].std() < 0.5 * still[10:].std()
    moving = OneEuro(min_cutoff=1.0, beta=0.01)
    path = [moving(np.full((17, 2), 10.0 * t), t / 30) for t in range(60)]  # 300 px/s
    assert np.abs(path[-1] - 590).max() < 20  # lags by under 20 px


def test_smoothing_is_off_by_default_and_changes_only_the_reported_joints():
    rng = np.random.default_rng(1)
    frames = [skeleton(320, 240) + rng.normal(0, 3, (17, 2)) for _ in range(20)]
    raw, smooth = Tracks(TrackOptions()), Tracks(TrackOptions(smooth=True))
    raw_out = [raw.match([person(p)], t / FPS)[0].person.points for t, p in enumerate(frames)]
    smooth_out = [smooth.match([person(p)], t / FPS)[0].person.points for t, p in enumerate(frames)]
    assert all(np.array_equal(a, b) for a, b in zip(raw_out, frames))
    assert np.std(np.diff(smooth_out, axis=0)) < 0.5 * np.std(np.diff(raw_out, axis=0))
    assert np.array_equal(smooth.live[0].person.points, frames[-1])  # matching goes on on the raw joints


def test_options_are_checked():
    with pytest.raises(ValueError):
        TrackOptions(detect_every=0)


def test_a_followed_person_is_reported_with_the_score_of_their_last_detection():
    # the detector's score (detector x joints) and the joints' alone in a followed box are on two scales: a
    # clip's people are reported on the first one throughout
    def at(f: int) -> np.ndarray:
        return skeleton(200 + 2 * f, 240)

    frame = {"f": 0}
    tracker = Tracker(lambda rgb: People([person(at(frame["f"]), 0.6 + 0.01 * frame["f"])]),
                      lambda rgb, boxes: People([person(at(frame["f"]), 0.95) for _ in boxes]),
                      TrackOptions(detect_every=5))
    reported = []
    for f in range(12):
        frame["f"] = f
        result = tracker.step(FRAME, f / FPS)
        reported.append((result.detected, [tp.person.score for tp in result.people]))
    assert [d for d, _ in reported] == [f % 5 == 0 for f in range(12)]  # 0.95 followed: tracking stays sure
    assert [s for _, s in reported] == [[pytest.approx(0.6 + 0.01 * (f - f % 5))] for f in range(12)]


def test_hysteresis_keeps_a_started_track_under_min_score_but_starts_none_there():
    # A is scored 0.9 on frames 0-2, then 0.2 (under min_score 0.3); B, who appears on frame 4, 0.2 throughout;
    # their joints are placed surely (0.9) as a detector's doubt lowers a person's score, not their joints'
    def a(f: int) -> np.ndarray:
        return skeleton(150 + 2 * f, 240)

    def seen(pts: np.ndarray, score: float) -> Person:
        return replace(person(pts, 0.9), score=score)

    def ids(options: TrackOptions) -> list[list[int]]:
        frame = {"f": 0}

        def a_now() -> Person:
            return seen(a(frame["f"]), 0.9 if frame["f"] < 3 else 0.2)

        b = [seen(skeleton(450, 240), 0.2)]
        tracker = Tracker(lambda rgb: People([a_now()] + (b if frame["f"] >= 4 else [])),
                          lambda rgb, boxes: People([a_now() for _ in boxes]), options)
        out = []
        for f in range(12):
            frame["f"] = f
            out.append([tp.track_id for tp in tracker.step(FRAME, f / FPS).people])
        return out

    # followed and detected down to 0.2: A keeps one id throughout, and B is never started
    assert ids(TrackOptions(min_score=0.3, keep_score=0.1)) == [[1]] * 12
    assert ids(TrackOptions(min_score=0.3)) == [[1]] * 3 + [[]] * 9  # without: A is dropped at 0.2
    with pytest.raises(ValueError):
        TrackOptions(min_score=0.3, keep_score=0.4)
