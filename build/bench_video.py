"""The tracker against the photo pipeline on the same frames, side by side: CPU time per frame.

    python -m build.bench_video                          # the clips of ../shared/video, their first frames
    python -m build.bench_video CLIP.mp4 --frames 90 --rounds 3
    python -m build.bench_video CLIP.mp4 --long-clip out/long.mp4    # CLIP looped and scaled: 60 s of 1280x720
    python -m build.bench_video --ids --frames 150       # per clip: tracks, id breaks, frames per CPU second
    python -m build.bench_video --ids --frames 150 --keep-score 0.1   # ... tracks kept down to 0.1 once started

For each clip, its first `--frames` frames are decoded once and held; then, in each round, the photo
pipeline (`pipeline.estimate_people` on every frame, what POST /pose does) and the tracker
(`track.model_tracker(...).step` on every frame, from a fresh tracker) run one after the other, at one
onnxruntime thread. CPU time (`time.process_time`), the minimum over rounds of each, so that the machine's
other load falls on both alike. Prints a Markdown table: frames per CPU second of each, their ratio (the
issue's goal: the tracker at most 0.7x the pipeline's time), and the frames on which the tracker ran the
detector.

With --ids, each clip is tracked once instead (`clip_tracks`, what `make report` shows per clip): its frames,
tracks, tracks of MIN_TRACK_FRAMES or more, detection frames, frames per CPU second and **id breaks**
(`id_breaks`): the identity switches that can be counted without labelled identities.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from build import provenance
from local import function, video
from pose.pipeline import estimate_people
from pose.service import load_models
from pose.detect import iou_matrix
from pose.track import TrackedFrame, TrackOptions, model_tracker

CLIPS = function.ROOT.parent / "shared" / "video"
MIN_TRACK_FRAMES = 10  # a track this long is a person followed (shorter ones are mostly spurious)
BREAK_WITHIN = 10  # frames after a track's last sighting in which a new track on its box is its person's new id
BREAK_IOU = 0.3  # ... a new track whose first box overlaps the old one's last box this much (IoU)
EDGE = 0.02  # a box within this fraction of the frame's side from an edge is at the edge (leaving the view)


def cpu_seconds(work) -> float:
    t0 = time.process_time()
    work()
    return time.process_time() - t0


def compare(path: Path, models, frames: int, rounds: int) -> dict:
    """One clip's row: the best of `rounds` CPU times of each way over its first `frames` frames."""
    held = [(t, rgb) for i, t, rgb in video.frames(video.open_clip(path)) if i < frames]
    photo, tracked, detected = [], [], []

    def track() -> None:
        tracker = model_tracker(models.pose, models.detector)
        detected.append(sum(tracker.step(rgb, t).detected for t, rgb in held))

    for _ in range(rounds):
        photo.append(cpu_seconds(lambda: [estimate_people(rgb, models.pose, models.detector) for _, rgb in held]))
        tracked.append(cpu_seconds(track))
    n = len(held)
    return {"clip": path.name, "frames": n, "photo_fps": n / min(photo), "tracker_fps": n / min(tracked),
            "ratio": min(tracked) / min(photo), "detected": detected[-1]}


@dataclass
class Span:
    """One track over a clip: its first and last frames, its boxes there, and the frames it was seen on."""
    track_id: int
    first: int
    first_box: tuple[float, float, float, float]
    last: int = -1
    last_box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    frames: int = 0


def spans(tracked: Iterable[tuple[int, TrackedFrame]]) -> dict[int, Span]:
    """(frame index, TrackedFrame) in order -> track id -> its Span (a few numbers per track, never the frames)."""
    out: dict[int, Span] = {}
    for index, frame in tracked:
        for tp in frame.people:
            span = out.setdefault(tp.track_id, Span(tp.track_id, index, tp.person.box))
            span.last, span.last_box = index, tp.person.box
            span.frames += 1
    return out


def inside(box: tuple[float, float, float, float], width: int, height: int, edge: float = EDGE) -> bool:
    """Whether a box keeps clear of the frame's edges by `edge` of the frame's side (a person in view, not
    leaving it)."""
    x0, y0, x1, y1 = box
    mx, my = edge * width, edge * height
    return x0 > mx and y0 > my and x1 < width - mx and y1 < height - my


def id_breaks(tracks: dict[int, Span], width: int, height: int, within: int = BREAK_WITHIN,
              min_iou: float = BREAK_IOU, edge: float = EDGE) -> list[tuple[int, int]]:
    """The id switches countable without labelled identities: (old id, new id) of each track that ends while
    its person's last box is inside the frame (`inside`: not leaving at an edge; a track still seen on the last
    frame does not end) and a track that starts within `within` frames after, its first box overlapping that
    last box by `min_iou` IoU or more: a person who stayed in view and lost their id. One-to-one, the most
    overlapping pairs first. Not counted: a switch where two people's ids are swapped (no track ends), and a
    person who comes back after more than `within` frames or elsewhere."""
    ended = [t for t in tracks.values() if inside(t.last_box, width, height, edge)]
    pairs = []
    for old in ended:
        for new in tracks.values():
            if old.last < new.first <= old.last + within:
                overlap = float(iou_matrix(np.array([old.last_box]), np.array([new.first_box]))[0, 0])
                if overlap >= min_iou:
                    pairs.append((overlap, old.track_id, new.track_id))
    taken_old, taken_new, out = set(), set(), []
    for _, old_id, new_id in sorted(pairs, reverse=True):
        if old_id not in taken_old and new_id not in taken_new:
            taken_old.add(old_id)
            taken_new.add(new_id)
            out.append((old_id, new_id))
    return sorted(out)


