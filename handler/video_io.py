"""A clip's frames in and out, for the video runs on one machine (local/video.py) and on Lambda (video.py).

- `open_clip` and `frames`: a clip read with PyAV under the limits, frame by frame (docs/video.md has the
  measurement PyAV was chosen on), from a path or from file objects (an S3 object read by range); `frame_index`
  and `Seek`: where a segment's decoding starts (its last keyframe), so a segment decodes its own stretch of
  the clip, not everything before it; `Mp4Writer`: frames out as an H.264 MP4 browsers play; `concat_mp4`: MP4
  parts joined into one by copying their packets (no re-encoding);
- `tracks_head`, `frame_json`, `TracksJson`: tracks.json, written frame by frame; `annotated`: one frame drawn;
- a segment's tracked frames as JSON lines (`record_line`, `read_records`, `track_segment`), and the segments
  joined from them (`overlap_links`, `joined`): only an overlap's people are ever held, never the clip.

The only handler module besides video.py that imports `av`: pose/ stays free of it, and the API and batch
functions never import either.
"""

from __future__ import annotations

import json
import sys
from bisect import bisect_right
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from itertools import chain
from typing import BinaryIO, Callable, Iterable, Iterator, TextIO

import av
import numpy as np

from pose import draw
from pose.card import Card
from pose.errors import TooLarge, UnsupportedImage
from pose.pipeline import Person
from pose.region import Region
from pose.reply import person_json
from pose.segments import Joiner, cuts, link
from pose.service import Models
from pose.track import Tracker, TrackedFrame, TrackedPerson, TrackOptions

# The limits of a clip on one machine (`make video`); the video function sets its own (handler/video.py).
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
    reader: Callable[[], BinaryIO] | None = field(default=None, repr=False)  # fresh file objects, else the path
    decoded: int = 0  # frames decoded by frames() so far (its work: those before a segment's first included)
    max_frames: int = MAX_FRAMES  # the frame limit it was opened under: frames() holds it to it


DESCRIBED = ("fps", "width", "height", "frames", "duration_s", "rotation")  # a Clip as a plan passes it on


def _opened(path: Path, reader: Callable[[], BinaryIO] | None):
    """A clip's container, from a fresh file object of its reader or from its path."""
    return av.open(reader() if reader else str(path))


def open_clip(path: Path, max_seconds: float = MAX_SECONDS, max_frames: int = MAX_FRAMES,
              max_pixels: int = MAX_PIXELS, reader: Callable[[], BinaryIO] | None = None) -> Clip:
    """The clip's description, read from its container only (no frame decoded). UnsupportedImage when it is
    not a regular file FFmpeg reads as a video; TooLarge when it is over a limit. With `reader` (fresh
    seekable file objects, e.g. an S3 object read by range), the clip is read from those and `path` only
    names it."""
    if reader is None and not path.is_file():
        raise UnsupportedImage(f"{path.name}: not a regular file")
    try:
        with _opened(path, reader) as container:
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
    return Clip(path, fps or 30.0, width, height, frames, duration, rotation, reader=reader, max_frames=max_frames)


@dataclass(frozen=True)
class Seek:
    """Where to start decoding for frames from `index` on: the keyframe there (its pts, in the stream's time
    base) and the clip's first frame's pts (frame times count from it). Three integers: a plan hands one to
    each segment through the state machine (never the clip's whole index)."""
    pts: int
    index: int
    start_pts: int


@dataclass(frozen=True)
class FrameIndex:
    """A clip's video frames as its packets give them, none decoded: each frame's pts in presentation order (a
    frame's index is its pts's rank) and the indices of the keyframes, ascending."""
    pts: list[int]
    keyframes: list[int]

    def seek(self, first: int) -> Seek | None:
        """Where to decode from to reach frame `first`: its last keyframe at or before it (None when `first`
        is not in the index, or no keyframe precedes it)."""
        k = bisect_right(self.keyframes, first) - 1
        if not 0 <= first < len(self.pts) or k < 0:
            return None
        return Seek(self.pts[self.keyframes[k]], self.keyframes[k], self.pts[0])


