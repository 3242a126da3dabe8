"""The tracker against the photo pipeline on the same frames, side by side: CPU time per frame.

    python -m build.bench_video                          # the clips of ../shared/video, their first frames
    python -m build.bench_video CLIP.mp4 --frames 90 --rounds 3
    python -m build.bench_video CLIP.mp4 --long-clip out/long.mp4    # CLIP looped and scaled: 60 s of 1280x720

For each clip, its first `--frames` frames are decoded once and held; then, in each round, the photo
pipeline (`pipeline.estimate_people` on every frame, what POST /pose does) and the tracker
(`track.model_tracker(...).step` on every frame, from a fresh tracker) run one after the other, at one
onnxruntime thread. CPU time (`time.process_time`), the minimum over rounds of each, so that the machine's
other load falls on both alike. Prints a Markdown table: frames per CPU second of each, their ratio (the
issue's goal: the tracker at most 0.7x the pipeline's time), and the frames on which the tracker ran the
detector.
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

from build import provenance
from local import function, video
from pose.pipeline import estimate_people
from pose.service import load_models
from pose.track import model_tracker

CLIPS = function.ROOT.parent / "shared" / "video"


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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("clips", nargs="*", type=Path, help="default: every clip in ../shared/video")
    ap.add_argument("--frames", type=int, default=60, help="the first frames of each clip (default 60)")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--long-clip", type=Path, metavar="OUT", help="write the first clip looped to OUT instead")
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--size", default="1280x720", help="the long clip's WxH")
    a = ap.parse_args(argv)
    if a.long_clip:
        width, height = map(int, a.size.split("x"))
        print(f"wrote {long_clip(a.clips[0], a.long_clip, a.seconds, width, height)} frames to {a.long_clip}")
        return 0
    clips = a.clips or sorted(p for p in CLIPS.glob("*") if p.suffix in video.SUFFIXES)
    if not clips:
        print(f"skipped: no clips given and none in {CLIPS} (clone the project with ../shared beside it)")
        return 0
    models = load_models({"MODEL_PATH": str(function.model_path()), "DETECTOR_PATH": str(function.detector_path()),
                          "MODEL_THREADS": "1"})
    rows = [compare(p, models, a.frames, a.rounds) for p in clips]
    print(f"{dt.date.today()}, commit {provenance.commit()}, `{provenance.command(__file__, argv)}`, "
          f"{models.pose.card.name} + {models.detector.card.name if models.detector else 'no detector'}, 1 thread\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
