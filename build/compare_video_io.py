"""PyAV against OpenCV's video I/O, side by side in one run: what local/video.py's library was chosen on.

    python build/compare_video_io.py [--clips ../shared/video] [--rounds 3] [--json out/bench/video-io.json]

Run it in a throw-away venv that has both (neither is in the project's venv at the same time):

    python -m venv /tmp/vidvenv && /tmp/vidvenv/bin/pip install av opencv-python-headless numpy
    /tmp/vidvenv/bin/python build/compare_video_io.py

For each library: its installed size (the package and its bundled shared libraries, what a Lambda layer
would hold), the FFmpeg licence its bundled build reports and the GPL encoders bundled beside it, decode speed
(frames per second of RGB arrays, one decoding thread, median over --rounds; and frames per
second of this process's CPU time, which a machine shared with other work changes less) on every clip, and whether it writes an
H.264 MP4 (yuv420p, the profile browsers play), checked by reading the written file back with PyAV.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from importlib import metadata
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
GPL_LIBRARIES = ("libx264", "libx265")  # GPL-2.0+ encoders: a binary that bundles them is GPL as a whole


def installed_mb(distribution: str) -> float:
    """Megabytes of every file the distribution installed (its RECORD), bundled shared libraries included."""
    dist = metadata.distribution(distribution)
    return sum(Path(dist.locate_file(f)).stat().st_size for f in dist.files or []
               if Path(dist.locate_file(f)).is_file()) / 1e6


def bundled(distribution: str) -> list[str]:
    """The shared libraries a wheel bundles (auditwheel's .libs folder)."""
    dist = metadata.distribution(distribution)
    return sorted({Path(str(f)).name.split("-")[0] for f in dist.files or [] if ".libs/" in str(f)})


def decode_av(path: Path) -> int:
    import av
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "SLICE"
        stream.codec_context.thread_count = 1
        return sum(1 for frame in container.decode(stream) if frame.to_ndarray(format="rgb24") is not None)


def decode_cv2(path: Path) -> int:
    import cv2
    cv2.setNumThreads(1)
    capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG, [cv2.CAP_PROP_N_THREADS, 1])
    count = 0
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        count += 1
    capture.release()
    return count


def frames() -> list[np.ndarray]:
    """30 frames of a moving gradient, 320 x 240 (even sides, as yuv420p needs)."""
    y, x = np.mgrid[0:240, 0:320]
    return [np.stack([(x + 8 * i) % 256, (y + 4 * i) % 256, np.full_like(x, 128)], axis=-1).astype(np.uint8)
            for i in range(30)]


def write_av(path: Path) -> None:
    import av
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 320, 240, "yuv420p"
        for rgb in frames():
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode())


def write_cv2(path: Path) -> None:
    import cv2
    writer = cv2.VideoWriter(str(path), cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"avc1"), 30, (320, 240))
    if not writer.isOpened():
        raise RuntimeError("VideoWriter did not open with fourcc avc1 (no H.264 encoder)")
    for rgb in frames():
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()


def h264_mp4(write) -> str:
    """'yes (codec, pixel format, frames)' when `write` made an MP4 that PyAV reads back as H.264 yuv420p,
    else why not."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "out.mp4"
        try:
            write(path)
        except Exception as exc:
            return f"no: {type(exc).__name__}: {exc}"
        if not path.is_file() or path.stat().st_size == 0:
            return "no: nothing written"
        import av
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            codec, pix_fmt = stream.codec_context.name, stream.codec_context.pix_fmt
            count = sum(1 for _ in container.decode(stream))
        ok = codec == "h264" and pix_fmt == "yuv420p" and count == 30
        return f"{'yes' if ok else 'no'} ({codec}, {pix_fmt}, {count} frames)"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=Path, default=ROOT.parent / "shared" / "video")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import av
    import cv2
    clips = sorted(p for p in args.clips.iterdir() if p.suffix in (".mp4", ".avi", ".mov", ".webm", ".mkv"))
    result = {}
    for name, dist, decode, write, version in (
            ("PyAV", "av", decode_av, write_av, av.__version__),
            ("OpenCV", "opencv-python-headless", decode_cv2, write_cv2, cv2.__version__)):
        licence = (av._core.library_meta["libavcodec"]["license"] if name == "PyAV"
                   else "LGPL (opencv-python's FFmpeg build, LICENSE-3RD-PARTY.txt)")
        libs = bundled(dist)
        row = {"version": version, "installed_mb": round(installed_mb(dist), 1), "ffmpeg_licence": licence,
               "gpl_encoders_bundled": [lib for lib in GPL_LIBRARIES if any(b == lib for b in libs)],
               "h264_mp4": h264_mp4(write), "decode_fps": {}}
        for clip in clips:
            rates, cpu_rates = [], []
            for _ in range(args.rounds):
                t0, c0 = time.perf_counter(), time.process_time()
                count = decode(clip)
                rates.append(count / (time.perf_counter() - t0))
                cpu_rates.append(count / (time.process_time() - c0))
            row["decode_fps"][clip.name] = {"frames": count, "fps": round(statistics.median(rates), 1),
                                            "fps_per_cpu_second": round(statistics.median(cpu_rates), 1)}
        result[name] = row
        print(name, json.dumps(row, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
