"""A clip too long for one worker, tracked in segments side by side and joined into one id space.

- `plan_segments`: the clip's frames cut into segments of `segment_seconds` that overlap by `overlap_seconds`;
  each segment is tracked on its own, by a fresh Tracker starting at its first frame, so its track ids are
  its own (local);
- `link`: two consecutive segments' tracks matched over their overlap, the frames both tracked: a pair's
  likeness is the tracker's own `similarity` (OKS with box IoU) summed over the overlap frames where both are
  seen, divided by the frames where either is (a track seen without the other counts as unlike), paired
  greedily, most alike first, from `min_similarity` up;
- `Joiner`: each segment's local ids -> the clip's ids: a track linked to the previous segment's takes that
  track's id, any other a new one, numbered in the order they are first reported; `cuts` says which segment
  a frame of an overlap is taken from (the earlier one up to the overlap's middle, the later one after), so
  each frame is reported once;
- `join`: the whole of it on segments held in memory (a worker's output read back frame by frame uses `link`
  and `Joiner` directly, as local/video.py does).

Pure functions on Person records (numpy): no model, no video (tests/test_segments.py).
"""

from __future__ import annotations

from typing import Sequence

from .track import TrackedPerson, TrackOptions, similarity

FrameTracks = Sequence[TrackedPerson]  # one frame's tracked people, ids local to their segment
MIN_LINK_SIMILARITY = 0.5  # two segments' tracks are one person from this mean similarity over the overlap up
SEGMENT_SECONDS = 30.0  # the video function's segments (handler/video.py): at 1080p 2-5 minutes of one vCPU
OVERLAP_SECONDS = 1.0  # the frames two consecutive segments both track, to match their tracks


def plan_segments(frame_count: int, fps: float, segment_seconds: float,
                  overlap_seconds: float) -> list[tuple[int, int]]:
    """Frames [0, frame_count) -> (start, end) frame ranges, end excluded, each `segment_seconds` long (the last
    one may be shorter), each starting `overlap_seconds` before the previous one ends. At least one frame of
    overlap and one frame that is the segment's own: ValueError when the overlap does not fit."""
    length = max(round(segment_seconds * fps), 1)
    overlap = max(round(overlap_seconds * fps), 1)
    if overlap >= length:
        raise ValueError(f"an overlap of {overlap_seconds} s does not fit in segments of {segment_seconds} s")
    plan = [(0, min(length, frame_count))]
    while plan[-1][1] < frame_count:
        start = plan[-1][1] - overlap
        plan.append((start, min(start + length, frame_count)))
    return plan


def cuts(plan: Sequence[tuple[int, int]]) -> list[int]:
    """The first frame each segment reports: 0 for the first, the middle of its overlap with the previous one
    for the others (the earlier segment reports the overlap's first half, the later one the rest)."""
    return [0] + [start + (previous_end - start + 1) // 2 for (_, previous_end), (start, _) in zip(plan, plan[1:])]


def link(earlier: Sequence[FrameTracks], later: Sequence[FrameTracks], options: TrackOptions = TrackOptions(),
         min_similarity: float = MIN_LINK_SIMILARITY) -> dict[int, int]:
    """The overlap's frames as each of two consecutive segments tracked them (the same frames, in order)
    -> {later segment's track id: earlier segment's track id} for the tracks that are one person."""
    together: dict[tuple[int, int], float] = {}  # (earlier id, later id) -> similarity summed over frames
    both: dict[tuple[int, int], int] = {}  # frames where both are seen
    frames_of: list[dict[int, int]] = [{}, {}]  # each segment's track id -> frames where it is seen
    for before, after in zip(earlier, later):
        for counts, tracked in zip(frames_of, (before, after)):
            for tp in tracked:
                counts[tp.track_id] = counts.get(tp.track_id, 0) + 1
        for a in before:
            for b in after:
                key = (a.track_id, b.track_id)
                together[key] = together.get(key, 0.0) + similarity(a.person, b.person, options.oks_weight)
                both[key] = both.get(key, 0) + 1
    pairs = sorted(((total / (frames_of[0][a] + frames_of[1][b] - both[a, b]), a, b)
                    for (a, b), total in together.items()), reverse=True)
    links: dict[int, int] = {}
    for value, a, b in pairs:
        if value < min_similarity:
            break
        if b not in links and a not in links.values():
            links[b] = a
    return links


class Joiner:
    """Segment-local track ids -> the clip's: `links[k]` is link()'s answer between segments k and k + 1. An id
    is given when first asked for, so tracks of the part of an overlap a segment does not report take no
    number."""

    def __init__(self, links: Sequence[dict[int, int]]):
        self.links = links
        self.ids: list[dict[int, int]] = [{} for _ in range(len(links) + 1)]
        self.next_id = 1

    def __call__(self, segment: int, track_id: int) -> int:
        ids = self.ids[segment]
        if track_id not in ids:
            if segment > 0 and track_id in self.links[segment - 1]:
                ids[track_id] = self(segment - 1, self.links[segment - 1][track_id])
            else:
                ids[track_id], self.next_id = self.next_id, self.next_id + 1
        return ids[track_id]


def join(plan: Sequence[tuple[int, int]], segments: Sequence[Sequence[FrameTracks]],
         options: TrackOptions = TrackOptions(),
         min_similarity: float = MIN_LINK_SIMILARITY) -> list[list[TrackedPerson]]:
    """Each planned segment's frames as tracked on their own (segments[k][i] is frame plan[k][0] + i) -> the
    clip's frames, each taken from one segment (`cuts`), with the clip's track ids."""
    links = [link(previous[start - previous_start:], following[: previous_end - start], options, min_similarity)
             for (previous_start, previous_end), (start, _), previous, following
             in zip(plan, plan[1:], segments, segments[1:])]
    joiner = Joiner(links)
    firsts = cuts(plan)
    out = []
    for k, ((start, end), frames) in enumerate(zip(plan, segments)):
        last = firsts[k + 1] if k + 1 < len(plan) else end
        for tracked in frames[firsts[k] - start: last - start]:
            out.append([TrackedPerson(tp.person, joiner(k, tp.track_id)) for tp in tracked])
    return out