def clip_tracks(path: Path, models, frames: int, options: TrackOptions = TrackOptions()) -> dict:
    """One clip's first `frames` frames tracked once (decoding excluded from the time): its frames, tracks,
    tracks of MIN_TRACK_FRAMES or more, id breaks (with their ids), detection frames and frames per CPU
    second."""
    clip = video.open_clip(path)
    held = [(i, t, rgb) for i, t, rgb in video.frames(clip) if i < frames]
    tracker = model_tracker(models.pose, models.detector, options)
    tracked: list[tuple[int, TrackedFrame]] = []
    seconds = cpu_seconds(lambda: tracked.extend((i, tracker.step(rgb, t)) for i, t, rgb in held))
    found = spans(tracked)
    breaks = id_breaks(found, clip.width, clip.height)
    return {"clip": path.name, "frames": len(held), "width": clip.width, "height": clip.height,
            "tracks": len(found), "long_tracks": sum(s.frames >= MIN_TRACK_FRAMES for s in found.values()),
            "id_breaks": len(breaks), "breaks": breaks, "detection_frames": sum(f.detected for _, f in tracked),
            "fps_per_cpu_second": round(len(held) / seconds, 2) if seconds else None}


def default_models():
    """The served default pose model and detector at one onnxruntime thread (per-core figures)."""
    return load_models({"MODEL_PATH": str(function.model_path()), "DETECTOR_PATH": str(function.detector_path()),
                        "MODEL_THREADS": "1"})


def clips() -> list[Path]:
    """The clips of ../shared/video (none when it is absent)."""
    return sorted(p for p in CLIPS.glob("*") if p.suffix in video.SUFFIXES)


def long_clip(src: Path, out: Path, seconds: float, width: int, height: int) -> int:
    """`src` played forwards and backwards in turn (no jump at the joins), each frame scaled to width x height,
    until `seconds` of it are written to `out` at src's frame rate: a long clip of real motion for the
    memory and speed of `make video` over a whole clip. Returns the frames written."""
    from PIL import Image

    clip = video.open_clip(src)
    held = [np.asarray(Image.fromarray(rgb).resize((width, height), Image.Resampling.BILINEAR))
            for _, _, rgb in video.frames(clip)]
    order = held + held[-2:0:-1]
    count = round(seconds * clip.fps)
    with video.Mp4Writer(out) as writer:
        for i in range(count):
            writer.write(order[i % len(order)], i / clip.fps)
    return count


def table(rows: list[dict]) -> str:
    lines = ["| clip (frames) | photo pipeline, frames per CPU second | tracker | ratio | detection frames |",
             "|---|---:|---:|---:|---:|"]
    lines += [f"| {r['clip']} ({r['frames']}) | {r['photo_fps']:.2f} | {r['tracker_fps']:.2f} | {r['ratio']:.2f} "
              f"| {r['detected']} |" for r in rows]
    return "\n".join(lines)


def ids_table(rows: list[dict]) -> str:
    lines = [f"| clip | frames | tracks | tracks of {MIN_TRACK_FRAMES}+ frames | id breaks | detection frames "
             "| frames per CPU second |", "|---|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['clip']} | {r['frames']} | {r['tracks']} | {r['long_tracks']} | {r['id_breaks']} "
              f"| {r['detection_frames']} | {r['fps_per_cpu_second']} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, help="default: every clip in ../shared/video")
    ap.add_argument("--frames", type=int, default=60, help="the first frames of each clip (default 60)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--ids", action="store_true", help="track each clip once: tracks and id breaks")
    ap.add_argument("--keep-score", type=float, help="with --ids: the tracker's keep_score (default: min_score)")
    ap.add_argument("--long-clip", type=Path, metavar="OUT", help="write the first clip looped to OUT instead")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1280x720", help="the long clip's WxH")
    a = ap.parse_args(argv)
    if a.long_clip:
        width, height = map(int, a.size.split("x"))
        print(f"wrote {long_clip(a.clips[0], a.long_clip, a.seconds, width, height)} frames to {a.long_clip}")
        return 0
    paths = a.clips or clips()
    if not paths:
        print(f"skipped: no clips given and none in {CLIPS} (clone the project with ../shared beside it)")
        return 0
    models = default_models()
    options = TrackOptions(keep_score=a.keep_score)
    rows = [(clip_tracks(p, models, a.frames, options) if a.ids else compare(p, models, a.frames, a.rounds))
            for p in paths]
    print(f"{dt.date.today()}, commit {provenance.commit()}, `{provenance.command(__file__, argv)}`, "
          f"{models.pose.card.name} + {models.detector.card.name if models.detector else 'no detector'}, 1 thread, "
          f"keep_score {a.keep_score}\n")
    print(ids_table(rows) if a.ids else table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
