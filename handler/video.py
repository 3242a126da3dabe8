"""The video function: the steps of the video state machine (statemachine/video.asl.json), one clip at a time.

Every event is `{"step": <name>, "job": <the execution's input>, ...}`, the job as the photo batch takes it
(`{"input": {"bucket", "prefix"}, "output": {"bucket", "prefix"}}`, optionally `threshold`, `max_people`,
`segment_seconds`, `overlap_seconds`). Events and replies stay small (Step Functions passes at most 256 KB):
per-frame data goes through S3, under the clip's output prefix `<output prefix><key under the input prefix
without its suffix>/`, where the clip ends with tracks.json and annotated.mp4 exactly as
`python -m local.video CLIP OUT --segment-seconds S --overlap-seconds O` writes them.

- plan    `{"key", "size"}` -> `{"done": false, "clip": {...}, "segments": [{"index", "start", "end", "stop",
          "seek", "draw_seek"}]}` (where track and draw start decoding: video_io.Seek as a dict, or null);
          a clip that is not a video or is over the limits -> its error record at `<clip prefix>error.json`
          and `{"done": true, "error": {...}}`; a key under the output prefix -> `{"done": true, "skipped"}`
- track   `{"clip", "segment"}` -> the segment's tracked frames as JSON lines, segments/<index>.jsonl ->
          `{"index", "key", "frames", "truncated", "decoded", "bytes_read"}` (frames decoded, bytes read from S3)
- join    `{"clip", "segments": [track's replies]}` -> tracks.json in the clip's ids, and ids.json (each
          segment's ids -> the clip's) -> `{"tracks", "ids", "frames", "track_count"}`
- draw    `{"clip", "segment"}` -> the frames the segment reports, drawn in the clip's ids, parts/<index>.mp4
          -> `{"index", "key", "frames"}`
- concat  `{"clip", "parts": [draw's replies]}` -> annotated.mp4 (the parts' packets copied, not re-encoded);
          the parts, segment records and ids.json deleted -> `{"annotated", "packets"}`

Each step that decodes the clip reads it from S3 by range (S3Object: the container's header and index, and
the stretch it decodes), never downloading it; plan indexes the clip's frames (video_io.frame_index, packets
demuxed, none decoded) and gives each segment where its decoding starts (video_io.Seek: its last keyframe), so
a segment decodes its own frames and the GOP before them, not the clip up to them. The models are loaded
once, at import.
"""

from __future__ import annotations

import io
import json
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import boto3
from aws_lambda_powertools import Logger

from pose import records, service
from pose.errors import PoseError, TooLarge
from pose.segments import OVERLAP_SECONDS, SEGMENT_SECONDS, Joiner, cuts, plan_segments
from pose.track import TrackOptions, model_tracker
from video_io import (DESCRIBED, Clip, Mp4Writer, Seek, TracksJson, annotated, concat_mp4, frame_index,
                      frame_json, frames, joined, open_clip, overlap_links, track_segment, tracks_head)

logger = Logger()
MAX_BYTES = 50_000_000_000  # a clip's object (read by range, never copied whole)
# A clip's length: its segments run side by side, so the limit is the joining's (one invocation reads every
# segment's records and writes tracks.json) and the plan's (it reads every packet once); docs/video.md.
MAX_SECONDS = 3 * 3600.0
MAX_FRAMES = 3 * 3600 * 60  # 3 hours at 60 fps
READ_BYTES = 4 * 1024 * 1024  # one ranged GET of a clip: a few of them cover a segment's stretch of a 1080p clip
OPTIONS = TrackOptions()  # detection every 5th frame, as `make video` by default

MODELS = service.load_models_or_exit(logger.error)
S3 = boto3.client("s3")


def clip_prefix(job: dict, key: str) -> str:
    """Where a clip's results go: as local/video.py lays out a folder's clips, by its path without suffix."""
    name = key[len(job["input"].get("prefix", "")):]
    return f"{job['output']['prefix']}{name.rsplit('.', 1)[0]}/"


def segment_key(clip: dict, index: int) -> str:
    return f"{clip['output']}segments/{index:04d}.jsonl"


def part_key(clip: dict, index: int) -> str:
    return f"{clip['output']}parts/{index:04d}.mp4"


def put_file(job: dict, path: Path, key: str) -> None:
    S3.upload_file(str(path), job["output"]["bucket"], key)


