"""Id breaks (build/bench_video.py's `id_breaks`), counted on synthetic tracks: a person who stays in view and
loses their id is one; a person leaving at the frame's edge, a crossing that keeps the ids, a track still seen
at the clip's end and a new track too late or elsewhere are none."""

from __future__ import annotations

import numpy as np

from build.bench_video import Span, id_breaks, spans
from pose.pipeline import Person
from pose.track import TrackedFrame, TrackedPerson

WIDTH, HEIGHT = 640, 480


def box_at(cx: float, cy: float = 240, w: float = 40, h: float = 100) -> tuple[float, float, float, float]:
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


def clip(paths: dict[int, dict[int, tuple]]) -> list[tuple[int, TrackedFrame]]:
    """track id -> frame -> box, as the tracker's (index, TrackedFrame) in order."""
    last = max(f for path in paths.values() for f in path)
    frames = []
    for index in range(last + 1):
        people = [TrackedPerson(Person(np.zeros((17, 2)), np.ones(17), 0.9, path[index], None), tid)
                  for tid, path in paths.items() if index in path]
        frames.append((index, TrackedFrame(people, detected=index % 5 == 0)))
    return frames


def walk(start: int, end: int, x0: float, step: float) -> dict[int, tuple]:
    return {f: box_at(x0 + step * (f - start)) for f in range(start, end + 1)}


def test_spans_keep_each_tracks_first_and_last_box():
    found = spans(clip({1: walk(0, 9, 100, 5), 2: walk(3, 5, 400, 0)}))
    assert found[1] == Span(1, 0, box_at(100), 9, box_at(145), 10)
    assert (found[2].first, found[2].last, found[2].frames) == (3, 5, 3)


def test_a_person_who_stays_in_view_and_gets_a_new_id_is_one_break():
    tracks = spans(clip({1: walk(0, 20, 200, 2), 2: walk(24, 40, 248, 2), 3: walk(0, 40, 500, 0)}))
    assert id_breaks(tracks, WIDTH, HEIGHT) == [(1, 2)]


def test_leaving_at_the_edge_and_someone_entering_there_is_no_break():
    tracks = spans(clip({1: walk(0, 20, 520, 5), 2: walk(22, 40, 622, -5)}))  # ends touching the right edge
    assert tracks[1].last_box[2] > WIDTH * 0.98
    assert id_breaks(tracks, WIDTH, HEIGHT) == []


def test_a_crossing_that_keeps_the_ids_is_no_break():
    tracks = spans(clip({1: walk(0, 40, 200, 5), 2: walk(0, 40, 400, -5)}))  # they meet at frame 20
    assert id_breaks(tracks, WIDTH, HEIGHT) == []


def test_a_new_track_too_late_or_elsewhere_is_no_break():
    late = spans(clip({1: walk(0, 20, 200, 0), 2: walk(31, 40, 200, 0), 3: walk(0, 40, 500, 0)}))
    elsewhere = spans(clip({1: walk(0, 20, 200, 0), 2: walk(22, 40, 350, 0), 3: walk(0, 40, 500, 0)}))
    assert id_breaks(late, WIDTH, HEIGHT) == [] and id_breaks(elsewhere, WIDTH, HEIGHT) == []
    assert id_breaks(late, WIDTH, HEIGHT, within=11) == [(1, 2)]


def test_one_new_track_answers_for_one_lost_track_the_most_overlapping():
    tracks = spans(clip({1: walk(0, 20, 200, 0), 2: walk(0, 20, 215, 0), 3: walk(22, 40, 212, 0)}))
    assert id_breaks(tracks, WIDTH, HEIGHT) == [(2, 3)]