def frame_index(clip: Clip) -> FrameIndex | None:
    """The clip's frames indexed by demuxing its video packets, none decoded (reads the container once, costs
    about nothing beside decoding). None when it cannot serve seeking: a packet without a pts, two with the
    same pts, or no keyframe. A clip cut short is indexed up to where it can be read."""
    pts, keys = [], []
    with _opened(clip.path, clip.reader) as container:
        stream = container.streams.video[0]
        try:
            for packet in container.demux(stream):
                if packet.size == 0:  # the demuxer's flush packet
                    continue
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                keys.append(packet.is_keyframe)
        except av.FFmpegError:
            pass  # cut short: the packets before
    order = sorted(range(len(pts)), key=pts.__getitem__)
    ordered = [pts[i] for i in order]
    if len(set(ordered)) < len(ordered):
        return None
    keyframes = [rank for rank, i in enumerate(order) if keys[i]]
    return FrameIndex(ordered, keyframes) if keyframes else None


def frames(clip: Clip, max_frames: int | None = None, first: int = 0,
           seek: Seek | None = None) -> Iterator[tuple[int, float, np.ndarray]]:
    """(index, time in seconds from the first frame, (H, W, 3) uint8 RGB as displayed) for each frame in order
    from index `first` (the frames before it decoded but not converted: a segment's start, exact to the frame),
    one at a time. A clip cut short ends at the last frame that decodes (clip.truncated says why); more than
    `max_frames` frames (default: the clip's limit; a container that lied about its count) is TooLarge.

    With `seek` (FrameIndex.seek of a frame at or before `first`), decoding starts at that keyframe, not at
    the clip's start: the decoded frames are numbered from the keyframe's index on and timed from the clip's
    first frame's pts, so they are the frames, indices and times decoding from the start gives. When the seek
    fails (the container cannot seek, or the first frame decoded at or after the keyframe's pts is not the
    keyframe, or has no pts), the frames are decoded from the start instead: the same frames, more slowly."""
    max_frames = max_frames or clip.max_frames
    if seek is not None and seek.index <= first:
        with _opened(clip.path, clip.reader) as container:
            errors: list[str] = []
            numbered = _from_keyframe(clip, container.streams.video[0], seek, errors)
            if numbered is not None:
                yield from _converted(clip, numbered, first, max_frames, errors)
                return
    with _opened(clip.path, clip.reader) as container:
        errors = []
        yield from _converted(clip, _from_start(clip, container.streams.video[0], errors), first, max_frames, errors)


def _from_start(clip: Clip, stream, errors: list[str]) -> Iterator[tuple[int, float, object]]:
    """(index, time from the first frame, frame) for every frame decoded from the clip's start."""
    start = None
    for index, frame in enumerate(_counted(clip, _decoded(stream, errors))):
        t = frame.time if frame.time is not None else index / clip.fps
        start = t if start is None else start
        yield index, t - start, frame


def _from_keyframe(clip: Clip, stream, seek: Seek, errors: list[str]) -> Iterator[tuple[int, float, object]] | None:
    """(index, time from the clip's first frame, frame) for every frame from the seek's keyframe on, or None
    when seeking there fails (see frames)."""
    try:
        stream.container.seek(seek.pts, stream=stream, backward=True)
    except av.FFmpegError:
        return None
    decoded = _counted(clip, _decoded(stream, errors))
    for frame in decoded:
        if frame.pts is not None and frame.pts < seek.pts:
            continue  # before the keyframe (a seek that landed earlier, or a leading frame): not numbered
        if frame.pts != seek.pts:
            return None
        start = float(seek.start_pts) * stream.time_base.numerator / stream.time_base.denominator
        return ((index, (frame.time if frame.time is not None else index / clip.fps) - start, frame)
                for index, frame in enumerate(chain([frame], decoded), seek.index))
    return None


def _counted(clip: Clip, decoded: Iterator) -> Iterator:
    for frame in decoded:
        clip.decoded += 1
        yield frame