class S3Object(io.RawIOBase):
    """An S3 object as a read-only, seekable file (PyAV opens it as it would a file): read in ranged GETs of
    `block` bytes, aligned, the last few kept, so reading sequentially costs one GET per block and a demuxer's
    jumps (an index at the end, a seek) fetch only the blocks they land in. `blocks` may be shared by the
    S3Objects of one object (a clip opened twice reads its header once). `bytes_read`: what this one fetched
    from S3. Retries are boto3's."""

    KEPT = 4  # blocks kept: the demuxer's short jumps back and forth, and the header, hit them

    def __init__(self, bucket: str, key: str, size: int | None = None, block: int | None = None,
                 blocks: dict[int, bytes] | None = None):
        super().__init__()
        self.bucket, self.key, self.block = bucket, key, block or READ_BYTES
        self.size = size if size is not None else S3.head_object(Bucket=bucket, Key=key)["ContentLength"]
        self.position, self.bytes_read = 0, 0
        self.blocks = {} if blocks is None else blocks

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        if base + offset < 0:
            raise ValueError(f"seek to {base + offset}: before the start")
        self.position = base + offset
        return self.position

    def read(self, size: int = -1) -> bytes:
        end = self.size if size is None or size < 0 else min(self.size, self.position + size)
        out = bytearray()
        while self.position < end:
            number, offset = divmod(self.position, self.block)
            data = self._block(number)[offset: offset + end - self.position]
            if not data:  # the object is shorter than its size said (replaced meanwhile): its end, not a hang
                break
            out += data
            self.position += len(data)
        return bytes(out)

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def _block(self, number: int) -> bytes:
        if number in self.blocks:
            self.blocks[number] = self.blocks.pop(number)  # the most recently used, kept longest
        else:
            first = number * self.block
            last = min(first + self.block, self.size) - 1
            data = S3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={first}-{last}")["Body"].read()
            self.bytes_read += len(data)
            if len(self.blocks) >= self.KEPT:
                del self.blocks[next(iter(self.blocks))]
            self.blocks[number] = data
        return self.blocks[number]


def opened(bucket: str, key: str, name: str, size: int | None) -> tuple[Clip, list[S3Object]]:
    """The clip read from S3 by range (its limits checked), and the S3Objects it opens (for their bytes), which
    share their blocks."""
    files: list[S3Object] = []
    blocks: dict[int, bytes] = {}

    def reader() -> S3Object:
        files.append(S3Object(bucket, key, size, blocks=blocks))
        return files[-1]

    return open_clip(Path(name), MAX_SECONDS, MAX_FRAMES, reader=reader), files


def opened_clip(job: dict, clip: dict) -> tuple[Clip, list[S3Object]]:
    """The clip that plan described, read from S3 by range."""
    return opened(job["input"]["bucket"], clip["key"], clip["name"], clip.get("size"))


def read_bytes(files: list[S3Object]) -> int:
    return sum(f.bytes_read for f in files)


def seek_of(segment: dict, key: str) -> Seek | None:
    return Seek(**segment[key]) if segment.get(key) else None


def described(clip: dict) -> Clip:
    """The Clip that plan described, without its file (for tracks.json's head)."""
    return Clip(Path(clip["name"]), **{k: clip[k] for k in DESCRIBED})


def plan_of(clip: dict) -> list[tuple[int, int]]:
    return [tuple(se) for se in clip["plan"]]


def records_in(job: dict, clip: dict):
    """Segment k -> its record lines, streamed from S3 (read afresh on each call)."""
    def lines(k: int) -> Iterator[bytes]:
        body = S3.get_object(Bucket=job["output"]["bucket"], Key=segment_key(clip, k))["Body"]
        yield from body.iter_lines()
    return lines


def plan(event: dict) -> dict:
    job, key = event["job"], event["key"]
    source, output = job["input"], job["output"]
    if source["bucket"] == output["bucket"] and key.startswith(output["prefix"]):
        return {"done": True, "skipped": f"{key} is under the output prefix"}
    prefix = clip_prefix(job, key)
    name = key.rsplit("/", 1)[-1]
    try:
        if event.get("size") is not None and event["size"] > MAX_BYTES:
            raise TooLarge(f"{name}: the object is {event['size']} bytes; the limit is {MAX_BYTES}")
        size = event.get("size")
        clip, _ = opened(source["bucket"], key, name, size)
        index = frame_index(clip)
    except PoseError as exc:
        record = records.failed_record(key[len(source.get("prefix", "")):], exc)
        S3.put_object(Bucket=output["bucket"], Key=f"{prefix}error.json", Body=json.dumps(record).encode(),
                      ContentType="application/json")
        return {"done": True, "error": record["error"], "record": f"{prefix}error.json"}
    total = min(clip.frames or clip.max_frames, clip.max_frames)
    segments = plan_segments(total, clip.fps, float(job.get("segment_seconds", SEGMENT_SECONDS)),
                             float(job.get("overlap_seconds", OVERLAP_SECONDS)))
    fields = {k: getattr(clip, k) for k in DESCRIBED}
    firsts = cuts(segments)

    def seek(first: int) -> dict | None:
        found = index.seek(first) if index else None
        return asdict(found) if found else None

    return {"done": False,
            "clip": {"key": key, "name": name, "size": size, "output": prefix, "plan": [list(se) for se in segments],
                     **fields},
            "segments": [{"index": k, "start": start, "end": end,
                          "stop": end if k + 1 < len(segments) else clip.max_frames,
                          "seek": seek(start), "draw_seek": seek(firsts[k])}
                         for k, (start, end) in enumerate(segments)]}


