"""Every person in a clip tracked through it: frames in, OUT/tracks.json and an annotated MP4 out.

    python -m local.video IN OUT [--detect-every 5] [--keep-missing 10] [--smooth] [--max-frames N]
                                 [--threads 1] [--threshold X] [--max-people N]
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
each by a fresh tracker from its first frame (the frames before it decoded, not converted), in --workers
processes, each segment's frames pickled to a scratch file frame by frame; the segments' tracks are matched
over each overlap, and the frames decoded again to write the same tracks.json and annotated.mp4 in the joined
ids (tracks.json also lists the segments). docs/video.md has the ids it gives against the one-piece run.

Video I/O is PyAV's (docs/video.md has the measurement it was chosen on). Clips over the limits (MAX_SECONDS,
MAX_FRAMES, MAX_PIXELS) are refused with TooLarge before any frame is decoded; a file FFmpeg cannot read as a
video is UnsupportedImage; a truncated clip gives the frames that can be read (and says so). The models are
those of a local run (local/function.py; MODEL_PATH, MODEL, DETECTOR_PATH).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from itertools import islice
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np
from tqdm import tqdm

from local import function

from pose import draw
from pose.errors import PoseError, TooLarge, UnsupportedImage
from pose.reply import person_json
from pose.segments import Joiner, cuts, link, plan_segments
from pose.service import Models, load_models
from pose.track import TrackedFrame, TrackOptions, model_tracker

MAX_SECONDS = 600.0  # 10 minutes: about 1 hour of one core's work at 720p (docs/video.md)
MAX_FRAMES = 18_000  # 10 minutes at 30 fps (a container's own count, and again while decoding)
MAX_PIXELS = 3840 * 2160  # a 4K frame
SUFFIXES = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
CRF, PRESET = 23, "veryfast"  # libx264's default quality, a fast preset: the drawing costs less than the model


@dataclass
class Clip:
    path: Path
    fps: float  # the stream's average rate (frames per second)
    width: int  # as displayed: after rotation
    height: int
    frames: int | None  # the container's count (None when it has none): for the progress bar and the limits
    duration_s: float | None
    rotation: int  # degrees counterclockwise the frames are turned to be displayed (0, 90, 180, 270)
    truncated: str | None = None  # why decoding stopped early, once frames() has met the end


def open_clip(path: Path, max_seconds: float = MAX_SECONDS, max_frames: int = MAX_FRAMES,
              max_pixels: int = MAX_PIXELS) -> Clip:
    """The clip's description, read from its container only (no frame decoded). UnsupportedImage when it is
    not a regular file FFmpeg reads as a video; TooLarge when it is over a limit."""
    if not path.is_file():
        raise UnsupportedImage(f"{path.name}: not a regular file")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise UnsupportedImage(f"{path.name}: no video stream in it")
            if container.format.name == "image2" or container.format.name.endswith("_pipe"):
                raise UnsupportedImage(f"{path.name}: a still image ({container.format.name}), not a video")
            stream = container.streams.video[0]
            first = next(_decoded(stream, []), None)
            rotation = int(round((first.rotation if first is not None else 0) / 90)) % 4 * 90
            fps = float(stream.average_rate or stream.guessed_rate or 0)
            width, height = stream.codec_context.width, stream.codec_context.height
            duration = (float(stream.duration * stream.time_base) if stream.duration
                        else container.duration / av.time_base if container.duration else None)
            frames = stream.frames or (round(duration * fps) if duration and fps else None)
    except av.FFmpegError as exc:
        raise UnsupportedImage(f"{path.name}: not a video FFmpeg can read ({exc.strerror or exc})") from None
    if first is None:
        raise UnsupportedImage(f"{path.name}: no frame can be decoded")
    if rotation in (90, 270):
        width, height = height, width
    if width * height > max_pixels:
        raise TooLarge(f"{path.name}: {width}x{height} frames are over the {max_pixels:,} pixel limit")
    if duration is not None and duration > max_seconds:
        raise TooLarge(f"{path.name}: {duration:.1f} s is over the {max_seconds:.0f} s limit")
    if frames is not None and frames > max_frames:
        raise TooLarge(f"{path.name}: {frames} frames are over the {max_frames} frame limit")
    return Clip(path, fps or 30.0, width, height, frames, duration, rotation)


def frames(clip: Clip, max_frames: int = MAX_FRAMES, first: int = 0) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time in seconds from the first frame, (H, W, 3) uint8 RGB as displayed) for each frame in order
    from index `first` (the frames before it decoded but not converted: a segment's start, exact to the frame),
    one at a time. A clip cut short ends at the last frame that decodes (clip.truncated says why); more than
    `max_frames` frames (a container that lied about its count) is TooLarge."""
    with av.open(str(clip.path)) as container:
        stream = container.streams.video[0]
        start = None
        index = 0
        errors: list[str] = []
        for frame in _decoded(stream, errors):
            if index >= max_frames:
                raise TooLarge(f"{clip.path.name}: more than {max_frames} frames")
            t = frame.time if frame.time is not None else index / clip.fps
            start = t if start is None else start
            if index < first:
                index += 1
                continue
            rgb = frame.to_ndarray(format="rgb24")
            yield index, max(t - start, 0.0), np.rot90(rgb, clip.rotation // 90) if clip.rotation else rgb
            index += 1
        if errors or (clip.frames and index < clip.frames):
            clip.truncated = (f"{index} frames read of the {clip.frames or '?'} the container announces"
                              + (f"; {len(errors)} packets did not decode ({errors[0]})" if errors else ""))


def _decoded(stream, errors: list[str]) -> Iterator:
    """The stream's frames in order, packet by packet: a packet that does not decode (a clip cut short, a
    damaged one) is skipped and its error appended to `errors`, so every frame that can be read is; a
    container that cannot be read further ends the frames there."""
    try:
        for packet in stream.container.demux(stream):
            try:
                yield from packet.decode()
            except av.FFmpegError as exc:
                errors.append(exc.strerror or str(exc))
    except av.FFmpegError as exc:
        errors.append(exc.strerror or str(exc))


class Mp4Writer:
    """Frames (RGB arrays of one size) -> an H.264 MP4 browsers play: yuv420p (odd sides cropped by one
    pixel), each frame at its own time in milliseconds, the index at the front (faststart)."""

    def __init__(self, path: Path):
        self.container = av.open(str(path), "w", options={"movflags": "+faststart"})
        self.stream = None
        self.last_pts = -1

    def write(self, rgb: np.ndarray, time_s: float) -> None:
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", options={"crf": str(CRF), "preset": PRESET})
            self.stream.width, self.stream.height, self.stream.pix_fmt = rgb.shape[1], rgb.shape[0], "yuv420p"
            self.stream.time_base = self.stream.codec_context.time_base = Fraction(1, 1000)
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb), format="rgb24")
        frame.pts = self.last_pts = max(round(time_s * 1000), self.last_pts + 1)
        frame.time_base = Fraction(1, 1000)
        self.container.mux(self.stream.encode(frame))

    def close(self) -> None:
        if self.stream is not None:
            self.container.mux(self.stream.encode())
        self.container.close()

    def __enter__(self) -> "Mp4Writer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def frame_json(index: int, time_s: float, tracked: TrackedFrame, models: Models, threshold: float) -> dict:
    """One frame of tracks.json: its people as POST /pose's reply has them, each with its track_id."""
    return {"index": index, "time": round(time_s, 4), "detected": tracked.detected,
            "people": [{**person_json(tp.person, models.pose.card, threshold), "track_id": tp.track_id}
                       for tp in tracked.people]}