def _converted(clip: Clip, numbered: Iterator[tuple[int, float, object]], first: int, max_frames: int,
               errors: list[str]) -> Iterator[tuple[int, float, np.ndarray]]:
    """frames()'s output from numbered frames: those from `first` converted to RGB as displayed; the limit;
    clip.truncated once the frames end short of the container's count or some packets did not decode."""
    count = 0
    for index, time_s, frame in numbered:
        if index >= max_frames:
            raise TooLarge(f"{clip.path.name}: more than {max_frames} frames")
        count = index + 1
        if index < first:
            continue
        rgb = frame.to_ndarray(format="rgb24")
        yield index, max(time_s, 0.0), np.rot90(rgb, clip.rotation // 90) if clip.rotation else rgb
    if errors or (clip.frames and count < clip.frames):
        clip.truncated = (f"{count} frames read of the {clip.frames or '?'} the container announces"
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
    pixel), each frame at its own time in milliseconds, the index at the front (faststart). Without
    `b_frames` every packet's decoding time is its presentation time, so parts of a clip written one after
    the other join by copying their packets (concat_mp4)."""

    def __init__(self, path: Path, b_frames: bool = True):
        self.container = av.open(str(path), "w", options={"movflags": "+faststart"})
        self.stream = None
        self.last_pts = -1
        self.options = {"crf": str(CRF), "preset": PRESET} | ({} if b_frames else {"bf": "0"})

    def write(self, rgb: np.ndarray, time_s: float) -> None:
        rgb = rgb[: rgb.shape[0] // 2 * 2, : rgb.shape[1] // 2 * 2]
        if self.stream is None:
            self.stream = self.container.add_stream("libx264", options=self.options)
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




def concat_mp4(parts: Iterable[Path], out: Path) -> int:
    """MP4 parts of one clip, each H.264 from Mp4Writer(b_frames=False) with the same size and settings, in
    order -> one MP4 at `out` (faststart), their packets copied with their own times (no re-encoding); the
    packets written. A packet that would not come after the previous part's last one is refused
    (ValueError): the parts overlap."""
    count, last_dts = 0, None
    with av.open(str(out), "w", options={"movflags": "+faststart"}) as output:
        stream = None
        for part in parts:
            with av.open(str(part)) as source:
                video = source.streams.video[0]
                stream = stream or output.add_stream_from_template(video)
                for packet in source.demux(video):
                    if packet.dts is None:  # the demuxer's flush packet
                        continue
                    dts = packet.dts * packet.time_base
                    if last_dts is not None and dts <= last_dts:
                        raise ValueError(f"{part.name}: a packet at {float(dts):.3f} s is not after the previous part's")
                    last_dts = dts
                    packet.stream = stream
                    output.mux(packet)
                    count += 1
    return count


def tracks_head(clip: Clip, models: Models, threshold: float, options: TrackOptions,
                plan: list[tuple[int, int]] | None = None) -> dict:
    """tracks.json's fields before the frames: the clip, the models, the joints, the tracking options (and the
    segments, when tracked in segments)."""
    card = models.pose.card
    head = {"clip": clip.path.name, "fps": round(clip.fps, 4), "width": clip.width, "height": clip.height,
            "rotation": clip.rotation, **models.described, "threshold": threshold, "joints": list(card.joints),
            "skeleton": [list(pair) for pair in card.skeleton], "detect_every": options.detect_every,
            "smooth": options.smooth}
    if plan is not None:
        head["segments"] = [list(se) for se in plan]
    return head


class TracksJson:
    """tracks.json written to `file` frame by frame (memory follows one frame): the head, the frames, then the
    frame count, why decoding stopped early (if it did) and each track's first and last frame."""

    def __init__(self, file: TextIO, head: dict):
        self.file, self.count, self.detections = file, 0, 0
        self.tracks: dict[int, dict] = {}
        file.write(json.dumps(head)[:-1] + ', "frames": [\n')

    def write(self, frame: dict) -> None:
        """One frame as frame_json gives it."""
        self.file.write((",\n" if self.count else "") + json.dumps(frame))
        for person in frame["people"]:
            span = self.tracks.setdefault(person["track_id"], {"track_id": person["track_id"],
                                                               "first_frame": frame["index"], "frames": 0})
            span["last_frame"] = frame["index"]
            span["frames"] += 1
        self.count += 1
        self.detections += frame["detected"]

    def close(self, truncated: str | None) -> None:
        self.file.write(f'\n], "frame_count": {self.count}, "truncated": {json.dumps(truncated)}, '
                        f'"tracks": {json.dumps(list(self.tracks.values()))}}}\n')


