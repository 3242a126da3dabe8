"""The video function's steps measured on a clip, per frame, and an hour of such video on AWS on paper.

    python -m build.cost_video CLIP [CLIP ...] [--hours 1] [--fps 30]

For each clip, at one onnxruntime thread, the CPU time of what the video state machine's steps do
(handler/video.py), on this machine, in one process: Plan's frame index (packets demuxed, not decoded),
Track (decode and track every frame, records written), Draw (decode again, draw each tracked frame, encode
the H.264 part) and the models' loading (paid by every Track and Draw invocation's cold start). Then an hour
of video at --fps frames a second made of segments like the stack's (segment_seconds and overlap_seconds,
the ASL's map concurrencies) priced at Lambda's x86 rate for the video function's default memory (1 vCPU).

On paper: Lambda's vCPU is taken to be one of this machine's cores, every invocation a cold start, S3 and
Step Functions' own costs are left out (a few cents: 2 Lambda requests and about 10 state transitions per
segment), and Join and Concat are left out of the time (they read and copy bytes: no model, no decoding).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import tempfile
import time
from pathlib import Path

from build import provenance
from build.bench_video import cpu_seconds
from local import function
from pose.segments import OVERLAP_SECONDS, SEGMENT_SECONDS
from pose.service import load_models
from pose.track import model_tracker
from video_io import Mp4Writer, annotated, frame_index, frames, open_clip, read_records, track_segment

LAMBDA_X86_GB_SECOND = 0.0000166667  # USD, us-east-1, the first 6 billion GB-s of a month (aws.amazon.com/lambda/pricing)
MEMORY_MB = 1769  # template.yaml VideoMemorySize's default: 1 vCPU
ASL = function.ROOT / "statemachine" / "video.asl.json"


def map_concurrency(name: str) -> int:
    """MaxConcurrency of the video state machine's map state `name`, wherever it is nested."""
    def find(states: dict):
        for key, state in states.items():
            if key == name:
                return state["MaxConcurrency"]
            inner = state.get("ItemProcessor", {}).get("States")
            if inner and (found := find(inner)) is not None:
                return found
    return find(json.loads(ASL.read_text())["States"])


def measure(path: Path, env: dict) -> dict:
    """CPU seconds per frame of each step on `path`, and of loading the models."""
    loaded = {}
    load = cpu_seconds(lambda: loaded.setdefault("models", load_models(env)))
    models = loaded["models"]
    clip = open_clip(path)
    index = cpu_seconds(lambda: frame_index(clip))
    records = io.StringIO()
    track = cpu_seconds(lambda: track_segment(clip, 0, clip.frames or 10**9, model_tracker(models.pose, models.detector),
                                              records))
    tracked = list(read_records(records.getvalue().splitlines()))
    with tempfile.TemporaryDirectory() as scratch:
        def draw() -> None:
            with Mp4Writer(Path(scratch) / "part.mp4", b_frames=False) as writer:
                for (_, _, rgb), (_, t, tf) in zip(frames(clip), tracked):
                    writer.write(annotated(rgb, tf, models.pose.card, models.pose.card.threshold), t)
        drawn = cpu_seconds(draw)
    n = len(tracked)
    return {"clip": path.name, "size": f"{clip.width}x{clip.height}", "frames": n, "load_s": load,
            "index_ms": 1e3 * index / n, "track_ms": 1e3 * track / n, "draw_ms": 1e3 * drawn / n}


def hour_on_paper(row: dict, hours: float, fps: float) -> dict:
    """CPU seconds, dollars and wall minutes of `hours` of such video through the stack."""
    frames = hours * 3600 * fps
    seconds, overlap = SEGMENT_SECONDS, OVERLAP_SECONDS
    segments = math.ceil((hours * 3600 - overlap) / (seconds - overlap))
    tracked = frames * seconds / (seconds - overlap)  # the overlaps are tracked twice
    cpu = (frames * row["index_ms"] + tracked * row["track_ms"] + frames * row["draw_ms"]) / 1e3
    cpu += 2 * segments * row["load_s"]
    dollars = cpu * MEMORY_MB / 1024 * LAMBDA_X86_GB_SECOND
    track_wall = math.ceil(segments / map_concurrency("Segments")) * (row["load_s"] + seconds * fps * row["track_ms"] / 1e3)
    draw_wall = math.ceil(segments / map_concurrency("Draw")) * (row["load_s"] + seconds * fps * row["draw_ms"] / 1e3)
    plan_wall = frames * row["index_ms"] / 1e3
    return {"segments": segments, "cpu_h": cpu / 3600, "usd": dollars, "wall_min": (plan_wall + track_wall + draw_wall) / 60,
            "segment_track_s": row["load_s"] + seconds * fps * row["track_ms"] / 1e3}


def table(rows: list[dict], hours: float, fps: float) -> str:
    head = (f"| clip | size | frames | Plan ms/frame | Track ms/frame | Draw ms/frame | models load s | "
            f"{hours:g} h at {fps:g} fps: CPU hours | USD | a segment's Track, s | wall, min |")
    lines = [head, "|" + "---|" * 3 + "---:|" * 8]
    for r in rows:
        h = hour_on_paper(r, hours, fps)
        lines.append(f"| {r['clip']} | {r['size']} | {r['frames']} | {r['index_ms']:.2f} | {r['track_ms']:.0f} | "
                     f"{r['draw_ms']:.0f} | {r['load_s']:.2f} | {h['cpu_h']:.1f} | {h['usd']:.2f} | "
                     f"{h['segment_track_s']:.0f} | {h['wall_min']:.0f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="+", type=Path)
    ap.add_argument("--hours", type=float, default=1.0)
    ap.add_argument("--fps", type=float, default=30.0)
    a = ap.parse_args(argv)
    env = {"MODEL_PATH": str(function.model_path()), "DETECTOR_PATH": str(function.detector_path()), "MODEL_THREADS": "1"}
    rows = [measure(p, env) for p in a.clips]
    print(f"{time.strftime('%Y-%m-%d')}, commit {provenance.commit()}, `{provenance.command(__file__, argv)}`, "
          f"1 thread; segments of {SEGMENT_SECONDS:g} s with {OVERLAP_SECONDS:g} s "
          f"overlap, maps of {map_concurrency('Segments')} and {map_concurrency('Draw')}, {MEMORY_MB} MB at "
          f"${LAMBDA_X86_GB_SECOND:.10f}/GB-s\n")
    print(table(rows, a.hours, a.fps))
    return 0


if __name__ == "__main__":
    sys.exit(main())