@dataclass(frozen=True)
class Segmenting:
    """A clip tracked in segments (pose/segments.py): each by a fresh tracker from its first frame, in up to
    `workers` processes (each loading the models from `model_env`, as load_models takes them), then joined."""
    seconds: float
    overlap_seconds: float = 1.0
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
    tracks: dict[int, dict] = {}
    count = detections = 0
    started, cpu = time.perf_counter(), _cpu_seconds()
    limit = min(max_frames or MAX_FRAMES, MAX_FRAMES)
    total = min(clip.frames or limit, limit)
    head = {"clip": path.name, "fps": round(clip.fps, 4), "width": clip.width, "height": clip.height,
            "rotation": clip.rotation, **models.described, "threshold": threshold, "joints": list(card.joints),
            "skeleton": [list(pair) for pair in card.skeleton], "detect_every": options.detect_every,
            "smooth": options.smooth}
    with tempfile.TemporaryDirectory(prefix="segments-") as scratch:
        if segmenting is None:
            tracker = model_tracker(models.pose, models.detector, options, *([max_people] if max_people else []))
            tracked_frames = ((i, t, rgb, tracker.step(rgb, t)) for i, t, rgb in islice(frames(clip), limit))
        else:
            plan = plan_segments(total, clip.fps, segmenting.seconds, segmenting.overlap_seconds)
            head["segments"] = [list(se) for se in plan]
            files = _track_segments(path, plan, limit, Path(scratch), models, options, max_people, segmenting)
            tracked_frames = _joined(clip, plan, files, options)
        with open(out / "tracks.json", "w") as js, Mp4Writer(out / "annotated.mp4") as video, \
                tqdm(total=total, unit="frame", desc=path.name, disable=None, dynamic_ncols=True) as bar:
            js.write(json.dumps(head)[:-1] + ', "frames": [\n')
            for index, time_s, rgb, tracked in tracked_frames:
                if index >= limit:
                    break
                js.write((",\n" if index else "") + json.dumps(frame_json(index, time_s, tracked, models, threshold)))
                drawing = draw.annotate(rgb, [(tp.person.points, tp.person.scores >= threshold, tp.person.box)
                                              for tp in tracked.people], card.sides, card.skeleton,
                                        track_ids=[tp.track_id for tp in tracked.people])
                video.write(np.asarray(drawing), time_s)
                for tp in tracked.people:
                    span = tracks.setdefault(tp.track_id, {"track_id": tp.track_id, "first_frame": index, "frames": 0})
                    span["last_frame"] = index
                    span["frames"] += 1
                count += 1
                detections += tracked.detected
                bar.update()
            js.write(f'\n], "frame_count": {count}, "truncated": {json.dumps(clip.truncated)}, '
                     f'"tracks": {json.dumps(list(tracks.values()))}}}\n')
    seconds, cpu_s = time.perf_counter() - started, _cpu_seconds() - cpu
    return {"clip": str(path), "frames": count, "tracks": len(tracks), "detection_frames": detections,
            "seconds": round(seconds, 2), "fps": round(count / seconds, 2) if seconds else None,
            "fps_per_cpu_second": round(count / cpu_s, 2) if cpu_s else None, "truncated": clip.truncated}


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished child processes (the segments' workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def track_segment(path: Path, start: int, end: int, scratch: Path, options: TrackOptions,
                  max_people: int | None = None, models: Models | None = None, model_env: dict | None = None) -> Path:
    """Frames [start, end) of a clip tracked by a fresh tracker (ids its own) -> `scratch`, one pickled
    (index, time, TrackedFrame) per frame, so memory follows one frame. The models given, or loaded from
    `model_env` once per worker process."""
    global _worker_models
    if models is None:
        _worker_models = _worker_models or load_models(model_env or {})
        models = _worker_models
    tracker = model_tracker(models.pose, models.detector, options, *([max_people] if max_people else []))
    with open(scratch, "wb") as f:
        for index, time_s, rgb in frames(open_clip(path), first=start):
            if index >= end:
                break
            pickle.dump((index, time_s, tracker.step(rgb, time_s)), f)
    return scratch