def annotated(rgb: np.ndarray, tracked: TrackedFrame, card: Card, threshold: float) -> np.ndarray:
    """The frame with every tracked person drawn, each track in its own colour and its id at its box's head."""
    drawing = draw.annotate(rgb, [(tp.person.points, tp.person.scores >= threshold, tp.person.box)
                                  for tp in tracked.people], card.sides, card.skeleton,
                            track_ids=[tp.track_id for tp in tracked.people])
    return np.asarray(drawing)


def record_line(index: int, time_s: float, tracked: TrackedFrame) -> str:
    """One tracked frame of a segment as a JSON line that read_records turns back into the same floats (JSON
    keeps a float64 exactly), so a join from these lines gives what one from the frames in memory would."""
    people = [{"track_id": tp.track_id, "points": tp.person.points.tolist(), "scores": tp.person.scores.tolist(),
               "dtypes": [str(tp.person.points.dtype), str(tp.person.scores.dtype)],
               "score": float(tp.person.score),
               "box": [float(v) for v in tp.person.box],
               "region": None if tp.person.region is None else [tp.person.region.left, tp.person.region.top,
                                                               tp.person.region.width, tp.person.region.height]}
              for tp in tracked.people]
    return json.dumps({"index": index, "time": time_s, "detected": tracked.detected, "people": people}) + "\n"


def read_records(lines: Iterable[str | bytes]) -> Iterator[tuple[int, float, TrackedFrame]]:
    """record_line's lines -> (index, time, TrackedFrame) in order."""
    for line in lines:
        r = json.loads(line)
        yield r["index"], r["time"], TrackedFrame([
            TrackedPerson(Person(np.asarray(p["points"], p["dtypes"][0]), np.asarray(p["scores"], p["dtypes"][1]),
                                 p["score"], tuple(p["box"]), None if p["region"] is None else Region(*p["region"])),
                          p["track_id"]) for p in r["people"]], r["detected"])


def track_segment(clip: Clip, start: int, stop: int, tracker: Tracker, out: TextIO, seek: Seek | None = None) -> int:
    """Frames [start, stop) of the clip tracked by `tracker` (a fresh one: the segment's ids are its own) ->
    one record_line each in `out`; the frames tracked. Decoded from `seek`'s keyframe, or from the clip's
    start without it (the frames before `start` decoded, not converted)."""
    count = 0
    for index, time_s, rgb in frames(clip, first=start, seek=seek):
        if index >= stop:
            break
        out.write(record_line(index, time_s, tracker.step(rgb, time_s)))
        count += 1
    return count


Records = Callable[[int], Iterable[str | bytes]]  # segment k -> its record lines, read afresh on each call


def overlap_links(plan: list[tuple[int, int]], records: Records, options: TrackOptions) -> list[dict[int, int]]:
    """Each pair of consecutive segments' tracks matched over their overlap (segments.link), read from their
    records: only the overlap's people are held."""
    links = []
    for k, ((_, end), (start, _)) in enumerate(zip(plan, plan[1:])):
        earlier = {i: tf.people for i, _, tf in read_records(records(k)) if start <= i < end}
        later = {}
        for i, _, tf in read_records(records(k + 1)):
            if i >= end:
                break
            later[i] = tf.people
        both = sorted(earlier.keys() & later.keys())
        links.append(link([earlier[i] for i in both], [later[i] for i in both], options))
    return links


def joined(plan: list[tuple[int, int]], records: Records, joiner: Joiner | Callable[[int, int], int],
           segments: Iterable[int] | None = None) -> Iterator[tuple[int, float, TrackedFrame]]:
    """The frames each segment reports (segments.cuts), in order, with their people in the clip's ids
    (`joiner`, asked in frame order, as it must be for its numbering); only `segments` when given (their ids
    then already given by a joiner that saw every frame)."""
    firsts = cuts(plan) + [sys.maxsize]
    for k in range(len(plan)) if segments is None else segments:
        for i, t, tf in read_records(records(k)):
            if i >= firsts[k + 1]:
                break
            if i >= firsts[k]:
                yield i, t, TrackedFrame([TrackedPerson(tp.person, joiner(k, tp.track_id)) for tp in tf.people],
                                         tf.detected)
