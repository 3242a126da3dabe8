"""A clip tracked in overlapping segments and joined (pose/segments.py): the plan, and the join on synthetic
tracks (two people crossing at a segment boundary, one entering in an overlap, one leaving in it, segments
that number their tracks in different orders); with ../shared/video, the basketball clip segmented against
the one-piece run (local/video.py --segment-seconds)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import SHARED
from pose.segments import cuts, join, link, plan_segments
from pose.track import TrackedPerson
from test_track import person, skeleton

FPS = 10
PLAN = plan_segments(50, FPS, 2.0, 0.5)  # (0, 20), (15, 35), (30, 50)


def test_the_plan_covers_the_clip_in_overlapping_segments():
    assert PLAN == [(0, 20), (15, 35), (30, 50)]
    assert cuts(PLAN) == [0, 18, 33]
    assert plan_segments(51, FPS, 2.0, 0.5)[-1] == (45, 51)
    assert plan_segments(12, FPS, 2.0, 0.5) == [(0, 12)]
    assert plan_segments(300, 29.97, 2.0, 0.5)[1] == (45, 105)
    with pytest.raises(ValueError):
        plan_segments(50, FPS, 1.0, 1.0)


def walker(x0: float, speed: float, first: int = 0, last: int = 10**6, y: float = 240):
    """Frame -> skeleton points walking at `speed` px a frame from x0 at frame 0, in view from first to last."""
    return lambda f: skeleton(x0 + speed * f, y) if first <= f <= last else None


def track_segment(paths: dict, start: int, end: int, reverse: bool, seed: int) -> list[list[TrackedPerson]]:
    """A segment as a fresh tracker would give it: ids 1, 2, ... in the order people are first seen (in name
    order, or reversed, so two segments number the same people differently), joints jittered by a pixel."""
    rng = np.random.default_rng(seed)
    ids: dict[str, int] = {}
    frames = []
    for f in range(start, end):
        tracked = []
        for name in sorted(paths, reverse=reverse):
            if (points := paths[name](f)) is not None:
                ids.setdefault(name, len(ids) + 1)
                tracked.append(TrackedPerson(person(points + rng.normal(0, 1, points.shape)), ids[name]))
        frames.append(tracked)
    return frames


def joined_ids(paths: dict, plan=PLAN) -> dict[str, set[int]]:
    """Each person's joined ids over the frames they are in view (one each when the join holds)."""
    segments = [track_segment(paths, s, e, reverse=k % 2 == 1, seed=k) for k, (s, e) in enumerate(plan)]
    frames = join(plan, segments)
    assert len(frames) == plan[-1][1]
    names: dict[str, set[int]] = {}
    for f, tracked in enumerate(frames):
        in_view = sorted(n for n in paths if paths[n](f) is not None)
        assert len(tracked) == len(in_view), f
        for tp in tracked:  # who is this? the person in view whose skeleton is nearest, unless two are as near
            (near, name), *others = sorted((np.abs(paths[n](f) - tp.person.points).mean(), n) for n in in_view)
            if not others or others[0][0] > near + 5:
                names.setdefault(name, set()).add(tp.track_id)
    return names


def test_two_people_crossing_at_a_boundary_keep_their_ids():
    # they meet at frame 17, in the first overlap (15-19), and pass each other
    paths = {"a": walker(320 - 12 * 17, 12), "b": walker(320 + 12 * 17, -12)}
    ids = joined_ids(paths)
    assert ids == {"a": {1}, "b": {2}}


def test_a_person_entering_or_leaving_in_an_overlap_keeps_one_id():
    paths = {"stays": walker(100, 2),
             "enters": walker(600, -3, first=32),  # in view from the second overlap (30-34) on
             "leaves": walker(400, 1, last=18),  # out of view in the first overlap (15-19)
             "later": walker(300, 0, first=22)}  # comes after the first overlap, before the second
    ids = joined_ids(paths)
    assert all(len(v) == 1 for v in ids.values()), ids
    assert len(set.union(*ids.values())) == 4  # and nobody takes another's id


def test_tracks_unlike_over_the_overlap_are_not_linked():
    here = [[TrackedPerson(person(skeleton(100, 240)), 1)]] * 5
    there = [[TrackedPerson(person(skeleton(400, 240)), 1)]] * 5
    assert link(here, there) == {}
    assert link(here, here) == {1: 1}
    # seen together on one frame of five and alike there: under the mean similarity needed
    once = [[TrackedPerson(person(skeleton(100, 240)), 7)]] + [[]] * 4
    assert link(here, once) == {}


BASKETBALL = SHARED / "video" / "mmaction2_test_video_structuralize.mp4"


def id_agreement(one_piece: dict, segmented: dict) -> tuple[float, dict[int, set[int]]]:
    """Over the people of the one-piece run matched to the segmented run's on each frame (same joints), the
    fraction whose segmented id is their one-piece track's most common one; and each one-piece id -> the
    segmented ids it was given."""
    given: dict[int, dict[int, int]] = {}
    for a, b in zip(one_piece["frames"], segmented["frames"]):
        for p in a["people"]:
            q = min(b["people"], default=None, key=lambda q: _distance(p, q))
            if q is not None and _distance(p, q) < 5:
                counts = given.setdefault(p["track_id"], {})
                counts[q["track_id"]] = counts.get(q["track_id"], 0) + 1
    agree = sum(max(c.values()) for c in given.values()) / max(sum(sum(c.values()) for c in given.values()), 1)
    return agree, {k: set(c) for k, c in given.items()}


def _distance(p: dict, q: dict) -> float:
    a = np.array([(j["x"], j["y"]) for j in p["joints"]], float)
    b = np.array([(j["x"], j["y"]) for j in q["joints"]], float)
    return float(np.abs(a - b).mean())


@pytest.mark.model
def test_basketball_in_segments_keeps_the_one_piece_ids(tmp_path):
    if not BASKETBALL.is_file():
        pytest.skip(f"{BASKETBALL} is absent: clone the project with ../shared beside it to run this test")
    from local import video

    runs = {}
    for name, extra in (("whole", []), ("segments", ["--segment-seconds", "2", "--overlap-seconds", "0.5"])):
        assert video.main([str(BASKETBALL), str(tmp_path / name), "--max-frames", "120", *extra]) == 0
        runs[name] = json.loads((tmp_path / name / "tracks.json").read_text())
    whole, segmented = runs["whole"], runs["segments"]
    assert segmented["frame_count"] == whole["frame_count"] == 120
    assert [s[0] for s in segmented["segments"]] == [0, 45, 90]
    long_tracks = [t["track_id"] for t in whole["tracks"] if t["frames"] >= 10]
    assert len(long_tracks) == 2
    assert len([t for t in segmented["tracks"] if t["frames"] >= 10]) == len(long_tracks)
    agree, given = id_agreement(whole, segmented)
    assert all(len(given[t]) == 1 for t in long_tracks), given  # no id switch at the boundaries
    assert agree >= 0.95
