"""Every person in a clip tracked through it: frames in, OUT/tracks.json and an annotated MP4 out.

    python -m local.video IN OUT [--detect-every 5] [--keep-missing 10] [--min-score 0.3] [--keep-score S] [--smooth]
                                 [--max-frames N] [--threads 1] [--threshold X] [--max-people N]
                                 [--segment-seconds S [--overlap-seconds 1] [--workers 1]]

IN is a clip (MP4/H.264, WebM, MOV, AVI, MKV: whatever FFmpeg reads) or a folder of them (each clip's results
then go to OUT/<its path without suffix>/). For each clip:

- OUT/tracks.json: the clip's fps, width and height (as displayed: rotation metadata applied), the models,
  threshold, joints and skeleton; per frame its index, time in seconds (from the frame's own timestamp, so a
  variable frame rate keeps its times), whether the detector ran, and its people, each as in POST /pose's
  reply (reply.person_json) plus `track_id`; then the frame count and each track's first and last frame.
  Written frame by frame: memory follows one frame, never the clip;
- OUT/annotated.mp4: the frames with every person drawn, each track in its own colour and its id at the head
  of its box; H.264 in MP4 (yuv420p, faststart), which browsers play;
- a summary line: frames, tracks, detection frames, frames per second (wall clock and per CPU second: with
  --threads 1, frames per second per core). A progress bar on a terminal.

With --segment-seconds the clip is tracked as a long one is on AWS: in segments that overlap (pose/segments.py),
each by a fresh tracker from its first frame (decoded from its last keyframe, found in an index of the clip's
packets made once: video_io.frame_index, as on AWS), in --workers
processes, each segment's frames written to a scratch file as JSON lines frame by frame (as on AWS); the segments' tracks are matched
over each overlap, and the frames decoded again to write the same tracks.json and annotated.mp4 in the joined
ids (tracks.json also lists the segments). docs/video.md has the ids it gives against the one-piece run.

Video I/O is PyAV's, in handler/video_io.py (shared with the Lambda function, handler/video.py). Clips over the limits (MAX_SECONDS,
MAX_FRAMES, MAX_PIXELS) are refused with TooLarge before any frame is decoded; a file FFmpeg cannot read as a
video is UnsupportedImage; a truncated clip gives the frames that can be read (and says so). The models are
those of a local run (local/function.py; MODEL_PATH, MODEL, DETECTOR_PATH).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from itertools import islice
from pathlib import Path
from typing import Iterator

import numpy as np
from tqdm import tqdm

from local import function

from pose.errors import PoseError
from pose.segments import OVERLAP_SECONDS, Joiner, plan_segments
from pose.service import Models, load_models
from pose.track import TrackedFrame, TrackOptions, model_tracker
from video_io import (MAX_FRAMES, SUFFIXES, Clip, Mp4Writer, Seek, TracksJson, annotated, frame_index, frame_json,
                      frames, joined, open_clip, overlap_links, track_segment as track_frames, tracks_head)

@dataclass(frozen=True)
class Segmenting:
    """A clip tracked in segments (pose/segments.py): each by a fresh tracker from its first frame, in up to
    `workers` processes (each loading the models from `model_env`, as load_models takes them), then joined."""
    seconds: float
    overlap_seconds: float = OVERLAP_SECONDS
    workers: int = 1
    model_env: dict | None = None


def track_clip(path: Path, out: Path, models: Models, options: TrackOptions, threshold: float | None = None,
               max_people: int | None = None, max_frames: int | None = None,
               segmenting: Segmenting | None = None) -> dict:
    """One clip -> out/tracks.json and out/annotated.mp4; returns its summary. In one piece, or in segments
    (`segmenting`) joined into the same ids-through-the-clip output. Raises the PoseError of a clip that cannot
    be read (UnsupportedImage, TooLarge)."""
    clip = open_clip(path)
    card = models.pose.card
    threshold = card.threshold if threshold is None else threshold
    out.mkdir(parents=True, exist_ok=True)
    started, cpu = time.perf_counter(), _cpu_seconds()
    limit = min(max_frames or MAX_FRAMES, MAX_FRAMES)
    total = min(clip.frames or limit, limit)
    plan = plan_segments(total, clip.fps, segmenting.seconds, segmenting.overlap_seconds) if segmenting else None
    with tempfile.TemporaryDirectory(prefix="segments-") as scratch:
        if segmenting is None:
            tracker = model_tracker(models.pose, models.detector, options, *([max_people] if max_people else []))
            tracked_frames = ((i, t, rgb, tracker.step(rgb, t)) for i, t, rgb in islice(frames(clip), limit))
        else:
            files = _track_segments(path, plan, limit, Path(scratch), models, options, max_people, segmenting)
            tracked_frames = _joined(clip, plan, files, options)
        with open(out / "tracks.json", "w") as js, Mp4Writer(out / "annotated.mp4") as video, \
                tqdm(total=total, unit="frame", desc=path.name, disable=None, dynamic_ncols=True) as bar:
            tracks = TracksJson(js, tracks_head(clip, models, threshold, options, plan))
            for index, time_s, rgb, tracked in tracked_frames:
                if index >= limit:
                    break
                tracks.write(frame_json(index, time_s, tracked, models, threshold))
                video.write(annotated(rgb, tracked, card, threshold), time_s)
                bar.update()
            tracks.close(clip.truncated)
    seconds, cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu
    count = tracks.count
    return {"clip": str(path), "frames": count, "tracks": len(tracks.tracks), "detection_frames": tracks.detections,
            "seconds": round(seconds, 2), "fps": round(count / seconds, 2) if seconds else None,
            "fps_per_cpu_second": round(count / cpu_s, 2) if cpu_s else None, "truncated": clip.truncated}


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the segments' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def track_segment(path: Path, start: int, end: int, scratch: Path, options: TrackOptions,
                  max_people: int | None = None, seek: Seek | None = None, models: Models | None = None,
                  model_env: dict | None = None) -> Path:
    """Frames [start, end) of a clip tracked by a fresh tracker (ids its own) -> `scratch`, one JSON line per
    frame (video_io.record_line), so memory follows one frame; decoded from `seek`'s keyframe (from the clip's
    start without it). The models given, or loaded from `model_env` once per worker process."""
    global _worker_models
    if models is None:
        _worker_models = _worker_models or load_models(model_env or {})
        models = _worker_models
    tracker = model_tracker(models.pose, models.detector, options, *([max_people] if max_people else []))
    with open(scratch, "w") as f:
        track_frames(open_clip(path), start, end, tracker, f, seek)
    return scratch


_worker_models: Models | None = None  # a worker process's models, loaded by its first segment


def _track_segments(path: Path, plan: list[tuple[int, int]], limit: int, scratch: Path, models: Models,
                    options: TrackOptions, max_people: int | None, segmenting: Segmenting) -> list[Path]:
    """Each planned segment tracked on its own (the last one on to the clip's end, should the container have
    announced too few frames), decoded from its last keyframe -> its scratch file; side by side in
    `segmenting.workers` processes."""
    index = frame_index(open_clip(path))
    jobs = [(path, start, end if k + 1 < len(plan) else limit, scratch / f"{k}.jsonl", options, max_people,
             index.seek(start) if index else None)
            for k, (start, end) in enumerate(plan)]
    if segmenting.workers <= 1:
        return [track_segment(*job, models=models) for job in jobs]
    with ProcessPoolExecutor(segmenting.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(partial(track_segment, model_env=segmenting.model_env), *zip(*jobs)))


def _joined(clip: Clip, plan: list[tuple[int, int]], files: list[Path],
            options: TrackOptions) -> Iterator[tuple[int, float, np.ndarray, TrackedFrame]]:
    """The segments' scratch files -> the clip's frames with their people in the clip's ids (the tracks linked
    over each overlap), decoded again for the drawing."""

    def records(k: int):
        with open(files[k]) as f:
            yield from f

    joiner = Joiner(overlap_links(plan, records, options))
    for (index, time_s, rgb), (i, t, tracked) in zip(frames(clip), joined(plan, records, joiner)):
        if index != i:
            raise RuntimeError(f"{clip.path.name}: frame {index} decoded where the segments have frame {i}")
        yield index, t, rgb, tracked


def clips_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("input", type=Path, help="a clip, or a folder of clips")
    parser.add_argument("out", type=Path)
    parser.add_argument("--detect-every", type=int, default=TrackOptions.detect_every)
    parser.add_argument("--keep-missing", type=int, default=TrackOptions.keep_missing)
    parser.add_argument("--min-score", type=float, default=TrackOptions.min_score,
                        help="people scored under this are not tracked (0.1: every person COCO counts, more short "
                             "tracks; docs/video.md)")
    parser.add_argument("--keep-score", type=float,
                        help="a followed person is kept down to this score (default: --min-score; docs/video.md)")
    parser.add_argument("--smooth", action="store_true", help="One Euro filter on the joints")
    parser.add_argument("--max-frames", type=int, help="stop after this many frames of each clip")
    parser.add_argument("--threads", type=int, default=1, help="onnxruntime threads (default 1: per core)")
    parser.add_argument("--threshold", type=float)
    parser.add_argument("--max-people", type=int)
    parser.add_argument("--segment-seconds", type=float,
                        help="track the clip in segments this long, each on its own, then join their tracks")
    parser.add_argument("--overlap-seconds", type=float, default=Segmenting.overlap_seconds,
                        help="segments overlap by this much: their tracks are matched there")
    parser.add_argument("--workers", type=int, default=1, help="segments tracked side by side in this many processes")
    args = parser.parse_args(argv)
    if args.input.is_dir():
        jobs = [(p, args.out / p.relative_to(args.input).with_suffix("")) for p in clips_in(args.input)]
    else:
        jobs = [(args.input, args.out)]
    if not jobs:
        print(f"no clips ({', '.join(SUFFIXES)}) under {args.input}", file=sys.stderr)
        return 2
    model_env = {"MODEL_PATH": str(function.model_path()), "DETECTOR_PATH": str(function.detector_path()),
                 "MODEL_THREADS": str(args.threads)} | _env_overrides()
    models = load_models(model_env)
    segmenting = (Segmenting(args.segment_seconds, args.overlap_seconds, args.workers, model_env)
                  if args.segment_seconds else None)
    options = TrackOptions(detect_every=args.detect_every, keep_missing=args.keep_missing, min_score=args.min_score,
                           keep_score=args.keep_score, smooth=args.smooth)
    failed = 0
    for path, out in jobs:
        try:
            s = track_clip(path, out, models, options, args.threshold, args.max_people, args.max_frames, segmenting)
        except PoseError as exc:
            print(f"{path}: {exc.code}: {exc.message}", file=sys.stderr)
            failed += 1
            continue
        note = f" (truncated: {s['truncated']})" if s["truncated"] else ""
        print(f"{path}: {s['frames']} frames, {s['tracks']} tracks, {s['detection_frames']} detection frames, "
              f"{s['fps']} frames/s, {s['fps_per_cpu_second']} frames per CPU second -> {out}{note}")
    return 1 if failed else 0


def _env_overrides() -> dict:
    """MODEL_PATH and DETECTOR_PATH from this process's environment, when set (as local/function.py takes them)."""
    import os
    return {k: os.environ[k] for k in ("MODEL_PATH", "DETECTOR_PATH") if k in os.environ}


if __name__ == "__main__":
    sys.exit(main())