_worker_models: Models | None = None  # a worker process's models, loaded by its first segment


def _track_segments(path: Path, plan: list[tuple[int, int]], limit: int, scratch: Path, models: Models,
                    options: TrackOptions, max_people: int | None, segmenting: Segmenting) -> list[Path]:
    """Each planned segment tracked on its own (the last one on to the clip's end, should the container have
    announced too few frames) -> its scratch file; side by side in `segmenting.workers` processes."""
    jobs = [(path, start, end if k + 1 < len(plan) else limit, scratch / f"{k}.pickle", options, max_people)
            for k, (start, end) in enumerate(plan)]
    if segmenting.workers <= 1:
        return [track_segment(*job, models=models) for job in jobs]
    with ProcessPoolExecutor(segmenting.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(pool.map(partial(track_segment, model_env=segmenting.model_env), *zip(*jobs)))


def _records(file: Path) -> Iterator[tuple[int, float, TrackedFrame]]:
    with open(file, "rb") as f:
        while True:
            try:
                yield pickle.load(f)  # our own scratch file, written by track_segment above
            except EOFError:
                return


def _joined(clip: Clip, plan: list[tuple[int, int]], files: list[Path],
            options: TrackOptions) -> Iterator[tuple[int, float, np.ndarray, TrackedFrame]]:
    """The segments' scratch files -> the clip's frames with their people in the clip's ids (segments.link over
    each overlap, read from the files: only the overlap's people are held), decoded again for the drawing."""
    links = []
    for (_, end), (start, _), before, after in zip(plan, plan[1:], files, files[1:]):
        earlier = {i: tf.people for i, _, tf in _records(before) if start <= i < end}
        later = {i: tf.people for i, _, tf in _records(after) if i < end}
        both = sorted(earlier.keys() & later.keys())
        links.append(link([earlier[i] for i in both], [later[i] for i in both], options))
    joiner = Joiner(links)
    firsts = cuts(plan) + [MAX_FRAMES]
    records = ((i, t, replace(tf, people=[replace(tp, track_id=joiner(k, tp.track_id)) for tp in tf.people]))
               for k, file in enumerate(files) for i, t, tf in _records(file) if firsts[k] <= i < firsts[k + 1])
    for (index, time_s, rgb), (i, t, tracked) in zip(frames(clip), records):
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
    options = TrackOptions(detect_every=args.detect_every, keep_missing=args.keep_missing, smooth=args.smooth)
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