def track(event: dict) -> dict:
    job, clip, segment = event["job"], event["clip"], event["segment"]
    options = records.job_options(job)
    tracker = model_tracker(MODELS.pose, MODELS.detector, OPTIONS, *([options.max_people] if options.max_people else []))
    key = segment_key(clip, segment["index"])
    video, files = opened_clip(job, clip)
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "segment.jsonl"
        with open(out, "w") as f:
            count = track_segment(video, segment["start"], segment["stop"], tracker, f, seek_of(segment, "seek"))
        put_file(job, out, key)
    return {"index": segment["index"], "key": key, "frames": count, "truncated": video.truncated,
            "decoded": video.decoded, "bytes_read": read_bytes(files)}


def join(event: dict) -> dict:
    job, clip, segments = event["job"], event["clip"], event["segments"]
    threshold = threshold_of(job)
    plan_ = plan_of(clip)
    lines = records_in(job, clip)
    joiner = Joiner(overlap_links(plan_, lines, OPTIONS))
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "tracks.json"
        with open(out, "w") as f:
            tracks = TracksJson(f, tracks_head(described(clip), MODELS, threshold, OPTIONS, plan_))
            for index, time_s, tracked in joined(plan_, lines, joiner):
                tracks.write(frame_json(index, time_s, tracked, MODELS, threshold))
            tracks.close(max(segments, key=lambda s: s["index"])["truncated"])
        put_file(job, out, f"{clip['output']}tracks.json")
    ids_key = f"{clip['output']}segments/ids.json"
    S3.put_object(Bucket=job["output"]["bucket"], Key=ids_key, Body=json.dumps(joiner.ids).encode(),
                  ContentType="application/json")
    return {"tracks": f"{clip['output']}tracks.json", "ids": ids_key, "frames": tracks.count,
            "track_count": len(tracks.tracks)}


def threshold_of(job: dict) -> float:
    threshold = records.job_options(job).threshold
    return MODELS.pose.card.threshold if threshold is None else threshold


def draw(event: dict) -> dict:
    job, clip, k = event["job"], event["clip"], event["segment"]["index"]
    threshold = threshold_of(job)
    ids = json.loads(S3.get_object(Bucket=job["output"]["bucket"], Key=f"{clip['output']}segments/ids.json")
                     ["Body"].read())
    first = cuts(plan_of(clip))[k]
    reported = joined(plan_of(clip), records_in(job, clip), lambda s, track_id: ids[s][str(track_id)], [k])
    key, count = part_key(clip, k), 0
    video, _ = opened_clip(job, clip)
    with tempfile.TemporaryDirectory() as scratch:
        part = Path(scratch) / "part.mp4"
        with Mp4Writer(part, b_frames=False) as writer:
            for (index, _, rgb), (i, time_s, tracked) in zip(frames(video, first=first,
                                                                    seek=seek_of(event["segment"], "draw_seek")),
                                                             reported):
                if index != i:
                    raise RuntimeError(f"{clip['name']}: frame {index} decoded where segment {k} has frame {i}")
                writer.write(annotated(rgb, tracked, MODELS.pose.card, threshold), time_s)
                count += 1
        put_file(job, part, key)
    return {"index": k, "key": key, "frames": count}


def concat(event: dict) -> dict:
    job, clip = event["job"], event["clip"]
    bucket = job["output"]["bucket"]
    parts = sorted(event["parts"], key=lambda p: p["index"])
    key = f"{clip['output']}annotated.mp4"
    with tempfile.TemporaryDirectory() as scratch:
        files = []
        for p in parts:
            files.append(Path(scratch) / f"{p['index']:04d}.mp4")
            S3.download_file(bucket, p["key"], str(files[-1]))
        out = Path(scratch) / "annotated.mp4"
        packets = concat_mp4(files, out)
        S3.upload_file(str(out), bucket, key, ExtraArgs={"ContentType": "video/mp4"})
    scratch_keys = [p["key"] for p in parts] + [segment_key(clip, k) for k in range(len(clip["plan"]))]
    scratch_keys.append(f"{clip['output']}segments/ids.json")
    for i in range(0, len(scratch_keys), 1000):
        S3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": k} for k in scratch_keys[i:i + 1000]]})
    return {"annotated": key, "packets": packets}


STEPS = {"plan": plan, "track": track, "join": join, "draw": draw, "concat": concat}


@logger.inject_lambda_context
def lambda_handler(event: dict, context: Any) -> dict:
    reply = STEPS[event["step"]](event)
    logger.info(f"{event['step']} done", extra={"reply": reply})
    return reply
